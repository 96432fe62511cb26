"""Fixtures for provisioning tests: a site repository, served to a lab, and a hub lab hosts reach.

One lab and one repository build per test module. The repository is cached under
``.data/site-repo-cache/<key>`` (key: the package list and apt sources), so a
rerun only rebuilds the project's own wheel when its sources moved. Lab hosts
reach this machine only on the lab's gateway address, so the repository and the
hub listen there (and the hub on 127.0.0.1 too, for the tests' own API calls). Everything
is HTTPS against the hub's CA: the runs here are plain ansible-playbook, so they pass the
CA's path as `aiorch_hub_ca_file` themselves, as the hub does for the runs it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aiorch.bundle import keys
from aiorch.endpoint import hub_tls
from aiorch.lab import Lab
from aiorch.lab.image import ensure_image
from aiorch.lab.podman import podman
from aiorch.lab.site import prepare_disks, site_vars, write_site_inventory
from aiorch.repo import build_repo
from aiorch.repo.debs import KEYRING_FILE, default_sources
from aiorch.repo.packages import BASE_PACKAGES
from tests.fixtures_hub import HubProcess
from tests.fixtures_lab import INVENTORIES, unique_lab_name
from tests.tiers import require_lab

PROJECT = Path(__file__).resolve().parents[1]
PLAYBOOKS = PROJECT / "playbooks"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
REPO_CACHE = Path(os.environ.get("AIORCH_REPO_CACHE", PROJECT / ".data" / "site-repo-cache"))
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


# ---- the site repository -------------------------------------------------------------------


def repo_cache_dir(packages: tuple[str, ...], sources: tuple[str, ...]) -> Path:
    key = hashlib.sha256(json.dumps([sorted(packages), list(sources)]).encode()).hexdigest()
    return REPO_CACHE / key[:16]


# What a hub passes from its current content; the role records it for the agent.
SITE_RELEASE: dict[str, Any] = {"version": 7, "digest": "sha256:" + "5e" * 32}
LAB_ARCHES = ("amd64",)  # the lab's hosts; a site's repository (the default) adds arm64


def repo_signing_key() -> keys.SigningKey:
    """The bundle key that signs the cached repositories, made once per cache dir: a new key
    on every run would re-sign them all."""
    key_dir = REPO_CACHE / "bundle-key"
    if not (key_dir / keys.KEY_FILE).exists():
        keys.generate(key_dir)
    return keys.load_signing_key(key_dir / keys.KEY_FILE)


@pytest.fixture(scope="session")
def bundle_key(tmp_path_factory: pytest.TempPathFactory) -> keys.SigningKey:
    """A fresh bundle key for tests that sign a repository (gpg makes it in about a second)."""
    out = tmp_path_factory.mktemp("bundle-key")
    keys.generate(out)
    return keys.load_signing_key(out / keys.KEY_FILE)


@pytest.fixture(scope="module")
def site_repo() -> Path:
    """The signed site repository for the roles' packages, built once and cached across runs."""
    sources = default_sources(arches=LAB_ARCHES)
    out = repo_cache_dir(BASE_PACKAGES, sources)
    build_repo(
        out, BASE_PACKAGES, PROJECT, sources=sources, arches=LAB_ARCHES,
        signing_key=repo_signing_key(),
    )  # fmt: skip
    return out


# ---- a hub the lab can reach ---------------------------------------------------------------


