"""Benchmark: the edge agent's footprint (resident memory, CPU) against a real hub.

A hub (`aiorch hub serve --poll-interval 10`) and `aiorch-agent run` with the simulated
8xH100-80GB profile run for a measured window (60 s, about 6 rounds) after the first round has
arrived. Baseline measured in the same run: a bare python3 that only imports the third-party
packages the agent loads (yaml, psutil, cryptography for its key and certificate; it talks
HTTPS with the standard library's ssl and http.client and reads links from sysfs) and sleeps.

The dev venv also holds the hub's extras; an edge box has only the base install. So the same
pair (agent and baseline) also runs from a view holding only the base install's packages, as
`pip install aiorch` would leave them on an edge box. Goals (both views): at most 40 MB RSS
and 1 % of one core; the exit status is 1 when one is missed.

Run: `.venv/bin/python benchmarks/bench_agent_footprint.py [--seconds 60]`. Every process it
starts is stopped, and its temporary directory removed, before it exits.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from _agents import hub_tls

GOAL_RSS_MB = 40.0
GOAL_CPU_PCT = 1.0
PROFILE = "simulated:8xH100-80GB"
POLL_INTERVAL_S = 10
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
BASELINE = (
    "import yaml, psutil, ssl, http.client, time; from cryptography import x509; "
    "from cryptography.hazmat.primitives.asymmetric import ec; "
    "print('ready', flush=True); time.sleep(1e6)"
)
# What the `aiorch-agent` console script runs, for the base-install view (no console script).
AGENT_MAIN = "import sys; from edge_agent.cli import main; sys.exit(main())"
RUN = ["run", "--log-level", "warning", "--config"]


@dataclass
class Figures:
    rss_max_mb: float  # the peak, start-up included
    rss_end_mb: float  # at the end of the window: the steady state
    cpu_pct: float


class Processes:
    """Everything the benchmark starts, stopped (TERM, then KILL) however it ends."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def start_hub(procs: Processes, data: Path) -> str:
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    argv = [str(BIN / "aiorch"), "hub", "serve", "--data-dir", str(data), "--port", str(port)]
    argv += ["--poll-interval", str(POLL_INTERVAL_S), "--log-level", "warning"]
    hub = procs.start("hub", argv)

    def healthy() -> bool:
        if hub.poll() is not None:
            raise RuntimeError(f"hub exited with {hub.returncode}; see {procs.logs / 'hub.log'}")
        if not (data / "ca.pem").exists():
            return False  # not yet made on first start
        try:
            verify = hub_tls(data / "ca.pem")
            return httpx.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the hub", healthy)
    return url


def enroll(url: str, ca: Path, admin_token: str, agent_cmd: list[str], workdir: Path) -> Path:
    """An enrolled agent config in `workdir`, through the hub's API and the agent's CLI (the
    token carries the hub's CA pin)."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    reply = httpx.post(
        f"{url}/api/v1/enroll-tokens",
        json={"site": "bench"},
        headers=headers,
        timeout=30,
        verify=hub_tls(ca),
    )
    reply.raise_for_status()
    config = workdir / "agent.yaml"
    workdir.mkdir()
    config.write_text(
        yaml.safe_dump(
            {"hub_url": url, "state_dir": str(workdir / "state"), "gpu_backend": PROFILE}
        )
    )
    argv = [*agent_cmd, "enroll", "--hub", url, "--config", str(config)]
    token = reply.json()["token"]
    done = subprocess.run(argv, input=token, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"enroll failed: {done.stderr}")
    return config


def edge_view(root: Path) -> Path:
    """A directory of links to the base install's packages only: aiorch's requirements outside
    any extra, and theirs, found through the installed distributions' metadata."""
    site = Path(str(distribution("psutil").locate_file("")))
    view = root / "edge-site"
    view.mkdir()
    (view / "edge_agent").symlink_to(REPO / "edge_agent")
    todo, seen = ["aiorch"], set()
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # required only on other Python versions
        todo += [_name(r) for r in dist.requires or [] if "extra ==" not in r]
        if name == "aiorch":
            continue  # the hub's code is not on an edge box; edge_agent is linked above
        # __pycache__ too: without it single-file modules (pynvml.py is 200 kB) would be compiled
        # afresh in the agent, and the compiler's memory would count as the agent's.
        for top in {Path(f).parts[0] for f in dist.files or []} - {".."}:
            skip = top.endswith((".dist-info", ".pth")) or (view / top).exists()
            if not skip and (site / top).exists():
                (view / top).symlink_to(site / top)
    return view


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return match[0]


