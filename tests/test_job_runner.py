"""Jobs on a real podman: the agent's job runner starts attempts, journals them, takes their
logs and artifacts, enforces maxDuration and the hub's stop, fences attempts the hub dropped,
and picks up where it was after a restart.

The image is the lab payload (as in tests/test_workloads.py), running shell one-liners. The
hub's side of an upload is a function here (the route is tested in test_job_artifacts.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiorch.wait import wait_until
from edge_agent.client import HubUnavailable
from edge_agent.contract.job import JobRun, job_entry
from edge_agent.contract.workload import Image
from edge_agent.digest import sha256_file
from edge_agent.jobs import JobRunner
from edge_agent.workloads import Podman
from edge_agent.workloads.images import ImageCache
from edge_agent.workloads.models import ModelCache
from tests.test_workloads import (  # noqa: F401  (payloads is a fixture)
    PODMAN_ARGS,
    RUN_ARGS,
    Payload,
    _remove_images,
    payloads,
    place,
    podman,
    remove_owned,
)

pytestmark = pytest.mark.lab


class FakeHub:
    """The hub's artifact store, as the runner's upload function sees it; `away` cuts it."""

    def __init__(self) -> None:
        self.away = False
        self.stored: dict[str, bytes] = {}

    def __call__(self, attempt: str, sha256: str, path: Path) -> None:
        if self.away:
            raise HubUnavailable("hub unreachable: test cut")
        data = path.read_bytes()
        assert sha256_file(path) == sha256
        self.stored[sha256] = data


class Clock:
    """Wall-clock time that a test may push forward."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


MakeRunner = Callable[..., JobRunner]


@pytest.fixture
def make_runner(tmp_path: Path, payloads: dict[str, Payload]) -> Iterator[MakeRunner]:  # noqa: F811
    """`make(state, **kw)` -> a job runner on state dir `state` (made under tmp_path, its
    image cache holding the payload archive); the same `state` again is a restarted agent."""
    owners = set()

    def make(state: str = "agent", **kw: Any) -> JobRunner:
        where = tmp_path / state
        payload = payloads["v1"]
        archive = where / "images" / f"{payload.digest[7:]}.tar"
        if not archive.exists():
            place(payload.path, archive)
        images = ImageCache(where / "images", Podman(PODMAN_ARGS), None)
        models = ModelCache(where / "models", None)
        runner = JobRunner(
            where, Podman(PODMAN_ARGS), images, models, RUN_ARGS, image_wait_s=60, **kw
        )
        owners.add(runner.owner)
        return runner

    yield make
    for owner in owners:
        remove_owned(owner)
    _remove_images(payloads)


def job(payload: Payload, attempt: str, script: str, **extra: Any) -> dict[str, Any]:
    """A desired attempt in the hub's format, running `script` with sh."""
    fields: dict[str, Any] = {
        "attempt": attempt,
        "job": attempt.split(".")[0],
        "project": "jobtest",
        "image": Image(payload.ref, payload.digest, payload.size),
        "command": ("sh", "-c"),
        "args": (script,),
        "env": {"GREETING": "hello"},
        "secret_env": {},
        "volumes": (),
        "gpus": (),
        "simulated_gpus": 0,
        "cpu": None,
        "memory_mib": None,
        "max_duration_s": 600,
        "artifacts": (),
        "site_artifact_limit_bytes": 1024,
        "grace_s": 1,
        **extra,
    }
    return job_entry(JobRun(**fields))


def settle(
    runner: JobRunner, document: dict, done: Callable[[dict], bool], what: str
) -> dict[str, dict]:
    """Run passes until `done(reports)`."""

    def attempt() -> dict[str, dict] | None:
        reports = runner.run(document)
        return reports if done(reports) else None

    return wait_until(attempt, timeout=90, interval=0.3, what=what)


def states(reports: dict[str, dict]) -> dict[str, str]:
    return {attempt: r["state"] for attempt, r in reports.items()}


def exists(name: str) -> bool:
    return podman("container", "exists", name, check=False).returncode == 0


