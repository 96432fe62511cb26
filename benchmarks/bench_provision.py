"""Provisioning speed: `aiorch provision` against plain `ansible-playbook`, same playbook,
same lab hosts, in one run; and site.yml on 10 hosts against 1 host.

The hosts are converged once first (not measured); the measured runs are then the
idempotent site.yml runs an operator repeats. Goals: aiorch/plain <= 1.10, and
10 hosts <= 1.5 x the wall time of 1 host.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from aiorch.bundle import keys
from aiorch.endpoint import hub_tls
from aiorch.hub.process import BIN, HubProcess
from aiorch.lab import Lab
from aiorch.lab.site import prepare_disks, write_site_inventory
from aiorch.repo import build_repo
from aiorch.repo.debs import KEYRING_FILE, default_sources
from aiorch.repo.packages import BASE_PACKAGES

PROJECT = Path(__file__).resolve().parents[1]
HOSTS = 10


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise SystemExit(f"{' '.join(argv[:3])} failed:\n{tail}")
    return elapsed


def _token_var(created: dict[str, str]) -> str:
    return f"aiorch_edge_agent_enroll_token={created['token']}"


def main() -> None:
    repo, key_dir = PROJECT / ".data" / "bench-site-repo", PROJECT / ".data" / "bench-repo-key"
    if not (key_dir / keys.KEY_FILE).exists():
        keys.generate(key_dir)
    signing_key = keys.load_signing_key(key_dir / keys.KEY_FILE)
    build_repo(repo, BASE_PACKAGES, PROJECT, sources=default_sources(), signing_key=signing_key)
    lab = Lab(f"bench{os.getpid()}")
    with tempfile.TemporaryDirectory() as tmp:
        hub = HubProcess(Path(tmp) / "hub", poll_interval=5, repo_dir=repo)
        try:
            lab.up(hosts=HOSTS)
            prepare_disks(lab)
            hub.listen = [f"{lab.gateway}:{hub.port}"]
            hub.start()
            lab_url = f"https://{lab.gateway}:{hub.port}"
            inventory = write_site_inventory(
                lab,
                Path(tmp) / "site.yml",
                repo_url=f"{lab_url}/repo",
                hub_url=lab_url,
                keyring_file=repo / "debs" / KEYRING_FILE,
            )
            auth = {"Authorization": f"Bearer {hub.admin_token}"}
            verify = hub_tls(hub.ca_path)
            api = httpx.Client(
                base_url=f"{hub.url}/api/v1", headers=auth, timeout=60, verify=verify
            )
            with api:
                api.post(
                    "/inventory/import",
                    json={"filename": "site.yml", "content": inventory.read_text()},
                ).raise_for_status()
                sites = sorted({h.site for h in lab.hosts})
                tokens = {
                    site: api.post("/enroll-tokens", json={"site": site, "uses": 100}).json()
                    for site in sites
                }
            env = {**os.environ, "AIORCH_HUB": hub.url, "AIORCH_TOKEN": hub.admin_token}
            env["AIORCH_CA"] = str(hub.ca_path)
            env["ANSIBLE_CONFIG"] = str(PROJECT / "playbooks" / "ansible.cfg")
            provision = [str(BIN / "aiorch"), "provision", "site.yml", "-e"]
            first = sum(
                timed([*provision, _token_var(tokens[site]), "--limit", f"site={site}"], env)
                for site in sites
            )
            print(f"first converge of {HOSTS} hosts, site by site (not compared): {first:.1f} s")
            # Every agent is enrolled now, so the measured runs skip enrollment.
            secret = _token_var(tokens[sites[0]])
            aiorch = [*provision, secret]
            plain = [str(BIN / "ansible-playbook"), "-i", str(inventory)]
            plain += [str(PROJECT / "playbooks" / "site.yml"), "-e", secret]
            plain += ["-e", f"aiorch_hub_ca_file={hub.ca_path}"]  # what the hub gives its runs
            one = lab.hosts[0].name
            results = {
                "plain, 1 host": timed([*plain, "--limit", one], env),
                "aiorch, 1 host": timed([*aiorch, "--limit", one], env),
                f"plain, {HOSTS} hosts": timed(plain, env),
                f"aiorch, {HOSTS} hosts": timed(aiorch, env),
            }
        finally:
            hub.stop()
            lab.down()
    for label, seconds in results.items():
        print(f"site.yml (idempotent), {label:<16} {seconds:6.1f} s")
    r1 = results["aiorch, 1 host"] / results["plain, 1 host"]
    rn = results[f"aiorch, {HOSTS} hosts"] / results[f"plain, {HOSTS} hosts"]
    scale = results[f"aiorch, {HOSTS} hosts"] / results["aiorch, 1 host"]
    print(f"aiorch/plain: {r1:.2f} (1 host), {rn:.2f} ({HOSTS} hosts)   goal <= 1.10")
    print(f"{HOSTS} hosts / 1 host with aiorch: {scale:.2f}   goal <= 1.50")


if __name__ == "__main__":
    sys.exit(main())
