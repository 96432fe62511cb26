"""A hub installs from the site tree's hub/ alone, with no network, and provisions from the
playbooks its wheel ships: the air-gapped hub's first step (issue 12, section 3).

Staging needs PyPI (the hub's locked closure, cached under .data/); the install itself runs in a
network namespace with no interfaces up, so any attempt to reach a registry fails it.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiorch.repo import hub_install, signing

pytestmark = pytest.mark.e2e  # a minute or two: a whole hub closure goes into a fresh venv

ROOT = Path(__file__).resolve().parents[1]
SITE_CACHE = ROOT / ".data" / "test-wheel-install" / "site"
PROBE = "aiorch-install-probe"  # a package no Debian host has: the installer must fetch it


def probe_repo(site: Path) -> None:
    """A signed flat apt repository in ``site/repo/debs`` holding one tiny package, as a
    bundle's repo/debs holds the hub's missing system packages."""
    debs = site / "repo" / "debs"
    package = debs / "build" / PROBE
    (package / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (package / "DEBIAN" / "control").write_text(
        f"Package: {PROBE}\nVersion: 1.0\nArchitecture: all\nMaintainer: aiorch tests <t@x>\n"
        "Description: proves install-hub.sh installs debs from the site repository\n"
    )
    subprocess.run(
        ["dpkg-deb", "--build", str(package), str(debs / f"{PROBE}_1.0_all.deb")],
        check=True,
        capture_output=True,
    )
    packages = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
        cwd=debs,
        check=True,
        capture_output=True,
    ).stdout
    (debs / "Packages").write_bytes(packages)
    release = textwrap.dedent(f"""\
        Origin: aiorch-test
        Label: aiorch-test
        Architectures: all
        Date: {email.utils.formatdate(usegmt=True)}
        SHA256:
         {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages
        """)
    secret, public = signing.new_apt_key("aiorch test <t@x>")
    (debs / "InRelease").write_text(signing.clearsign(release, secret))
    (debs / "aiorch-archive-keyring.gpg").write_bytes(signing.keyring(public))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    SITE_CACHE.mkdir(parents=True, exist_ok=True)
    hub_install.stage(SITE_CACHE, project=ROOT)  # reuses the cached wheels that still match
    probe_repo(SITE_CACHE)
    return SITE_CACHE


@pytest.fixture
def no_probe() -> Iterator[None]:
    subprocess.run(["dpkg", "--purge", PROBE], capture_output=True, check=False)
    yield
    subprocess.run(["dpkg", "--purge", PROBE], capture_output=True, check=False)


def offline(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a fresh network namespace: no route anywhere, not even to PyPI."""
    return subprocess.run(
        ["unshare", "--net", *argv],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**os.environ, **env},
        check=False,
        timeout=240,
    )


def test_the_hub_installs_offline_from_its_wheels_and_ships_its_playbooks(
    site: Path, tmp_path: Path, no_probe: None
) -> None:
    venv = tmp_path / "venv"
    script = str(site / "hub" / "install-hub.sh")
    debs = f"python3-venv openssh-client {PROBE}"
    run = offline([script, "--venv", str(venv)], tmp_path, AIORCH_HUB_DEBS=debs)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{venv}/bin/aiorch hub serve" in run.stdout
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", PROBE], capture_output=True, text=True, check=False
    )
    assert status.stdout == "install ok installed", "the missing deb came from repo/debs"

    # The installed hub, run from outside the checkout, resolves its own copy of the playbooks.
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "from aiorch.hub.settings import HubSettings; "
            "print(HubSettings(data_dir='d').playbooks_dir)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "AIORCH_PLAYBOOKS_DIR"},
    ).stdout.strip()
    playbooks = Path(where)
    assert playbooks.is_relative_to(venv) and not playbooks.is_relative_to(ROOT)
    assert (playbooks / "site.yml").is_file()
    roles = {p.name for p in (playbooks / "roles").iterdir()}
    assert {"aiorch_base", "aiorch_site_repo", "aiorch_edge_agent"} <= roles
    assert (playbooks / "roles" / "aiorch_base" / "tasks" / "main.yml").is_file()
    help_run = subprocess.run(
        [str(venv / "bin" / "aiorch"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert help_run.returncode == 0 and "provision" in help_run.stdout

    # Idempotent: a second run, offline again, leaves the same packages at the same versions.
    freeze = [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all"]
    before = subprocess.run(freeze, capture_output=True, text=True, check=True).stdout
    again = offline([script, "--venv", str(venv)], tmp_path, AIORCH_HUB_DEBS=debs)
    assert again.returncode == 0, again.stderr[-3000:]
    assert subprocess.run(freeze, capture_output=True, text=True, check=True).stdout == before


def test_the_installer_refuses_a_folder_without_wheels(tmp_path: Path) -> None:
    script = tmp_path / "hub" / "install-hub.sh"
    script.parent.mkdir()
    script.write_bytes(hub_install.installer())
    script.chmod(0o755)
    run = offline([str(script), "--venv", str(tmp_path / "venv")], tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip() == (
        f"install-hub.sh: no {tmp_path}/hub/wheels: run me from an unpacked bundle's site tree"
        " (or set AIORCH_SITE)"
    )
    assert not (tmp_path / "venv").exists()