def test_jobs_end_with_exit_codes_logs_and_artifacts_and_survive_a_restart(
    make_runner: MakeRunner,
    payloads: dict[str, Payload],  # noqa: F811
):
    hub = FakeHub()
    hub.away = True
    runner = make_runner(upload=hub)
    v1 = payloads["v1"]
    document = {
        "jobs": [
            job(
                v1,
                "ok.1",
                "echo $GREETING; mkdir -p /out; echo result > /out/r.txt; head -c 4096 /dev/zero"
                " > /out/big.bin",
                artifacts=("/out/r.txt", "/out/big.bin", "/out/missing"),
                simulated_gpus=2,
            ),
            job(v1, "bad.1", "echo broken >&2; exit 3"),
            job(v1, "late.1", "sleep 6; echo done; exit 7"),
        ]
    }
    first = settle(
        runner,
        document,
        lambda r: r.get("bad.1", {}).get("state") == "exited" and "uploading" in str(r["ok.1"]),
        "bad.1 to exit and ok.1 to wait for the hub",
    )
    assert first["bad.1"]["exit_code"] == 3
    assert "broken" in first["bad.1"]["log_tail"]
    withheld = first["ok.1"]
    assert withheld["state"] == "running" and withheld["artifacts"] == [], "held until uploaded"
    assert "simulated GPUs: ran without devices" in withheld["reason"]
    assert not exists("aiorch-job-ok.1"), "the ended container is removed"

    # The agent restarts (a new runner on the same state dir) while late.1 runs on; the hub
    # comes back. late.1 ends while no runner watches: its real exit code is reported.
    podman("wait", "aiorch-job-late.1", check=False)
    hub.away = False
    restarted = make_runner(upload=hub)
    reports = settle(
        restarted,
        document,
        lambda r: states(r) == {"ok.1": "exited", "bad.1": "exited", "late.1": "exited"},
        "every job to be reported exited",
    )
    ok, late = reports["ok.1"], reports["late.1"]
    assert ok["exit_code"] == 0 and ok["log_tail"] == "hello\n"
    small, big = ok["artifacts"]
    assert (small["path"], small["location"], small["size"]) == ("/out/r.txt", "hub", 7)
    assert hub.stored[small["sha256"]] == b"result\n"
    assert (big["location"], big["size"]) == ("site", 4096), "over the site's limit"
    assert Path(big["site_path"]).read_bytes() == bytes(4096)
    assert big["sha256"] not in hub.stored
    assert "artifact /out/missing not collected" in ok["reason"]
    assert (late["exit_code"], late["log_tail"]) == (7, "done\n")
    assert late["finished_at"] - late["started_at"] >= 5
    assert reports["bad.1"]["seq"] == first["bad.1"]["seq"], "the same content, the same seq"

    again = make_runner(upload=hub).run(document)
    assert again == reports, "a restart reports the same seqs"
    journal = json.loads((restarted.journals.path("ok.1")).read_text())
    assert [t["to"] for t in journal["transitions"]] == ["running", "exited"]


def test_max_duration_cancel_and_dropped_attempts_stop_their_containers(
    make_runner: MakeRunner,
    payloads: dict[str, Payload],  # noqa: F811
):
    clock = Clock()
    runner = make_runner(clock=clock)
    v1 = payloads["v1"]
    stubborn = "trap '' TERM; sleep 300 & wait"  # only the SIGKILL after grace_s ends it
    polite = "trap 'exit 143' TERM; sleep 300 & wait"
    limited = job(v1, "limited.1", stubborn, max_duration_s=30, grace_s=30)
    cancelled = job(v1, "cancelled.1", polite)
    dropped = job(v1, "dropped.1", polite)
    settle(
        runner,
        {"jobs": [limited, cancelled, dropped]},
        lambda r: set(states(r).values()) == {"running"},
        "every sleeper to run",
    )
    clock.ahead = 31  # past limited.1's maxDuration; the hub cancels one and drops another
    document = {"jobs": [limited, {**cancelled, "stop": "cancel"}]}
    reports = runner.run(document)
    assert not exists("aiorch-job-dropped.1"), "an attempt no longer desired is stopped"
    assert "dropped.1" not in reports
    reports = settle(
        runner, document, lambda r: r["cancelled.1"]["state"] == "stopped", "the cancel"
    )
    assert reports["cancelled.1"]["reason"] == "stopped by the hub (cancel)"
    assert reports["limited.1"]["state"] == "running", "TERM ignored, grace not over"
    assert reports["cancelled.1"]["exit_code"] == 143
    clock.ahead = 62  # limited.1's grace is over: SIGKILL
    reports = settle(
        runner, document, lambda r: r["limited.1"]["state"] == "timed_out", "the timeout"
    )
    assert reports["limited.1"]["reason"] == "ran past maxDuration (30s)"
    assert reports["limited.1"]["exit_code"] == 137
    assert not exists("aiorch-job-limited.1") and not exists("aiorch-job-cancelled.1")
    assert "dropped.1" not in runner.run(document), "a fenced attempt is never reported"
