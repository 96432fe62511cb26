"""The lab's model-serving payload: a tiny model server image, as a docker-archive.

There is no registry, so workloads reach agents as `podman save` archives that the hub serves
by their sha256. ``build_payload("v1")`` builds the image from the lab base image and the
files in ``payload/`` (a stdlib HTTP server with a fixed-weight logistic regression), saves
it under ``$AIORCH_LAB_DIR/payload/`` and returns the archive's path. ``v2-broken`` is the
same server failing its health check, for rollouts that must roll back. Archives are cached
by a hash of their recipe, and built under a lock so parallel callers build once.
``deployment_spec(image, model=(name, digest))`` is the example deployment that serves it on
the lab's edge boxes, with weights from the hub's model store when a model is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from aiorch.errors import UserError
from aiorch.lab.image import ensure_image
from aiorch.lab.podman import podman
from aiorch.lab.state import locked, state_dir
from edge_agent.digest import sha256_file

REPOSITORY = "localhost/aiorch-model"
VERSIONS = ("v1", "v2-broken")
FILES = Path(__file__).with_suffix("")  # aiorch/lab/payload/
SOURCES = ("Containerfile", "server.py")
EXAMPLE_SPEC = Path(__file__).resolve().parents[2] / "examples" / "deployments" / "lab-model.yaml"


def payload_ref(version: str) -> str:
    """The image name inside the archive, e.g. ``localhost/aiorch-model:v1``."""
    return f"{REPOSITORY}:{_checked(version)}"


def archive_path(version: str) -> Path:
    return state_dir() / "payload" / f"aiorch-model-{_checked(version)}.tar"


def recipe(version: str, base: str) -> dict[str, object]:
    """Everything that decides the archive's content; its hash says when to rebuild."""
    return {
        "version": _checked(version),
        "base": base,
        "files": {name: (FILES / name).read_text() for name in SOURCES},
    }


def build_payload(version: str = "v1") -> Path:
    """The archive for `version`, built (once per recipe) if missing or out of date."""
    path = archive_path(version)  # an unknown version fails here, before any build
    base = ensure_image()
    key = hashlib.sha256(json.dumps(recipe(version, base), sort_keys=True).encode()).hexdigest()
    if _built(path, key):
        return path
    with locked(state_dir() / "payload.lock"):
        if not _built(path, key):  # another caller may have built it while we waited
            _build(version, base, path)
            _stamp(path).write_text(json.dumps({"recipe": key, "ref": payload_ref(version)}))
    return path


def payload_digest(path: Path) -> str:
    """``sha256:<hex>`` of the archive file: the digest the hub and agents name it by."""
    return f"sha256:{sha256_file(path)}"


MODEL_MOUNT = "/models/lab"


def deployment_spec(
    image: str,
    *,
    replicas: int | None = None,
    env: dict[str, str] | None = None,
    model: tuple[str, str] | None = None,
) -> str:
    """The example deployment of the payload (EXAMPLE_SPEC) as YAML text, with `image` in
    place of its placeholder (archives differ by machine, so only the pushed one's digest
    pins it) and, when given, another replica count, more env, and a model (name, digest)
    from the hub's store, mounted at MODEL_MOUNT, whose weights.json /predict then uses.
    The demo and the lab tests apply this, so the example is what they run."""
    doc = yaml.safe_load(EXAMPLE_SPEC.read_text())
    work = doc["spec"]
    work["image"] = image
    if replicas is not None:
        work["replicas"] = replicas
    work["env"] = {**(work.get("env") or {}), **(env or {})}
    if model is not None:
        name, digest = model
        work["models"] = [{"name": name, "digest": digest, "mountPath": MODEL_MOUNT}]
        work["env"]["MODEL_DIR"] = MODEL_MOUNT
    return yaml.safe_dump(doc, sort_keys=False)


def _checked(version: str) -> str:
    if version not in VERSIONS:
        raise UserError(f"unknown payload version {version!r}: use {' or '.join(VERSIONS)}")
    return version


def _stamp(path: Path) -> Path:
    return path.with_suffix(".json")


def _built(path: Path, key: str) -> bool:
    try:
        return path.exists() and json.loads(_stamp(path).read_text()).get("recipe") == key
    except (OSError, ValueError):
        return False


def _build(version: str, base: str, path: Path) -> None:
    """podman build (COPY only, so no container runs), save, then drop the local tag: agents
    must get the image from the archive, as on a real edge box."""
    ref = payload_ref(version)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aiorch-payload-") as context:
        for name in SOURCES:
            shutil.copy(FILES / name, Path(context) / name)
        podman(
            "build", "--pull=never", "--build-arg", f"BASE={base}",
            "--build-arg", f"VERSION={version}", "--tag", ref, context,
            timeout=600,
        )  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        podman("save", "--format", "docker-archive", "--output", str(tmp), ref, timeout=600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        podman("rmi", ref, check=False)
