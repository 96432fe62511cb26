"""Bundle verification fails closed: every tampering is refused with a message naming it, and
intact, split and delta bundles verify."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiorch.bundle import keys, unpack
from aiorch.bundle import manifest as manifest_mod
from aiorch.bundle.create import Since, create_bundle
from aiorch.bundle.manifest import digest_of
from aiorch.bundle.sources import Contents
from aiorch.bundle.verify import BundleRefused, verify_bundle
from aiorch.errors import UserError

CREATED = datetime(2026, 12, 1, tzinfo=UTC)
NOW = CREATED + timedelta(days=1)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> keys.SigningKey:
    path = tmp_path_factory.mktemp("key")
    keys.generate(path)
    return keys.load_signing_key(path / keys.KEY_FILE)


def _contents(src: Path, extra: bytes = b"") -> Contents:
    files = {
        "repo/debs/chrony_4.3_amd64.deb": b"deb amd64" * 100,
        "repo/debs/chrony_4.3_arm64.deb": b"deb arm64" * 100,
        "repo/debs/Packages": b"Package: chrony\n",
        "playbooks/aiorch/site.yml": b"- hosts: all\n",
        "playbooks/other/site.yml": b"- hosts: all\n",  # same bytes: one blob
        "models/tiny/weights.bin": os.urandom(3000) + extra,
    }
    out = Contents()
    for rel, data in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.files[rel] = path
    return out


def _make(tmp_path: Path, key: keys.SigningKey, name: str = "b", **kw: object) -> Path:
    out = tmp_path / name
    create_bundle(out, key, _contents(tmp_path / f"src-{name}"), name="site", created=CREATED, **kw)  # type: ignore[arg-type]
    return out


def test_an_intact_bundle_verifies_and_its_blobs_read_back(
    tmp_path: Path, key: keys.SigningKey
) -> None:
    root = _make(tmp_path, key)
    bundle = verify_bundle(root, [key.public], now=NOW)
    assert bundle.digest == digest_of((root / "manifest.json").read_bytes())
    assert len(bundle.shipped()) == 6  # two identical playbooks are one blob; unpack.py
    model = next(f for f in bundle.manifest.files if f.path.startswith("models/"))
    with bundle.open_blob(model.sha256) as fh:
        assert fh.read() == (tmp_path / "src-b" / model.path).read_bytes()
    arches = {f.path: f.arch for f in bundle.manifest.files}
    assert arches["repo/debs/chrony_4.3_arm64.deb"] == "arm64"


def test_the_same_inputs_give_the_same_manifest_bytes(tmp_path: Path, key: keys.SigningKey) -> None:
    contents = _contents(tmp_path / "src")
    for name in ("one", "two"):
        create_bundle(tmp_path / name, key, contents, name="site", created=CREATED)
    assert (tmp_path / "one/manifest.json").read_bytes() == (
        tmp_path / "two/manifest.json"
    ).read_bytes()


def contents_of(src: Path, path: str) -> Path:
    """Where a site-tree file came from: the test's inputs, or the module create adds."""
    return Path(unpack.__file__) if path == unpack.NAME else src / path


def test_a_split_bundle_verifies_and_reads_blobs_across_parts(
    tmp_path: Path, key: keys.SigningKey
) -> None:
    root = _make(tmp_path, key, part_size=700)
    assert not (root / "blobs").exists()
    bundle = verify_bundle(root, [key.public], now=NOW)
    assert bundle.manifest.parts is not None and len(bundle.manifest.parts) > 3
    for f in bundle.manifest.files:
        with bundle.open_blob(f.sha256) as fh:
            assert fh.read() == (contents_of(tmp_path / "src-b", f.path)).read_bytes()


