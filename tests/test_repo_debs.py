"""The site repository's debs: each root resolved on its own, per architecture, signed.

Most tests resolve against a tiny local apt repository of hand-made packages (built here with
dpkg-deb), so they need no network; one fetches a real package for arm64 from the Debian mirror.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiorch.bundle import keys
from aiorch.errors import UserError
from aiorch.repo import debs, signing
from aiorch.repo.build import refresh_debs
from aiorch.repo.manifest import Manifest, hash_files

PROJECT = Path(__file__).resolve().parents[1]
CACHE = PROJECT / ".data" / "test-repo-debs-cache"
ARCHES = ("amd64", "arm64")

# name -> (architectures, control fields): two alternatives that conflict (as chrony and
# ntpsec do), a root that needs both, and one that needs a package nobody has.
FAKES: dict[str, tuple[tuple[str, ...], str]] = {
    "clock-a": (ARCHES, "Depends: libtick, clock-data\nProvides: time-daemon\n"
                        "Conflicts: time-daemon\n"),
    "clock-b": (ARCHES, "Depends: libtock\nProvides: time-daemon\nConflicts: time-daemon\n"),
    "libtick": (ARCHES, ""),
    "libtock": (ARCHES, ""),
    "clock-data": (("all",), ""),
    "both-clocks": (ARCHES, "Depends: clock-a, clock-b\n"),
    "orphan": (ARCHES, "Depends: libgone\n"),
}  # fmt: skip


def _fake_deb(out: Path, name: str, arch: str, fields: str) -> None:
    root = out / f"{name}-{arch}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: {arch}\nMaintainer: t <t@example.org>\n"
        f"{fields}Description: test package {name}\n"
    )
    deb = out / f"{name}_1.0_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True,
                   capture_output=True)  # fmt: skip


@pytest.fixture(scope="module")
def local_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An apt source line for a flat file: repository holding FAKES for amd64 and arm64."""
    repo = tmp_path_factory.mktemp("fake-upstream")
    work = tmp_path_factory.mktemp("fake-build")
    for name, (arches, fields) in FAKES.items():
        for arch in arches:
            _fake_deb(work, name, arch, fields)
    for deb in work.glob("*.deb"):
        deb.rename(repo / deb.name)
    debs.index_debs(repo)
    return f"deb [trusted=yes arch={','.join(ARCHES)}] file:{repo} ./"


def _packages(debs_dir: Path) -> set[tuple[str, str]]:
    text = (debs_dir / "Packages").read_text()
    return set(re.findall(r"^Package: (\S+)\n(?:.*\n)*?Architecture: (\S+)$", text, re.M))


def test_conflicting_roots_both_land_for_every_architecture(
    local_source: str, tmp_path: Path
) -> None:
    dest = tmp_path / "debs"
    debs.download_debs(["clock-a", "clock-b"], [local_source], dest, ARCHES)
    got = {p.name for p in dest.glob("*.deb")}
    assert got == {
        *(f"{n}_1.0_{a}.deb" for n in ("clock-a", "clock-b", "libtick", "libtock") for a in ARCHES),
        "clock-data_1.0_all.deb",
    }
    debs.index_debs(dest)
    assert ("clock-a", "arm64") in _packages(dest) and ("clock-b", "amd64") in _packages(dest)


def test_a_rebuild_keeps_the_debs_already_there_and_drops_the_unwanted(
    local_source: str, tmp_path: Path
) -> None:
    dest = tmp_path / "debs"
    debs.download_debs(["clock-a", "clock-b"], [local_source], dest, ARCHES)
    kept = dest / "clock-a_1.0_arm64.deb"
    stamp = kept.stat().st_mtime_ns
    debs.download_debs(["clock-a"], [local_source], dest, ("arm64",))
    assert kept.stat().st_mtime_ns == stamp
    assert {p.name for p in dest.glob("*.deb")} == {
        "clock-a_1.0_arm64.deb", "libtick_1.0_arm64.deb", "clock-data_1.0_all.deb",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("root", "reason"),
    [
        ("both-clocks", "clock-b Conflicts: time-daemon"),
        ("orphan", "orphan Depends: libgone but it is not installable"),
        ("no-such-package", "Unable to locate package no-such-package"),
    ],
)
def test_an_unresolvable_root_is_named_with_its_reason(
    local_source: str, tmp_path: Path, root: str, reason: str
) -> None:
    with pytest.raises(UserError) as caught:
        debs.download_debs(["clock-a", root], [local_source], tmp_path / "debs", ("amd64",))
    message = str(caught.value)
    assert message.startswith(f"cannot resolve {root} for amd64: ") and reason in message
    assert "\n" not in message and "clock-a for" not in message
    assert not list((tmp_path / "debs").glob("*.deb"))  # nothing half-fetched


