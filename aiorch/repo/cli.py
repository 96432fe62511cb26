"""`aiorch repo`: build the site repository where registries are reachable, verify it anywhere."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from aiorch.bundle import keys
from aiorch.errors import UserError
from aiorch.metal.image import DEFAULT_SIZE_MIB, build_image
from aiorch.repo import debs, lock, packages
from aiorch.repo.build import build_repo
from aiorch.repo.manifest import verify_repo

app = typer.Typer(help="The site repository: Debian packages and wheels hosts install offline.")

PROJECT = Path(__file__).resolve().parents[2]


@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="Directory to build (or refresh) into.")],
    key: Annotated[
        Path,
        typer.Option("--key", help="The bundle key (bundle.key) that signs the apt repository."),
    ],
    gpu: Annotated[
        bool, typer.Option("--gpu", help="Add the NVIDIA driver stack (needs non-free).")
    ] = False,
    package: Annotated[
        list[str] | None, typer.Option("--package", help="Extra Debian package (repeatable).")
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(help="Extra apt source line, e.g. NVIDIA's CUDA repository (repeatable)."),
    ] = None,
    project: Annotated[
        Path, typer.Option(help="Project whose wheel and dependencies go into wheels/.")
    ] = PROJECT,
    arch: Annotated[
        list[str] | None,
        typer.Option("--arch", help="Debian architecture (repeatable; default amd64 and arm64)."),
    ] = None,
    valid_days: Annotated[
        int, typer.Option(min=1, help="Days apt accepts the signed Release (Valid-Until).")
    ] = 365,
) -> None:
    """Fetch the roles' packages with every dependency, and the agent's wheels; sign and hash."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signing_key = keys.load_signing_key(key)
    wanted = [*packages.SITE_PACKAGES, *(package or [])]
    if gpu:
        wanted += packages.GPU_PACKAGES
    arches = tuple(arch or debs.ARCHES)
    sources = [*debs.default_sources(gpu=gpu, arches=arches), *(source or [])]
    manifest = build_repo(
        out,
        wanted,
        project,
        sources=sources,
        arches=arches,
        signing_key=signing_key,
        valid_for_days=valid_days,
    )
    typer.echo(f"{out}: {len(manifest.files)} files, {len(manifest.packages)} packages requested")


@app.command()
def image(
    repo: Annotated[Path, typer.Option("--repo", help="A site repository (`aiorch repo build`).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the image and its manifest.")],
    size_mib: Annotated[
        int, typer.Option("--size-mib", min=256, help="The raw disk's size in MiB.")
    ] = DEFAULT_SIZE_MIB,
) -> None:
    """Build the root image machines are deployed with, from the site repository alone (root)."""
    files = build_image(repo, out, size_mib)
    typer.echo(f"{files.image}\nsha256 {files.sha256}\nraw {files.raw_size_bytes} bytes, "
               f"gzip {files.image.stat().st_size} bytes")  # fmt: skip


@app.command("lock")
def lock_command(
    project: Annotated[
        Path, typer.Option(help="Project whose base dependencies are resolved and pinned.")
    ] = PROJECT,
) -> None:
    """Pin the agent's and the hub's wheels for amd64 and arm64, with hashes, in
    constraints/agent.txt and constraints/hub.txt."""
    lock.write_locks(project)
    for closure in lock.CLOSURES:
        locked = lock.read_lock(project, closure)
        typer.echo(f"{locked.path}: {len(locked.pins)} wheels pinned")


@app.command()
def verify(repo_dir: Annotated[Path, typer.Argument(help="A built site repository.")]) -> None:
    """Check every file against the sha256 in manifest.json; exit 1 on any problem."""
    problems = verify_repo(repo_dir)
    if problems:
        for line in problems:
            typer.echo(line, err=True)
        raise UserError(f"{repo_dir}: {len(problems)} problem(s)")
    typer.echo(f"{repo_dir}: intact")
