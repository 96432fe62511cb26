"""Bundles: create, verify and import times for a bundle of the lab's packages, two images and a
1 GiB model; verify throughput against `sha256sum` over the same files in the same run (goal:
ratio >= 0.9); and the size of a delta after one image changed, against that image plus the
manifests (goal: <= 1.05).

All on this machine: the site repository comes from the cache `make demo` uses (the first run
downloads it), the images are the lab's model server (v1 and v2-broken) and v2-broken with one
more layer, the model is 1 GiB of random bytes, and the import goes into a real hub."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from aiorch.bundle import keys
from aiorch.bundle.verify import verify_bundle
from aiorch.hub.process import HubProcess
from aiorch.lab.payload import build_payload, payload_ref
from aiorch.lab.podman import podman

PROJECT = Path(__file__).resolve().parents[1]
AIORCH = str(Path(sys.executable).parent / "aiorch")
CACHE = PROJECT / ".data" / "bundle-cache"
MODEL_BYTES = 1 << 30
MIB = 1 << 20


def timed(*argv: str, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        argv, check=True, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, cwd=PROJECT
    )
    return time.perf_counter() - started


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def changed_image(tmp: Path) -> Path:
    """v2-broken with one more layer (16 MiB), saved as an archive: "one image changed"."""
    base = build_payload("v2-broken")
    podman("load", "--quiet", "--input", str(base))
    context = tmp / "layer"
    context.mkdir()
    (context / "extra.bin").write_bytes(os.urandom(16 << 20))
    (context / "Containerfile").write_text(
        f"FROM {payload_ref('v2-broken')}\nCOPY extra.bin /extra.bin\n"
    )
    ref = "localhost/aiorch-bench-changed:1"
    out = tmp / "changed.tar"
    try:
        podman("build", "--pull=never", "--tag", ref, str(context), timeout=600)
        podman("save", "--quiet", "--output", str(out), ref)
    finally:
        podman("rmi", "--force", ref, payload_ref("v2-broken"), check=False)
    return out


def create(out: Path, key: Path, images: list[str], model: Path, *extra: str) -> float:
    argv = [AIORCH, "bundle", "create", "--out", str(out), "--key", str(key), "--no-hub"]
    argv += ["--repo-cache", str(CACHE), "--model", f"bench-model={model}", *extra]
    for item in images:
        argv += ["--image", item]
    return timed(*argv)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="aiorch-bench-bundle-", dir=PROJECT / ".data") as t:
        tmp = Path(t)
        keys.generate(tmp / "key")
        key, pub = tmp / "key" / keys.KEY_FILE, tmp / "key" / keys.PUB_FILE
        model = tmp / "model"
        model.mkdir()
        with (model / "weights.bin").open("wb") as fh:
            for _ in range(MODEL_BYTES >> 24):
                fh.write(os.urandom(1 << 24))
        v1 = f"{payload_ref('v1')}={build_payload('v1')}"
        broken = f"{payload_ref('v2-broken')}={build_payload('v2-broken')}"
        create(tmp / "warm", key, [v1], model)  # builds the site repository cache, untimed
        created = create(tmp / "full", key, [v1, broken], model, "--version", "100")
        full = tmp / "full"
        blobs = sorted(str(p) for p in (full / "blobs" / "sha256").iterdir())
        total = size_of(full / "blobs")
        started = time.perf_counter()
        verify_bundle(full, [keys.load_public(pub)], now=datetime.now(UTC))
        verified = time.perf_counter() - started
        baseline = timed("sha256sum", *blobs)
        hub = HubProcess(tmp / "hub").start()
        try:
            env = {"AIORCH_DATA_DIR": str(hub.data_dir)}
            timed(AIORCH, "bundle", "trust", "add", str(pub), env=env)
            imported = timed(AIORCH, "bundle", "import", str(full), env=env)
        finally:
            hub.stop()
        changed = changed_image(tmp)
        delta = tmp / "delta"
        create(delta, key, [v1, f"{payload_ref('v2-broken')}={changed}"], model,
               "--version", "101", "--since", str(full / "manifest.json"))  # fmt: skip
        manifests = sum((d / "manifest.json").stat().st_size for d in (delta, full))
        report(len(blobs), total, created, verified, imported, baseline)
        delta_bytes, goal = size_of(delta), changed.stat().st_size + manifests
        print(
            f"delta after one image changed: {delta_bytes / MIB:.1f} MiB against the image plus"
            f" manifests {goal / MIB:.1f} MiB: ratio {delta_bytes / goal:.3f} (goal <= 1.05)"
        )


def report(blobs: int, total: int, created: float, verified: float, imported: float,
           baseline: float) -> None:  # fmt: skip
    print(f"bundle: {blobs} blobs, {total / MIB:.0f} MiB (lab packages, 2 images, 1 GiB model)")
    print(f"create {created:.1f} s, verify {verified:.1f} s, import {imported:.1f} s")
    print(
        f"verify {total / verified / MIB:.0f} MiB/s, sha256sum {total / baseline / MIB:.0f} MiB/s"
        f" over the same files: ratio {baseline / verified:.2f} (goal >= 0.9)"
    )


if __name__ == "__main__":
    main()
