"""Creating, starting and removing a workload's container with podman.

The container is created from the verified image id and carries the agent's labels, which is
all that later tells the agent it may touch it. Secret env values go through a private env
file, never the command line, where any user of the host could read them in `ps`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from edge_agent.contract.workload import Workload
from edge_agent.workloads.podman import MANAGED, OWNER, TEMPLATE, WORKLOAD, Podman

STOP_TIMEOUT_S = 10  # SIGTERM, then SIGKILL after this long


def labels(workload: Workload, owner: str) -> dict[str, str]:
    return {
        MANAGED: "true",
        OWNER: owner,
        WORKLOAD: workload.id,
        TEMPLATE: workload.template_hash,
    }


def run_argv(
    workload: Workload,
    image_id: str,
    owner: str,
    run_args: Sequence[str],
    env_file: Path | None,
    model_cache: Path | None = None,
) -> list[str]:
    """`podman run` arguments for `workload` (after the global podman arguments); its models
    are mounted read-only from `model_cache`, where the reconciler has made sure they are."""
    argv = ["run", "--detach", "--name", workload.container_name, "--restart", "no"]
    for key, value in labels(workload, owner).items():
        argv += ["--label", f"{key}={value}"]
    argv += list(run_args)
    for port in workload.ports:
        argv += ["--publish", f"{port.host_port}:{port.container_port}/{port.protocol}"]
    for volume in workload.volumes:
        mode = "ro" if volume.read_only else "rw"
        argv += ["--volume", f"{volume.host_path}:{volume.mount_path}:{mode}"]
    for model in workload.models:
        if model_cache is not None:
            argv += ["--volume", f"{model_cache / model.hex}:{model.mount_path}:ro"]
    for key, value in workload.env.items():
        argv += ["--env", f"{key}={value}"]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    for gpu in workload.gpus:
        argv += ["--device", f"nvidia.com/gpu={gpu}"]  # CDI, from nvidia-ctk cdi generate
    if workload.cpu:
        argv += ["--cpus", f"{workload.cpu:g}"]
    if workload.memory_mib:
        argv += ["--memory", f"{workload.memory_mib}m"]
    if workload.command:
        argv += ["--entrypoint", _entrypoint(workload.command)]
    return [*argv, image_id, *workload.args]


def create(
    podman: Podman,
    workload: Workload,
    image_id: str,
    owner: str,
    run_args: Sequence[str],
    scratch: Path,
    model_cache: Path | None = None,
) -> str:
    """Run the workload's container; returns its id. `scratch` is a private directory for
    the env file, which is deleted as soon as podman has read it."""
    if not workload.secret_env:
        return podman(*run_argv(workload, image_id, owner, run_args, None, model_cache)).strip()
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=scratch, prefix=".env-", text=True)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{key}={value}\n" for key, value in workload.secret_env.items())
        argv = run_argv(workload, image_id, owner, run_args, Path(name), model_cache)
        return podman(*argv).strip()
    finally:
        os.unlink(name)


def start(podman: Podman, container_id: str) -> None:
    podman("start", container_id)


def remove(podman: Podman, container_id: str) -> None:
    podman("rm", "--force", "--time", str(STOP_TIMEOUT_S), container_id)


def _entrypoint(command: Sequence[str]) -> str:
    """podman takes a JSON array for an entrypoint with arguments."""
    return json.dumps(list(command))