class LabHub(HubProcess):
    """The hub on 127.0.0.1 and on the lab gateway (same port), serving the site repository."""

    def __init__(self, data_dir: Path, gateway: str, repo_dir: Path) -> None:
        super().__init__(data_dir, poll_interval=5, repo_dir=repo_dir)
        self.listen = [f"{gateway}:{self.port}"]
        self.lab_url = f"https://{gateway}:{self.port}"
        self.repo_url = f"{self.lab_url}/repo"
        # What a hub passes its runs as aiorch_site_repo_keyring_file.
        self.keyring_path = repo_dir / "debs" / KEYRING_FILE

    def start(self, **kwargs: Any) -> LabHub:
        super().start(**kwargs)
        self.admin = httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
            verify=hub_tls(self.ca_path),
        )
        return self

    def create(self, path: str, body: dict[str, Any]) -> str:
        """POST an API or enrollment token request; return the token (shown once)."""
        response = self.admin.post(path, json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def stop(self, *args: Any) -> None:
        self.admin.close()
        super().stop(*args)


# ---- the lab, provisioned ------------------------------------------------------------------


@dataclass
class Playbook:
    """One ansible-playbook run: exit code, output and the PLAY RECAP per host."""

    rc: int
    output: str
    recap: dict[str, dict[str, int]]


def assert_ok(result: Playbook) -> None:
    """The playbook ran to the end with no host failed or unreachable (else: its output)."""
    failed = {h: r for h, r in result.recap.items() if r["failed"] or r["unreachable"]}
    assert result.rc == 0 and not failed, result.output[-6000:]


@dataclass
class ProvisionLab:
    """A lab with the repository and a hub on its gateway, and the vars site.yml needs."""

    lab: Lab
    hub: LabHub
    repo_url: str
    workdir: Path
    ssh_config: Path
    site_vars: dict[str, dict[str, Any]]  # per host

    def host_vars(self, host: str, **extra: Any) -> dict[str, Any]:
        return {**self.site_vars[host], **extra}

    def run(
        self,
        playbook: str,
        limit: str | None = None,
        extra: dict[str, Any] | None = None,
        timeout: float = 600,
        check: bool = False,
    ) -> Playbook:
        """Plain ansible-playbook with the repo's ansible.cfg and per-host vars (host_vars/)."""
        argv = [ANSIBLE_PLAYBOOK, "-i", str(self.inventory), str(PLAYBOOKS / playbook)]
        if limit:
            argv += ["--limit", limit]
        if check:
            argv.append("--check")
        if extra:
            extra_file = self.workdir / f"extra-{abs(hash(json.dumps(extra, sort_keys=True)))}.json"
            extra_file.write_text(json.dumps(extra))
            argv += ["-e", f"@{extra_file}"]
        env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg")}
        env["ANSIBLE_FORCE_COLOR"] = "0"
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=PLAYBOOKS, timeout=timeout
        )
        output = proc.stdout + proc.stderr
        keys = ("ok", "changed", "unreachable", "failed")
        recap = {
            m[1]: dict(zip(keys, map(int, m.groups()[1:]), strict=True))
            for m in RECAP.finditer(output)
        }
        return Playbook(proc.returncode, output, recap)

    @property
    def inventory(self) -> Path:
        """The lab's inventory, with this module's host vars beside it in host_vars/."""
        return self.workdir / "inventory" / "hosts.yml"

    def testinfra(self, host: str) -> Any:
        import testinfra

        address = self.lab.host(host).address
        return testinfra.get_host(f"ssh://root@{address}?ssh_config={self.ssh_config}")


def _ssh_config(lab: Lab, path: Path) -> None:
    """One ssh_config for every lab host: the lab's key and known_hosts, checking on."""
    path.write_text(
        "Host *\n"
        "  User root\n"
        f"  IdentityFile {lab.ssh_key_path}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {lab.known_hosts_path}\n"
        "  StrictHostKeyChecking yes\n"
    )


