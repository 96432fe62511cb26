"""`make demo`: a hub and a lab fleet it brings up with Ansible, fully offline: the site
repository is built here and served by the hub; every lab host gets site.yml (repo, base,
storage, network, container runtime, NVIDIA driver check, edge agent), and its agent checks in.
Everything between hosts and hub is HTTPS against the hub's CA (apt and pip included), and
the agents enroll with the CA's pin and then talk mTLS.
Then the lab's model server image goes to the hub's image store and a deployment of it
(examples/deployments/lab-model.yaml, pinned to that image) serves on every edge box.

Each step runs the same command a person would type, printed before it runs, so
the demo doubles as a walkthrough. Running it again reuses what is already up;
`--down` removes everything it made.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from aiorch.bundle import keys
from aiorch.deploy.spec import load_spec
from aiorch.endpoint import CA_FILE, endpoint_url
from aiorch.errors import AiorchError, UserError
from aiorch.hub.process import HubProcess, healthy
from aiorch.lab.fleet import Lab
from aiorch.lab.payload import deployment_spec
from aiorch.lab.site import prepare_disks, write_site_inventory
from aiorch.repo.debs import KEYRING_FILE

BIN = Path(sys.executable).parent
REPO_DIR = Path(".data/site-repo").resolve()
REPO_KEY_DIR = REPO_DIR.with_name("site-repo-key")  # the bundle key that signs the repository
EDGE_ROLE = "edge-box"
# Downloading and loading the image on every edge box, on a busy 2-core machine.
SERVE_TIMEOUT = 600.0
FEATURES = '{"features": [1, 2, 3, 4]}'


def _show(
    argv: list[str], env: dict[str, str] | None = None, capture: bool = False, secret: str = ""
) -> str:
    shown = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))
    print(f"\n$ {shown.replace(secret, '***') if secret else shown}", flush=True)
    return _run(argv, env, capture)


def _run(argv: list[str], env: dict[str, str] | None = None, capture: bool = False) -> str:
    """Run a step's command; a failure is a UserError with its last line of stderr."""
    result = subprocess.run(
        argv, env={**os.environ, **(env or {})}, text=True, capture_output=capture, timeout=1800
    )
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if capture else []
        raise UserError(f"{Path(argv[0]).name} failed: {' '.join(detail) or 'see above'}")
    return result.stdout or ""


def start_hub(data_dir: Path, port: int, listen: str, repo_dir: Path) -> str:
    """Start the hub in the background unless this data dir's hub already answers."""
    url = endpoint_url(data_dir)
    if healthy(url, data_dir / CA_FILE):
        print(f"hub already running at {url}")
        return str(url)
    hub = HubProcess(data_dir, port, listen=[listen], log_level="info", repo_dir=repo_dir)
    print(f"\n$ {' '.join(['aiorch', *hub.argv()[1:]])} &")
    hub.start(detach=True)
    return hub.url