def vm_hwm_mb(pid: int) -> float:
    """The kernel's peak resident set size for `pid` (VmHWM), so no short peak is missed."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match is not None
    return int(match[1]) / 1024


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def measure(pids: dict[str, int], seconds: float) -> dict[str, Figures]:
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    start_cpu = {name: cpu_seconds(p) for name, p in procs.items()}
    start = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - start
    return {
        name: Figures(
            vm_hwm_mb(p.pid),
            p.memory_info().rss / 2**20,
            100 * (cpu_seconds(p) - start_cpu[name]) / wall,
        )
        for name, p in procs.items()
    }


def hub_report(db_path: Path) -> str:
    """What the agent sent, read from the hub's database (its schema is the hub's business, so
    a change there costs this report, not the measurement)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    per_metric = (
        "SELECT json_extract(r.labels, '$.collector'), COUNT(*), AVG(s.value) * 1000 "
        "FROM samples s JOIN series r ON r.id = s.series_id WHERE r.metric = ? GROUP BY 1"
    )
    try:
        samples = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        [(_, rounds, _)] = db.execute(per_metric, ["agent_cpu_seconds_total"]).fetchall()
        costs = db.execute(per_metric, ["agent_collector_duration_seconds"]).fetchall()
    except (sqlite3.Error, ValueError) as exc:
        return f"  (cannot read the hub's database: {exc})"
    finally:
        db.close()
    spent = ", ".join(f"{name} {ms:.1f} ms" for name, _, ms in costs)
    return (
        f"  {samples} samples in {rounds} rounds ({samples / max(rounds, 1):.0f} per round)\n"
        f"  collection time per round, as the agent reports it: {spent}"
    )


@contextmanager
def running() -> Iterator[tuple[Processes, Path]]:
    with tempfile.TemporaryDirectory(prefix="aiorch-bench-agent-") as tmp:
        procs = Processes(Path(tmp))
        try:
            yield procs, Path(tmp)
        finally:
            procs.stop_all()


def outbox_state(outbox: Path) -> tuple[int, int]:
    """(samples written, samples waiting) in the agent's outbox; (0, 0) until it has any."""
    if not outbox.exists():
        return 0, 0
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        query = "SELECT next_seq, count FROM epochs ORDER BY id DESC LIMIT 1"
        row = db.execute(query).fetchone()
    except sqlite3.OperationalError:  # created a moment ago, no tables yet
        row = None
    finally:
        db.close()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def run_view(
    procs: Processes,
    name: str,
    agent_cmd: list[str],
    python: list[str],
    config: Path,
    env: dict[str, str] | None,
    seconds: float,
) -> tuple[Figures, Figures]:
    """The agent and the baseline side by side in one view: (agent, baseline). The window
    starts once the agent's first round is at the hub, so start-up is in RSS but not in CPU."""
    outbox = config.parent / "state" / "outbox.db"
    written_before, _ = outbox_state(outbox)
    agent = procs.start(f"{name}-agent", [*agent_cmd, *RUN, str(config)], env)
    baseline = procs.start(f"{name}-baseline", [*python, "-c", BASELINE], env)

    def first_round_stored() -> bool:
        for label, proc in ((f"{name}-agent", agent), (f"{name}-baseline", baseline)):
            if proc.poll() is not None:
                tail = (procs.logs / f"{label}.log").read_text()[-2000:]
                raise RuntimeError(f"{label} exited with {proc.returncode}:\n{tail}")
        written, waiting = outbox_state(outbox)
        return written > written_before and waiting == 0

    wait_for(f"the {name} agent's first round at the hub", first_round_stored)
    figures = measure({"agent": agent.pid, "baseline": baseline.pid}, seconds)
    procs.stop_all()
    return figures["agent"], figures["baseline"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per view")
    args = parser.parse_args()
    views = {}
    with running() as (procs, tmp):
        hub = Processes(tmp)  # outlives each view's processes
        try:
            url = start_hub(hub, tmp / "hub")
            admin = (tmp / "hub" / "admin.token").read_text().strip()
            edge_env = {"PYTHONPATH": str(edge_view(tmp)), "PATH": "/usr/bin:/bin"}
            ca = tmp / "hub" / "ca.pem"
            config = enroll(url, ca, admin, [str(BIN / "aiorch-agent")], tmp / "agent")
            print(
                f"hub {url}, poll interval {POLL_INTERVAL_S} s, {PROFILE}, "
                f"window {args.seconds:.0f} s per view"
            )
            views["dev venv (with the hub's extras)"] = run_view(
                procs,
                "dev",
                [str(BIN / "aiorch-agent")],
                [sys.executable],
                config,
                None,
                args.seconds,
            )
            edge_python = [sys.executable, "-S"]
            views["base install only (an edge box)"] = run_view(
                procs,
                "edge",
                [*edge_python, "-c", AGENT_MAIN],
                edge_python,
                config,
                edge_env,
                args.seconds,
            )
            report = hub_report(tmp / "hub" / "aiorch.db")
        finally:
            hub.stop_all()

    ok = True
    print(f"{'':30}{'RSS max':>10}{'RSS at end':>12}{'CPU, % of a core':>18}")
    for view, (agent, baseline) in views.items():
        print(f"{view}:")
        for name, f in (("baseline (imports only)", baseline), ("aiorch-agent run", agent)):
            print(f"  {name:28}{f.rss_max_mb:7.1f} MB{f.rss_end_mb:9.1f} MB{f.cpu_pct:15.2f} %")
        print(
            f"  agent/baseline RSS max {agent.rss_max_mb / baseline.rss_max_mb:.2f}x "
            f"(+{agent.rss_max_mb - baseline.rss_max_mb:.1f} MB)"
        )
        met = agent.rss_max_mb <= GOAL_RSS_MB and agent.cpu_pct <= GOAL_CPU_PCT
        ok = ok and met
        print(
            f"  goals RSS max <= {GOAL_RSS_MB:.0f} MB, CPU <= {GOAL_CPU_PCT:.0f} %: "
            f"{'met' if met else 'MISSED'}"
        )
    print("what the agent sent (from the hub's database):")
    print(report)
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
