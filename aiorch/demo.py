"""`make demo`: a hub and a lab fleet it brings up with Ansible from one signed bundle, fully
offline: the bundle (the site repository, aiorch's playbooks, the lab's model server image
and its weights) is made and verified here, the hub trusts its key and imports it, and then
serves its signed apt repository and wheels to the hosts; every lab host gets site.yml (repo,
base, storage, network, container runtime, NVIDIA driver check, edge agent), and its agent
checks in. Everything between hosts and hub is HTTPS against the hub's CA (apt and pip
included), apt verifies the repository's InRelease with the bundle key's keyring, and the
agents enroll with the CA's pin and then talk mTLS. Then a deployment of the bundle's image
naming the bundle's model (examples/deployments/lab-model.yaml) serves on every edge box, each
agent fetching the weights from the hub into its model cache and mounting them read-only; and
a training job (examples/jobs/lab-train.yaml) runs to its end on the datacenter host's
simulated GPUs.

Each step runs the same command a person would type, printed before it runs, so
the demo doubles as a walkthrough. Running it again reuses what is already up;
`--down` removes everything it made.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from aiorch.bundle import keys
from aiorch.deploy.spec import load_spec
from aiorch.endpoint import CA_FILE, endpoint_url
from aiorch.errors import AiorchError, UserError
from aiorch.hub.process import HubProcess, healthy
from aiorch.lab.fleet import Lab
from aiorch.lab.payload import deployment_spec
from aiorch.lab.site import prepare_disks, write_site_inventory

BIN = Path(sys.executable).parent
BUNDLE_CACHE = Path(".data/bundle-cache").resolve()  # the site repository, built once
BUNDLE_KEY_DIR = Path(".data/bundle-key").resolve()  # signs bundles and their apt repository
MODEL = "lab-weights"
WEIGHTS = {"weights": [0.5, -0.25, 0.125, 1.0], "bias": 0.5}
EDGE_ROLE = "edge-box"
JOB_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "jobs" / "lab-train.yaml"
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


def start_hub(data_dir: Path, port: int, listen: str) -> str:
    """Start the hub in the background unless this data dir's hub already answers. It serves
    `/repo` from the bundle it imports (nothing is served until then)."""
    url = endpoint_url(data_dir)
    if healthy(url, data_dir / CA_FILE):
        print(f"hub already running at {url}")
        return str(url)
    hub = HubProcess(data_dir, port, listen=[listen], log_level="info")
    print(f"\n$ {' '.join(['aiorch', *hub.argv()[1:]])} &")
    hub.start(detach=True)
    return hub.url


def make_bundle(aiorch: str, data_dir: Path) -> Path:
    """What a connected machine does before the gap: a bundle key (once), the lab's model
    image and weights, and one signed bundle with the site repository, aiorch's playbooks,
    that image and that model. The hub runs on this machine here, so the bundle leaves the
    hub's own install out (`--no-hub`); tests/test_airgap_hub.py carries one across."""
    key_dir = BUNDLE_KEY_DIR
    if not (key_dir / keys.KEY_FILE).exists():
        _show([aiorch, "bundle", "keygen", "--out", str(key_dir)])
    built = json.loads(_show([aiorch, "lab", "payload", "build", "--output", "json"], capture=True))
    print(f"{built['path']}\n{built['digest']}", flush=True)
    weights = data_dir / "lab-weights"
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "weights.json").write_text(json.dumps(WEIGHTS) + "\n")
    bundle = data_dir / "bundle"
    if (bundle / "manifest.sig").exists():
        print(f"bundle already made: {bundle}")
        return bundle
    _show([aiorch, "bundle", "create", "--out", str(bundle), "--key", str(key_dir / keys.KEY_FILE),
           "--image", f"{built['ref']}={built['path']}", "--model", f"{MODEL}={weights}",
           "--repo-cache", str(BUNDLE_CACHE), "--no-hub"])  # fmt: skip
    _show([aiorch, "bundle", "verify", str(bundle), "--trust", str(key_dir / keys.PUB_FILE)])
    return bundle


def import_bundle(aiorch: str, env: dict[str, str], bundle: Path) -> None:
    """Trust the bundle key and import the bundle: what an air-gapped hub does with the media."""
    trusted = json.loads(_run([aiorch, "bundle", "trust", "list", "--output", "json"], env, True))
    public = keys.load_public(BUNDLE_KEY_DIR / keys.PUB_FILE)
    if all(k["key_id"] != public.id for k in trusted):
        _show([aiorch, "bundle", "trust", "add", str(BUNDLE_KEY_DIR / keys.PUB_FILE)], env)
    imports = json.loads(_run([aiorch, "bundle", "list", "--output", "json"], env, True))
    digest = "sha256:" + hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    if any(row["digest"] == digest for row in imports):
        print(f"bundle {digest[:19]} already imported")
        return
    _show([aiorch, "bundle", "import", str(bundle)], env)


