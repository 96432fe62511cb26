"""`aiorch bundle keygen|create|verify`: make signed site bundles on a connected machine and
check them anywhere, with no hub and no network."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from aiorch.bundle import keys, sources
from aiorch.bundle.create import Since, create_bundle
from aiorch.bundle.manifest import SIGNATURE, digest_of, parse
from aiorch.bundle.verify import check_signature, verify_bundle
from aiorch.errors import AiorchError, UserError
from aiorch.repo.packages import SITE_PACKAGES

bundle_app = typer.Typer(help="Signed site bundles: everything an air-gapped site needs.")

_SIZE = re.compile(r"(\d+)([KMGT]?)(i?B)?", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``4G``, ``700M``, ``512K`` or bytes (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise UserError(f"--part-size {text!r}: expected a size such as 4G, 700M or 1048576")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def _pair(option: str, text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise UserError(f"{option} {text!r}: expected NAME=PATH")
    return name, Path(path)


def _since(path: Path, trusted: list[Path]) -> Since:
    """The base of a delta; its signature is checked when trusted keys are given."""
    try:
        raw = path.read_bytes()
        if trusted:
            check_signature(
                raw, (path.parent / SIGNATURE).read_bytes(), [keys.load_public(p) for p in trusted]
            )
        return Since(parse(raw), digest_of(raw))
    except OSError as exc:
        raise UserError(f"--since {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UserError(f"--since {path}: {exc}") from None


def _fail(exc: AiorchError) -> typer.Exit:
    typer.echo(f"aiorch: error: {exc}", err=True)
    return typer.Exit(1)


@bundle_app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for bundle.key and bundle.pub.")],
) -> None:
    """Make a bundle key pair (never overwrites one); hubs trust bundle.pub."""
    try:
        public = keys.generate(out)
    except AiorchError as exc:
        raise _fail(exc) from None
    typer.echo(f"{out / keys.KEY_FILE}: {public.id} (give {out / keys.PUB_FILE} to hubs)")


@bundle_app.command()
def create(
    out: Annotated[Path, typer.Option("--out", help="New directory for the bundle.")],
    key: Annotated[Path, typer.Option("--key", help="bundle.key that signs it.")],
    repo: Annotated[
        Path | None, typer.Option(help="An already built site repository [build one].")
    ] = None,
    repo_cache: Annotated[
        Path, typer.Option(help="Where the site repository is built and cached.")
    ] = Path(".data/bundle-cache"),
    package: Annotated[
        list[str] | None, typer.Option("--package", help="Extra Debian package (repeatable).")
    ] = None,
    playbooks: Annotated[
        list[str] | None, typer.Option("--playbooks", help="NAME=DIR playbook set (repeatable).")
    ] = None,
    collection: Annotated[
        list[Path] | None,
        typer.Option("--collection", help="An ansible_collections tree (repeatable)."),
    ] = None,
    image: Annotated[
        list[str] | None, typer.Option("--image", help="REF=FILE podman/OCI archive (repeatable).")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="NAME=DIR model weights (repeatable).")
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Version, only grows [UTC epoch seconds].")
    ] = None,
    expires_in_days: Annotated[int, typer.Option(help="Days until the bundle expires.")] = 365,
    since: Annotated[
        Path | None, typer.Option(help="manifest.json of an earlier bundle: make a delta.")
    ] = None,
    trust: Annotated[
        list[Path] | None, typer.Option("--trust", help="bundle.pub that must have signed --since.")
    ] = None,
    part_size: Annotated[
        str | None, typer.Option(help="Split into parts of this size (4G, 700M).")
    ] = None,
    name: Annotated[str, typer.Option(help="The bundle's name.")] = "aiorch-site",
    hub: Annotated[
        bool, typer.Option("--hub/--no-hub", help="Carry the hub's own install (hub/).")
    ] = True,
) -> None:
    """Build a signed bundle: the site repository, aiorch's playbooks and what else is given."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        signing_key = keys.load_signing_key(key)
        base = _since(since, trust or []) if since else None
        size = parse_size(part_size) if part_size else None
        if expires_in_days <= 0:
            raise UserError("--expires-in-days must be positive")
        contents = sources.Contents()
        if repo is None:
            wanted = [*SITE_PACKAGES, *(package or [])]
            repo = sources.site_repo(repo_cache, wanted, signing_key, expires_in_days)
        elif package:
            raise UserError("--package needs the site repository built here: drop --repo")
        sources.add_repo(contents, repo)
        if hub:
            sources.add_hub(contents, repo_cache)
        sources.add_playbooks(contents, "aiorch", sources.AIORCH_PLAYBOOKS)
        for item in playbooks or []:
            sources.add_playbooks(contents, *_pair("--playbooks", item))
        for tree in collection or []:
            sources.add_collection(contents, tree)
        for item in image or []:
            sources.add_image(contents, *_pair("--image", item))
        for item in model or []:
            sources.add_model(contents, *_pair("--model", item))
        manifest = create_bundle(
            out,
            signing_key,
            contents,
            name=name,
            created=datetime.now(UTC).replace(microsecond=0),
            version=version,
            expires_in=timedelta(days=expires_in_days),
            since=base,
            part_size=size,
        )
    except AiorchError as exc:
        raise _fail(exc) from None
    kind = f"delta on {manifest.base.version}" if manifest.base else "full"
    typer.echo(
        f"{out}: version {manifest.version} ({kind}), {len(manifest.files)} files, "
        f"{len(manifest.shipped())} blobs shipped, "
        f"{len(manifest.parts) if manifest.parts else 0} parts"
    )


@bundle_app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle directory.")],
    trust: Annotated[
        list[Path], typer.Option("--trust", help="A trusted bundle.pub (repeatable).")
    ],
    base: Annotated[
        list[Path] | None,
        typer.Option(
            "--base", help="For a delta: the earlier bundle(s) it builds on, oldest first."
        ),
    ] = None,
) -> None:
    """Exit 0 only for an intact, unexpired bundle signed by a trusted key."""
    now, held = datetime.now(UTC), set[str]()
    try:
        trusted = [keys.load_public(p) for p in trust]
        for earlier in base or []:
            held |= verify_bundle(earlier, trusted, now=now, have_blob=held.__contains__).shipped()
        verified = verify_bundle(bundle, trusted, now=now, have_blob=held.__contains__)
    except AiorchError as exc:
        raise _fail(exc) from None
    m = verified.manifest
    typer.echo(
        f"{bundle}: intact, version {m.version}, {verified.digest}, signed by {m.key_id}, "
        f"expires {m.expires.date().isoformat()}"
    )