def test_release_is_signed_inline_and_expires(
    local_source: str, bundle_key: keys.SigningKey, tmp_path: Path
) -> None:
    dest = tmp_path / "debs"
    debs.download_debs(["clock-b"], [local_source], dest, ARCHES)
    debs.index_debs(dest)
    until = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
    debs.sign_release(
        dest,
        arches=ARCHES,
        apt_secret=bundle_key.apt_secret,
        apt_public=bundle_key.public.apt_public,
        valid_until=until,
    )
    release = (dest / "Release").read_text()
    assert "Architectures: amd64 arm64 all\n" in release
    assert "Valid-Until: Tue, 01 Jun 2027 12:00:00 UTC\n" in release
    assert re.search(r"^Date: .+ UTC$", release, re.M)
    signed = (dest / "InRelease").read_bytes()
    assert release.encode() in signed
    ring = (dest / debs.KEYRING_FILE).read_bytes()
    assert signing.verify_clearsigned(signed, [ring])
    tampered = signed.replace(b"Valid-Until: Tue, 01 Jun 2027", b"Valid-Until: Tue, 01 Jun 2037")
    assert tampered != signed and not signing.verify_clearsigned(tampered, [ring])
    other = keys.generate(tmp_path / "other")
    assert not signing.verify_clearsigned(signed, [signing.keyring(other.apt_public)])


def test_apt_accepts_the_signed_repository_with_the_keyring_only(
    local_source: str, bundle_key: keys.SigningKey, tmp_path: Path
) -> None:
    """What a host does: the repository as a source with Signed-By, nothing trusted blindly."""
    dest = tmp_path / "debs"
    debs.download_debs(["clock-a"], [local_source], dest, ARCHES)
    debs.index_debs(dest)
    debs.sign_release(
        dest,
        arches=ARCHES,
        apt_secret=bundle_key.apt_secret,
        apt_public=bundle_key.public.apt_public,
        valid_until=datetime.now(UTC) + timedelta(days=30),
    )
    ring = dest / debs.KEYRING_FILE
    ours = f"deb [signed-by={ring}] file:{dest} ./"
    out = tmp_path / "host"
    debs.download_debs(["clock-a"], [ours], out, ("arm64",))
    assert (out / "clock-a_1.0_arm64.deb").is_file()
    (dest / "InRelease").write_text((dest / "InRelease").read_text().replace("aiorch", "aiorcX"))
    with pytest.raises(UserError, match="apt-get update failed"):
        debs.download_debs(["clock-a"], [ours], tmp_path / "refused", ("arm64",))


def test_arm64_debs_come_from_the_debian_mirror(tmp_path: Path) -> None:
    """Network: one tiny package and its closure, for both architectures (cached across runs)."""
    source = debs.default_sources(arches=ARCHES)[0]  # bookworm main only: a small index
    dest = CACHE / "base-files"
    debs.download_debs(["base-files"], [source], dest, ARCHES)
    names = {p.name.split("_")[0] + ":" + p.stem.rsplit("_", 1)[1] for p in dest.glob("*.deb")}
    assert {"base-files:amd64", "base-files:arm64"} <= names


def _inputs(source: str, key: keys.SigningKey) -> Manifest:
    return Manifest(
        packages=("clock-a",),
        sources=(source,),
        requirements=(),
        python_version="3.11",
        project_digest="0" * 64,
        arches=ARCHES,
        key_id=key.public.id,
    )


def _built(out: Path, manifest: Manifest) -> Manifest:
    """What build_repo records after the debs: the manifest with every file's hash."""
    return replace(manifest, files=hash_files(out))


def test_a_rebuild_signs_again_only_for_a_new_key_or_a_half_spent_signature(
    local_source: str, bundle_key: keys.SigningKey, tmp_path: Path
) -> None:
    out, now = tmp_path / "repo", datetime(2026, 12, 1, tzinfo=UTC)
    first = _built(out, refresh_debs(out, None, _inputs(local_source, bundle_key), bundle_key,
                                     valid_for_days=10, now=now))  # fmt: skip
    assert first.valid_until == "2026-12-11T00:00:00+00:00"
    signed = (out / "debs" / "InRelease").read_bytes()
    debs_stamps = {p.name: p.stat().st_mtime_ns for p in (out / "debs").glob("*.deb")}

    later = now + timedelta(days=4)  # more than half of the 10 days left: kept
    kept = refresh_debs(out, first, _inputs(local_source, bundle_key), bundle_key,
                        valid_for_days=10, now=later)  # fmt: skip
    assert kept.valid_until == first.valid_until
    assert (out / "debs" / "InRelease").read_bytes() == signed

    late = now + timedelta(days=6)  # under half left: signed again, from the same debs
    renewed = refresh_debs(out, first, _inputs(local_source, bundle_key), bundle_key,
                           valid_for_days=10, now=late)  # fmt: skip
    assert renewed.valid_until == "2026-12-17T00:00:00+00:00"
    assert "Valid-Until: Thu, 17 Dec 2026 00:00:00 UTC" in (out / "debs" / "Release").read_text()

    other_dir = tmp_path / "other-key"
    keys.generate(other_dir)
    other = keys.load_signing_key(other_dir / keys.KEY_FILE)
    rekeyed = refresh_debs(out, _built(out, renewed), _inputs(local_source, other), other,
                           valid_for_days=10, now=late)  # fmt: skip
    assert rekeyed.key_id == other.public.id
    ring = (out / "debs" / debs.KEYRING_FILE).read_bytes()
    assert ring == signing.keyring(other.public.apt_public)
    assert signing.verify_clearsigned((out / "debs" / "InRelease").read_bytes(), [ring])
    assert {p.name: p.stat().st_mtime_ns for p in (out / "debs").glob("*.deb")} == debs_stamps
