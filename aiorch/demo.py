"""`make demo`: a hub, a lab fleet imported into it, and an agent enrolled and online.

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

from aiorch.errors import AiorchError, UserError
from aiorch.hub.process import HubProcess, healthy
from aiorch.hub.server import endpoint_url
from aiorch.lab.fleet import Lab

BIN = Path(sys.executable).parent


def _show(argv: list[str], env: dict[str, str] | None = None, capture: bool = False) -> str:
    print(
        f"\n$ {' '.join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))}",
        flush=True,
    )
    result = subprocess.run(
        argv, env={**os.environ, **(env or {})}, text=True, capture_output=capture, timeout=900
    )
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if capture else []
        raise UserError(f"{Path(argv[0]).name} failed: {' '.join(detail) or 'see above'}")
    if capture:
        print(result.stdout, end="")
    return result.stdout or ""


def start_hub(data_dir: Path, port: int, listen: str) -> str:
    """Start the hub in the background unless this data dir's hub already answers."""
    url = endpoint_url(data_dir)
    if healthy(url):
        print(f"hub already running at {url}")
        return str(url)
    hub = HubProcess(data_dir, port, listen=[listen], log_level="info")
    print(f"\n$ {' '.join(['aiorch', *hub.argv()[1:]])} &")
    hub.start(detach=True)
    return hub.url


def demo_up(data_dir: Path, lab_name: str, hosts: int, port: int) -> None:
    aiorch = str(BIN / "aiorch")
    lab = Lab(lab_name)
    _show([aiorch, "lab", "up", "--hosts", str(hosts), "--name", lab_name])
    hub_on_lab = f"{lab.gateway}:{port}"
    url = start_hub(data_dir, port, hub_on_lab)
    env = {"AIORCH_DATA_DIR": str(data_dir)}
    _show([aiorch, "inventory", "import", str(lab.inventory_path)], env)
    _show([aiorch, "hosts", "list"], env)
    created = json.loads(
        _show(
            [
                aiorch,
                "enroll-token",
                "create",
                "--site",
                "hub-local",
                "--ttl",
                "1h",
                "--output",
                "json",
            ],
            env,
            capture=True,
        )
    )
    agent_config = data_dir / "agent.yaml"
    agent_config.write_text(
        f"hub_url: {url}\nstate_dir: {data_dir / 'agent-state'}\ngpu_backend: simulated:1xL4-24GB\n"
    )
    agent = str(BIN / "aiorch-agent")
    state = data_dir / "agent-state" / "credential.json"
    if not state.exists():
        _show(
            [
                agent,
                "enroll",
                "--hub",
                url,
                "--token",
                created["token"],
                "--config",
                str(agent_config),
            ]
        )
    _show([agent, "run", "--once", "--config", str(agent_config)])
    _show([aiorch, "agents", "list"], env)
    _show([aiorch, "status"], env)
    print(
        f"\nThe hub runs at {url} (lab hosts reach it at http://{hub_on_lab}).\n"
        f"Try: AIORCH_DATA_DIR={data_dir} aiorch hosts list    |    "
        f"ansible all -i {lab.inventory_path} -m ping\n"
        "Remove everything the demo made: make demo-down"
    )


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