def demo_up(data_dir: Path, lab_name: str, hosts: int, port: int) -> None:
    aiorch = str(BIN / "aiorch")
    env = {"AIORCH_DATA_DIR": str(data_dir)}
    lab = Lab(lab_name)
    _show([aiorch, "lab", "up", "--hosts", str(hosts), "--name", lab_name])
    prepare_disks(lab)
    bundle = make_bundle(aiorch, data_dir)
    hub_on_lab = f"https://{lab.gateway}:{port}"
    start_hub(data_dir, port, f"{lab.gateway}:{port}")
    import_bundle(aiorch, env, bundle)
    inventory = write_site_inventory(
        lab, data_dir / "site-inventory.yml", repo_url=f"{hub_on_lab}/repo", hub_url=hub_on_lab
    )
    _show([aiorch, "inventory", "import", str(inventory)], env)
    # One rollout per site, each with that site's enrollment token (passed as an extra var,
    # so it is never stored with the inventory and is masked in the run's events). The token
    # carries the pin of the hub's CA: each agent checks its hub against it before enrolling.
    # The hub gives every run the imported release's apt keyring and version.
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
    run_job(aiorch, env, data_dir)
    print(
        f"\nThe hub runs at https://127.0.0.1:{port}; lab hosts reach it at {hub_on_lab}\n"
        f"(HTTPS only, its CA in {data_dir / CA_FILE}; agents talk mTLS).\n"
        f"Dashboard: https://127.0.0.1:{port}/ui/ (trust {data_dir / CA_FILE} in the browser);\n"
        f"  sign in with the admin token in {data_dir / 'admin.token'}, or a viewer's from\n"
        f"  AIORCH_DATA_DIR={data_dir} aiorch tokens create --role viewer --name me\n"
        f"Jobs: AIORCH_DATA_DIR={data_dir} aiorch jobs list (the dashboard: /ui/jobs)\n"
        f"Try: AIORCH_DATA_DIR={data_dir} aiorch runs list   |   "
        f"ansible all -i {lab.inventory_path} -m ping\n"
        "Call the model on an edge box:\n"
        + "".join(f"  {call}\n" for call in calls)
        + "Remove everything the demo made: make demo-down"
    )


def bundle_image(aiorch: str, env: dict[str, str]) -> str:
    """The bundle's model server image in the hub's store, pinned: `ref@digest`."""
    listed = json.loads(_run([aiorch, "image", "list", "--output", "json"], env, True))
    image = next(i for i in listed if i["ref"].split("/")[-1].startswith("aiorch-model:"))
    return f"{image['ref']}@{image['digest']}"


def run_job(aiorch: str, env: dict[str, str], data_dir: Path) -> None:
    """The example training job beside the serving deployment, pinned to the bundle's image:
    queued, placed on the datacenter host's GPUs (simulated in the lab, and said so), followed
    to its end; then its record and the GPU-hours by project."""
    doc = yaml.safe_load(JOB_EXAMPLE.read_text())
    doc["spec"]["image"] = bundle_image(aiorch, env)
    name = doc["metadata"]["name"]
    listed = json.loads(_run([aiorch, "jobs", "list", "--output", "json"], env, True))
    if any(job["name"] == name and job["state"] == "succeeded" for job in listed):
        print(f"job {name} already succeeded")
        return
    if not any(job["name"] == name for job in listed):
        spec = data_dir / JOB_EXAMPLE.name
        spec.write_text(yaml.safe_dump(doc, sort_keys=False))
        _show([aiorch, "jobs", "submit", "-f", str(spec)], env)
    _show([aiorch, "jobs", "logs", name, "--follow"], env)
    shown = json.loads(_run([aiorch, "jobs", "show", name, "--output", "json"], env, True))
    if shown["state"] != "succeeded":
        raise UserError(f"job {name} ended {shown['state']}: {shown['reason']}")
    _show([aiorch, "jobs", "show", name], env)
    _show([aiorch, "telemetry", "gpu-hours", "--by", "project"], env)


def deploy_model(aiorch: str, env: dict[str, str], data_dir: Path, lab: Lab) -> list[str]:
    """Apply the example deployment pinned to the bundle's image and naming its model, with a
    replica per edge box; wait until every replica is healthy and one answers with the
    bundle's weights. Returns a curl command line per replica."""
    image = bundle_image(aiorch, env)
    models = json.loads(_run([aiorch, "model", "list", "--output", "json"], env, True))
    model = next(m for m in models if m["name"] == MODEL)
    print(f"from the bundle: {image}, model {MODEL}@{model['digest']}")
    edges = [host for host in lab.hosts if host.role == EDGE_ROLE]
    text = deployment_spec(image, replicas=len(edges), model=(MODEL, model["digest"]))
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
    if answer.json().get("weights") != WEIGHTS["weights"]:
        raise UserError(f"{urls[0]} answered without the bundle's weights: {answer.text}")
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