def demo_up(data_dir: Path, lab_name: str, hosts: int, port: int) -> None:
    aiorch = str(BIN / "aiorch")
    env = {"AIORCH_DATA_DIR": str(data_dir)}
    lab = Lab(lab_name)
    _show([aiorch, "lab", "up", "--hosts", str(hosts), "--name", lab_name])
    prepare_disks(lab)
    if not (REPO_KEY_DIR / keys.KEY_FILE).exists():
        print(f"bundle key {keys.generate(REPO_KEY_DIR).id} in {REPO_KEY_DIR}")
    key = str(REPO_KEY_DIR / keys.KEY_FILE)
    _show([aiorch, "repo", "build", "--out", str(REPO_DIR), "--key", key])
    hub_on_lab = f"https://{lab.gateway}:{port}"
    start_hub(data_dir, port, f"{lab.gateway}:{port}", REPO_DIR)
    inventory = write_site_inventory(
        lab,
        data_dir / "site-inventory.yml",
        repo_url=f"{hub_on_lab}/repo",
        hub_url=hub_on_lab,
        keyring_file=REPO_DIR / "debs" / KEYRING_FILE,
    )
    _show([aiorch, "inventory", "import", str(inventory)], env)
    # One rollout per site, each with that site's enrollment token (passed as an extra var,
    # so it is never stored with the inventory and is masked in the run's events). The token
    # carries the pin of the hub's CA: each agent checks its hub against it before enrolling.
    pins: set[str] = set()
    for site in sorted({h.site for h in lab.hosts}):
        create = [aiorch, "enroll-token", "create", "--site", site, "--uses", "100"]
        made = json.loads(_show([*create, "--output", "json"], env, capture=True))
        token = made["token"]
        if made["ca_pin"] not in pins:
            pins.add(made["ca_pin"])
            print(f"hub CA pin: {made['ca_pin']} (in every token; the CA: {data_dir / CA_FILE})")
        secret = f"aiorch_edge_agent_enroll_token={token}"
        _show([aiorch, "provision", "site.yml", "--limit", f"site={site}", "-e", secret], env,
              secret=token)  # fmt: skip
    _show([aiorch, "agents", "list"], env)
    _show([aiorch, "status"], env)
    calls = deploy_model(aiorch, env, data_dir, lab)
    print(
        f"\nThe hub runs at https://127.0.0.1:{port}; lab hosts reach it at {hub_on_lab}\n"
        f"(HTTPS only, its CA in {data_dir / CA_FILE}; agents talk mTLS).\n"
        f"Try: AIORCH_DATA_DIR={data_dir} aiorch runs list   |   "
        f"ansible all -i {lab.inventory_path} -m ping\n"
        "Call the model on an edge box:\n"
        + "".join(f"  {call}\n" for call in calls)
        + "Remove everything the demo made: make demo-down"
    )


def deploy_model(aiorch: str, env: dict[str, str], data_dir: Path, lab: Lab) -> list[str]:
    """Build and push the lab's model image, apply the example deployment pinned to it with a
    replica per edge box, and wait until every replica is healthy and one answers. Returns a
    curl command line per replica."""
    built = json.loads(_show([aiorch, "lab", "payload", "build", "--output", "json"], capture=True))
    print(f"{built['path']}\n{built['digest']}", flush=True)
    push = [aiorch, "image", "push", built["path"], "--ref", built["ref"], "--output", "json"]
    pushed = json.loads(_show(push, env, capture=True))
    print(f"{pushed['ref']} {pushed['digest']}", flush=True)
    edges = [host for host in lab.hosts if host.role == EDGE_ROLE]
    text = deployment_spec(f"{pushed['ref']}@{pushed['digest']}", replicas=len(edges))
    spec = data_dir / "lab-model.yaml"
    spec.write_text(text)
    _show([aiorch, "apply", "-f", str(spec)], env)
    deployment = load_spec(text)
    name = deployment.metadata.name
    _show([aiorch, "rollout", "status", name, "--wait", "--timeout", f"{SERVE_TIMEOUT:g}"], env)
    shown = json.loads(_run([aiorch, "deployments", "show", name, "--output", "json"], env, True))
    addresses = {host.name: host.address for host in lab.hosts}
    port = deployment.spec.ports[0].host_port
    urls = [f"http://{addresses[r['host']]}:{port}/predict" for r in shown["replicas"]]
    answer = httpx.post(urls[0], content=FEATURES, timeout=10)
    answer.raise_for_status()
    print(f"\nPOST {urls[0]} {FEATURES}\n-> {answer.text}", flush=True)
    return [f"curl -s -X POST {url} -d '{FEATURES}'" for url in urls]


def demo_down(data_dir: Path, lab_name: str) -> None:
    record = data_dir / "hub.json"
    if record.exists():
        pid = int(json.loads(record.read_text()).get("pid", 0))
        if pid > 0:
            try:
                os.kill(pid, signal.SIGTERM)
                print(f"stopped hub (pid {pid})")
            except ProcessLookupError:
                pass
    print(
        (Lab(lab_name).down() and f"lab {lab_name} removed") or f"lab {lab_name}: nothing to remove"
    )
    if data_dir.exists():
        shutil.rmtree(data_dir)
        print(f"removed {data_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiorch-demo", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path(".data/demo"))
    parser.add_argument("--lab-name", default="demo")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--down", action="store_true", help="remove everything the demo made")
    args = parser.parse_args(argv)
    data_dir = args.data_dir.resolve()
    try:
        if args.down:
            demo_down(data_dir, args.lab_name)
        else:
            demo_up(data_dir, args.lab_name, args.hosts, args.port)
    except (AiorchError, TimeoutError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
