"""Creating, starting and removing a workload's container with podman.

The container is created from the verified image id and carries the agent's labels, which is
all that later tells the agent it may touch it. Secret env values go through a private env
file, never the command line, where any user of the host could read them in `ps`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from edge_agent.contract.model import ModelRef
from edge_agent.contract.workload import Port, Volume, Workload
from edge_agent.workloads.podman import MANAGED, OWNER, TEMPLATE, WORKLOAD, Podman

STOP_TIMEOUT_S = 10  # SIGTERM, then SIGKILL after this long


class Runnable(Protocol):
    """What a container is made from: a workload's replica, or a job's attempt (both frozen
    dataclasses, hence read-only members)."""

    @property
    def container_name(self) -> str: ...
    @property
    def command(self) -> tuple[str, ...]: ...
    @property
    def args(self) -> tuple[str, ...]: ...
    @property
    def env(self) -> dict[str, str]: ...
    @property
    def secret_env(self) -> dict[str, str]: ...
    @property
    def volumes(self) -> tuple[Volume, ...]: ...
    @property
    def models(self) -> tuple[ModelRef, ...]: ...
    @property
    def gpus(self) -> tuple[int, ...]: ...
    @property
    def cpu(self) -> float | None: ...
    @property
    def memory_mib(self) -> int | None: ...


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
    marks = labels(workload, owner)
    return container_argv(
        workload, image_id, marks, run_args, env_file, model_cache, workload.ports
    )


def container_argv(
    run: Runnable,
    image_id: str,
    marks: Mapping[str, str],
    run_args: Sequence[str],
    env_file: Path | None,
    model_cache: Path | None = None,
    ports: Sequence[Port] = (),
) -> list[str]:
    """`podman run --detach` arguments for a workload or a job: `marks` are its labels, the
    GPUs explicit CDI devices, never restarted by podman (the agent decides that)."""
    argv = ["run", "--detach", "--name", run.container_name, "--restart", "no"]
    for key, value in marks.items():
        argv += ["--label", f"{key}={value}"]
    argv += list(run_args)
    for port in ports:
        argv += ["--publish", f"{port.host_port}:{port.container_port}/{port.protocol}"]
    for volume in run.volumes:
        mode = "ro" if volume.read_only else "rw"
        argv += ["--volume", f"{volume.host_path}:{volume.mount_path}:{mode}"]
    for model in run.models:
        if model_cache is not None:
            argv += ["--volume", f"{model_cache / model.hex}:{model.mount_path}:ro"]
    for key, value in run.env.items():
        argv += ["--env", f"{key}={value}"]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    for gpu in run.gpus:
        argv += ["--device", f"nvidia.com/gpu={gpu}"]  # CDI, from nvidia-ctk cdi generate
    if run.cpu:
        argv += ["--cpus", f"{run.cpu:g}"]
    if run.memory_mib:
        argv += ["--memory", f"{run.memory_mib}m"]
    if run.command:
        argv += ["--entrypoint", _entrypoint(run.command)]
    return [*argv, image_id, *run.args]


def create(
    podman: Podman,
    workload: Workload,
    image_id: str,
    owner: str,
    run_args: Sequence[str],
    scratch: Path,
    model_cache: Path | None = None,
) -> str:
    """Run the workload's container; returns its id."""
    marks = labels(workload, owner)
    return launch(podman, workload, image_id, marks, run_args, scratch, model_cache, workload.ports)


def launch(
    podman: Podman,
    run: Runnable,
    image_id: str,
    marks: Mapping[str, str],
    run_args: Sequence[str],
    scratch: Path,
    model_cache: Path | None = None,
    ports: Sequence[Port] = (),
) -> str:
    """`podman run --detach` a workload's or a job's container; returns its id. `scratch` is
    a private directory for the env file, deleted as soon as podman has read it."""
    if not run.secret_env:
        argv = container_argv(run, image_id, marks, run_args, None, model_cache, ports)
        return podman(*argv).strip()
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=scratch, prefix=".env-", text=True)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{key}={value}\n" for key, value in run.secret_env.items())
        argv = container_argv(run, image_id, marks, run_args, Path(name), model_cache, ports)
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