def test_a_delta_ships_only_new_blobs_and_verifies_when_its_base_is_present(
    tmp_path: Path, key: keys.SigningKey
) -> None:
    base = verify_bundle(_make(tmp_path, key, version=6), [key.public], now=NOW)
    contents = _contents(tmp_path / "src-b")  # same files, but a new model
    contents.files["models/tiny/weights.bin"].write_bytes(b"new weights")
    since = Since(base.manifest, base.digest)
    create_bundle(
        tmp_path / "d", key, contents, name="site", created=CREATED, version=7, since=since
    )
    held = base.shipped()
    delta = verify_bundle(tmp_path / "d", [key.public], now=NOW, have_blob=held.__contains__)
    assert delta.manifest.base is not None and delta.manifest.base.digest == base.digest
    assert len(delta.shipped()) == 1 and not delta.shipped() & held
    assert len(delta.manifest.files) == len(base.manifest.files)
    with pytest.raises(
        BundleRefused, match=r"a delta on version 6 \(sha256:.*its base is not present"
    ):
        verify_bundle(tmp_path / "d", [key.public], now=NOW)


def _flip(path: Path, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("blob", r"sha256 mismatch: blobs/sha256/[0-9a-f]+ \(models/tiny/weights.bin\)"),
        ("manifest.json", "signature does not match manifest.json"),
        ("manifest.sig", "manifest.sig"),
        ("part", r"sha256 mismatch: part part-\d{4}"),
    ],
)
def test_one_flipped_byte_is_refused(
    tmp_path: Path, key: keys.SigningKey, target: str, message: str
) -> None:
    root = _make(tmp_path, key, part_size=1000 if target == "part" else None)
    if target == "blob":
        bundle = verify_bundle(root, [key.public], now=NOW)
        model = next(f for f in bundle.manifest.files if f.path.startswith("models/"))
        _flip(root / "blobs/sha256" / model.sha256, 100)
    elif target == "part":
        _flip(root / "parts/part-0001", 10)
    elif target == "manifest.sig":
        _flip(root / target, 40)
    else:
        _flip(root / target, 20)
    with pytest.raises(BundleRefused, match=message):
        verify_bundle(root, [key.public], now=NOW)


def test_an_extra_file_is_refused(tmp_path: Path, key: keys.SigningKey) -> None:
    root = _make(tmp_path, key)
    (root / "blobs/sha256/README").write_text("hi")
    with pytest.raises(BundleRefused, match="not in the manifest: blobs/sha256/README"):
        verify_bundle(root, [key.public], now=NOW)


def test_a_removed_file_is_refused(tmp_path: Path, key: keys.SigningKey) -> None:
    root = _make(tmp_path, key)
    victim = next((root / "blobs/sha256").iterdir())
    victim.unlink()
    with pytest.raises(BundleRefused, match=f"missing from the bundle: blobs/sha256/{victim.name}"):
        verify_bundle(root, [key.public], now=NOW)


def test_a_replayed_older_bundle_is_refused_unless_a_downgrade_is_allowed(
    tmp_path: Path, key: keys.SigningKey
) -> None:
    root = _make(tmp_path, key, version=5)
    with pytest.raises(
        BundleRefused, match="version 5 is older than 7, the highest this hub accepted"
    ):
        verify_bundle(root, [key.public], now=NOW, highest_version=7)
    assert verify_bundle(root, [key.public], now=NOW, highest_version=7, allow_downgrade=True)


def test_the_same_version_is_accepted_again_only_with_the_same_digest(
    tmp_path: Path, key: keys.SigningKey
) -> None:
    root = _make(tmp_path, key, version=5)
    digest = digest_of((root / "manifest.json").read_bytes())
    assert verify_bundle(root, [key.public], now=NOW, highest_version=5, accepted_digest=digest)
    with pytest.raises(BundleRefused, match="version 5 was already accepted with another digest"):
        verify_bundle(root, [key.public], now=NOW, highest_version=5, accepted_digest="sha256:00")


def test_an_expired_bundle_is_refused(tmp_path: Path, key: keys.SigningKey) -> None:
    root = _make(tmp_path, key, expires_in=timedelta(days=30))
    with pytest.raises(BundleRefused, match="expired on 2026-12-31"):
        verify_bundle(root, [key.public], now=CREATED + timedelta(days=31))