def tiny_image_archive(dest: Path) -> Path:
    """A few-MB image (dash and libc from the lab base image), saved as a docker archive.

    There is no registry anywhere: this is how an image reaches a host's podman.
    """
    base = ensure_image()
    mount = podman("image", "mount", base).stdout.strip()
    root_tar = dest.with_suffix(".root.tar")
    try:
        with tarfile.open(root_tar, "w") as tar:
            for rel in (
                "usr/bin/dash",
                "usr/lib/x86_64-linux-gnu/libc.so.6",
                "lib64/ld-linux-x86-64.so.2",
            ):
                tar.add(Path(mount, rel).resolve(), arcname=rel)
    finally:
        podman("image", "unmount", base)
    ref = f"localhost/aiorch-test-tiny:{dest.parent.name[-8:]}"
    podman("import", "--quiet", "--change", 'CMD ["/usr/bin/dash"]', str(root_tar), ref)
    try:
        dest.unlink(missing_ok=True)
        podman("save", "--quiet", "--output", str(dest), ref)
    finally:
        podman("rmi", ref)
    return dest


def _site_vars(lab: Lab, hub: LabHub, token: str, viewer: str) -> dict[str, Any]:
    """The lab's site variables, the hub's CA and the repository's keyring (which a hub adds
    to the runs it starts), and the secrets tests pass (a demo passes them with -e)."""
    return {
        host.name: {
            **site_vars(lab, host.index, repo_url=hub.repo_url, hub_url=hub.lab_url),
            "aiorch_hub_ca_file": str(hub.ca_path),
            "aiorch_site_repo_keyring_file": str(hub.keyring_path),
            "aiorch_site_repo_release_version": SITE_RELEASE["version"],
            "aiorch_site_repo_release_digest": SITE_RELEASE["digest"],
            "aiorch_edge_agent_enroll_token": token,
            "aiorch_edge_agent_verify_token": viewer,
        }
        for host in lab.hosts
    }


@pytest.fixture(scope="module")
def provision_lab(
    site_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProvisionLab]:
    """A fresh 3-host lab, repository and hub on its gateway; torn down after the module."""
    require_lab()
    workdir = tmp_path_factory.mktemp("provision")
    lab = Lab(unique_lab_name("p"), inventory_dir=INVENTORIES)
    hub: LabHub | None = None
    try:
        lab.up(hosts=3)
        prepare_disks(lab)
        for host in lab.hosts:  # and a disk that holds something else
            lab.exec(host.name, ["truncate", "--size=16M", "/var/lib/aiorch-other.img"])
            lab.exec(host.name, ["mkswap", "--quiet", "/var/lib/aiorch-other.img"])
        hub = LabHub(workdir / "hub", lab.gateway, site_repo).start()
        token = hub.create("/enroll-tokens", {"site": "lab", "uses": 10, "ttl_s": 3600})
        viewer = hub.create("/tokens", {"role": "viewer", "name": "provision-verify"})
        inventory = workdir / "inventory"
        (inventory / "host_vars").mkdir(parents=True)
        (inventory / "hosts.yml").write_text(lab.inventory_path.read_text())
        host_vars = _site_vars(lab, hub, token, viewer)
        for name, values in host_vars.items():
            (inventory / "host_vars" / f"{name}.json").write_text(json.dumps(values))
        ssh_config = workdir / "ssh_config"
        _ssh_config(lab, ssh_config)
        yield ProvisionLab(lab, hub, hub.repo_url, workdir, ssh_config, host_vars)
    finally:
        if hub is not None:
            hub.stop()
        lab.down()


def site_inventory(lab: ProvisionLab, dest: Path, hosts: Collection[str], **extra: str) -> Path:
    """The lab's inventory with its site variables (no secrets), cut down to `hosts`, plus
    `extra` vars for all of it."""
    write_site_inventory(lab.lab, dest, repo_url=lab.repo_url, hub_url=lab.hub.lab_url)
    tree = yaml.safe_load(dest.read_text())
    tree["all"].setdefault("vars", {}).update(extra)

    def prune(group: dict[str, Any]) -> None:
        for name in list(group.get("hosts") or {}):
            if name not in hosts:
                del group["hosts"][name]
        for child in (group.get("children") or {}).values():
            prune(child or {})

    for group in tree.values():
        prune(group)
    dest.write_text(yaml.safe_dump(tree, sort_keys=False))
    return dest
