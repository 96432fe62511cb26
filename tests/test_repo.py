"""The site repository: manifest and verify on a tiny fake repo; a real build (lab marker)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiorch.bundle import keys
from aiorch.repo import signing
from aiorch.repo.build import build_repo
from aiorch.repo.cli import app
from aiorch.repo.debs import KEYRING_FILE
from aiorch.repo.lock import read_lock
from aiorch.repo.manifest import (
    MANIFEST,
    Manifest,
    hash_files,
    load_manifest,
    verify_repo,
    write_manifest,
)
from aiorch.repo.wheels import write_index

runner = CliRunner()


def fake_repo(root: Path) -> Path:
    (root / "debs").mkdir(parents=True)
    (root / "wheels").mkdir()
    (root / "debs" / "hello_1.0_amd64.deb").write_bytes(b"not really a deb")
    (root / "wheels" / "aiorch-0.1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    write_index(root / "wheels")
    manifest = Manifest(
        packages=("hello",),
        sources=("deb http://example.invalid/debian bookworm main",),
        requirements=("httpx>=0.27",),
        python_version="3.11",
        project_digest="0" * 64,
        files=hash_files(root),
    )
    write_manifest(root, manifest)
    return root


def test_manifest_round_trips_and_lists_every_file(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path / "repo")
    manifest = load_manifest(repo)
    assert manifest is not None and manifest.packages == ("hello",)
    assert sorted(manifest.files) == [
        "debs/hello_1.0_amd64.deb",
        "wheels/aiorch-0.1.0-py3-none-any.whl",
        "wheels/index.html",
    ]
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert verify_repo(repo) == []


def test_verify_names_every_problem(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path / "repo")
    (repo / "debs" / "hello_1.0_amd64.deb").write_bytes(b"tampered")
    (repo / "wheels" / "index.html").unlink()
    (repo / "debs" / "extra_1.0_all.deb").write_bytes(b"smuggled in")
    assert verify_repo(repo) == [
        "sha256 mismatch: debs/hello_1.0_amd64.deb",
        "missing: wheels/index.html",
        "not in manifest: debs/extra_1.0_all.deb",
    ]


def test_verify_without_a_manifest(tmp_path: Path) -> None:
    assert verify_repo(tmp_path) == [f"no readable {MANIFEST} in {tmp_path}"]
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 99}))
    assert verify_repo(tmp_path) == [f"no readable {MANIFEST} in {tmp_path}"]


def test_wheel_index_links_every_wheel(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path / "repo")
    page = (repo / "wheels" / "index.html").read_text()
    assert '<a href="aiorch-0.1.0-py3-none-any.whl">' in page


def test_cli_verify(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path / "repo")
    ok = runner.invoke(app, ["verify", str(repo)])
    assert ok.exit_code == 0 and "intact" in ok.output
    (repo / "debs" / "hello_1.0_amd64.deb").write_bytes(b"tampered")
    bad = runner.invoke(app, ["verify", str(repo)])
    assert bad.exit_code != 0
    assert "sha256 mismatch: debs/hello_1.0_amd64.deb" in bad.output


@pytest.mark.lab
def test_build_makes_an_apt_repo_and_a_wheel_dir_then_reuses_them(tmp_path: Path) -> None:
    """Needs the package registries (Debian, PyPI): the one step that may fetch."""
    out = tmp_path / "repo"
    project = Path(__file__).resolve().parents[1]
    keys.generate(tmp_path / "key")
    key = tmp_path / "key" / keys.KEY_FILE
    built = runner.invoke(app, ["build", "--out", str(out), "--package", "jq", "--key", str(key)])
    assert built.exit_code == 0, built.output
    assert verify_repo(out) == []
    packages = gzip.decompress((out / "debs" / "Packages.gz").read_bytes()).decode()
    names = {
        line.split(": ", 1)[1] for line in packages.splitlines() if line.startswith("Package: ")
    }
    assert {"podman", "crun", "chrony", "jq", "libjq1", "libc6"} <= names  # with dependencies
    assert {"Architecture: amd64", "Architecture: arm64"} <= set(packages.splitlines())
    release = (out / "debs" / "Release").read_text()
    assert "SHA256:" in release and "Valid-Until: " in release
    ring = (out / "debs" / KEYRING_FILE).read_bytes()
    assert signing.verify_clearsigned((out / "debs" / "InRelease").read_bytes(), [ring])
    wheels = {p.name.split("-")[0].lower() for p in (out / "wheels").glob("*.whl")}
    assert {"aiorch", "pyyaml", "nvidia_ml_py", "psutil"} <= wheels
    assert not {"httpx", "pyroute2"} & wheels  # the agent needs neither
    first = load_manifest(out)
    assert first is not None
    pins = read_lock(project).pins  # the locked versions, and only those, reach the site
    assert first.requirements == pins
    dists = {"==".join(p.name.split("-")[:2]) for p in (out / "wheels").glob("*.whl")}
    assert {d.lower().replace("_", "-") for d in dists if not d.startswith("aiorch==")} == set(pins)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "debs").iterdir()}
    again = build_repo(
        out,
        first.packages,
        project,
        sources=first.sources,
        signing_key=keys.load_signing_key(key),
    )
    # Same inputs and intact files: nothing fetched or re-indexed.
    assert {p.name: p.stat().st_mtime_ns for p in (out / "debs").iterdir()} == stamps
    assert again.packages == first.packages and verify_repo(out) == []