def test_a_bundle_signed_by_an_untrusted_key_is_refused(
    tmp_path: Path, key: keys.SigningKey
) -> None:
    root = _make(tmp_path, key)
    other = keys.generate(tmp_path / "other")
    with pytest.raises(BundleRefused, match=f"signed by {key.public.id}, which is not trusted"):
        verify_bundle(root, [other], now=NOW)


def test_a_truncated_part_is_refused(tmp_path: Path, key: keys.SigningKey) -> None:
    root = _make(tmp_path, key, part_size=1000)
    part = root / "parts/part-0002"
    part.write_bytes(part.read_bytes()[:12])
    with pytest.raises(BundleRefused, match="part part-0002 is truncated: 12 of 1000 bytes"):
        verify_bundle(root, [key.public], now=NOW)


def test_a_symlink_in_blobs_is_refused(tmp_path: Path, key: keys.SigningKey) -> None:
    root = _make(tmp_path, key)
    victim = next((root / "blobs/sha256").iterdir())
    target = tmp_path / "elsewhere"
    target.write_bytes(victim.read_bytes())
    victim.unlink()
    victim.symlink_to(target)
    with pytest.raises(BundleRefused, match=f"a symlink in the bundle: blobs/sha256/{victim.name}"):
        verify_bundle(root, [key.public], now=NOW)


def test_a_manifest_path_with_dotdot_is_refused_even_when_signed(
    tmp_path: Path, key: keys.SigningKey
) -> None:
    root = _make(tmp_path, key)
    manifest = manifest_mod.parse((root / "manifest.json").read_bytes())
    files = list(manifest.files)
    files[0] = replace(files[0], path="repo/../../etc/passwd")
    raw = replace(manifest, files=tuple(files)).to_bytes()
    (root / "manifest.json").write_bytes(raw)
    sig = base64.b64encode(key.sign(raw)).decode()
    (root / "manifest.sig").write_text(json.dumps({"key_id": key.public.id, "signature": sig}))
    with pytest.raises(
        BundleRefused, match=re.escape("path escapes the bundle: 'repo/../../etc/passwd'")
    ):
        verify_bundle(root, [key.public], now=NOW)


def test_create_refuses_a_path_that_escapes(tmp_path: Path, key: keys.SigningKey) -> None:
    contents = _contents(tmp_path / "src")
    contents.files["repo/../x"] = contents.files.pop("repo/debs/Packages")
    with pytest.raises(UserError, match="path escapes the bundle"):
        create_bundle(tmp_path / "b", key, contents, name="site", created=CREATED)


def test_a_half_made_bundle_never_verifies(tmp_path: Path, key: keys.SigningKey) -> None:
    root = _make(tmp_path, key)
    (root / "manifest.sig").unlink()
    with pytest.raises(BundleRefused, match=r"manifest\.sig is missing"):
        verify_bundle(root, [key.public], now=NOW)


@pytest.mark.parametrize("part_size", [None, 700])
def test_a_bare_host_unpacks_the_hub_with_the_standard_library_alone(
    tmp_path: Path, key: keys.SigningKey, part_size: int | None
) -> None:
    """unpack.py at the bundle's top level lays out site-tree folders (from blobs or parts),
    checked file by file; a damaged blob is refused, and the copy is checked by verify too."""
    root = _make(tmp_path, key, part_size=part_size)
    dest = tmp_path / "tree"
    argv = [sys.executable, "-I", str(root / unpack.NAME), str(dest), "models/", "repo/"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    wanted = [f for f in verify_bundle(root, [key.public], now=NOW).manifest.files
              if f.path.startswith(("models/", "repo/"))]  # fmt: skip
    assert wanted and all(
        (dest / f.path).read_bytes() == (tmp_path / "src-b" / f.path).read_bytes() for f in wanted
    )
    assert not (dest / "playbooks").exists()
    (root / unpack.NAME).write_text("print('owned')\n")
    with pytest.raises(BundleRefused, match=r"unpack.py"):
        verify_bundle(root, [key.public], now=NOW)
