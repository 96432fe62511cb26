"""A model to the edge on a provisioned lab, through a cut in the middle of its download.

The test generates a model (a large random file and the weights.json the payload's /predict
reads), pushes it with `aiorch model push`, and deploys the lab payload naming it. As soon as
one edge host's agent has part of the large file, the host is cut off; after the heal the
agent resumes with a Range request. The bytes that came over the wire stay under 1.3x the
file's size, the file verifies, the replica starts with the model mounted read-only, its
/predict answers with the generated weights, and the host reports the model it holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from aiorch.lab import wait_until
from aiorch.lab.payload import deployment_spec
from tests.fixtures_provision import ProvisionLab
from tests.test_serving_lab import (  # noqa: F401 (converged and image are fixtures)
    EDGES,
    answers,
    apply,
    converged,
    image,
    serving,
)

pytestmark = pytest.mark.lab

CACHE = "/var/lib/aiorch/models"
BIG = 192 << 20
WEIGHTS = {"weights": [0.5, 0.25, -1.0, 2.0], "bias": 0.125}
DEADLINE = 300.0


def _model(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "weights.bin").open("wb") as fh:
        for _ in range(BIG >> 20):
            fh.write(os.urandom(1 << 20))
    (directory / "weights.json").write_text(json.dumps(WEIGHTS))
    return directory


def _on_host(lab: ProvisionLab, host: str, path: str) -> Path:
    """A path inside a lab host, read from this machine (no exec: fast enough to catch a
    download in the middle)."""
    return Path(f"/proc/{lab.lab.pid(host)}/root") / path.lstrip("/")


def test_a_model_arrives_through_a_cut_and_serves(
    converged: ProvisionLab,  # noqa: F811
    image: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    lab, host = converged, EDGES[0]
    pushed = lab.hub.cli_json("model", "push", str(_model(tmp_path / "m")), "--name", "lab-w")
    digest, hexdigest = pushed["digest"], pushed["digest"].removeprefix("sha256:")
    partial = _on_host(lab, host, f"{CACHE}/.incoming/{hexdigest}/weights.bin.partial")
    meta = partial.with_name("weights.bin.partial.json")
    text = deployment_spec(image, model=("lab-w", digest))
    apply(lab, text)

    def started() -> int | None:
        try:
            size = partial.stat().st_size
        except OSError:
            return None
        return size if size > 0 else None

    at_cut = wait_until(started, timeout=DEADLINE, what="the download under way", interval=0.005)
    lab.lab.faults.cut(host)
    try:
        # The agent gives the try up once a read times out (request_timeout_s) and notes what
        # came so far beside the partial file: only then is the cut one it must resume from.
        wait_until(meta.exists, timeout=120, what=f"{host}'s agent giving the download up")
        cut_short = partial.stat().st_size
        assert at_cut <= cut_short < BIG, "the cut came in the middle of the download"
    finally:
        lab.lab.faults.heal(host)

    serving(lab, text, EDGES)
    transfers: dict[str, Any] = json.loads(
        _on_host(lab, host, f"{CACHE}/.transfers.json").read_text()
    )
    record = transfers[f"{hexdigest}/weights.bin"]
    assert record["resumed"] and record["size"] == BIG
    assert record["received"] < 1.3 * BIG, record
    held = _on_host(lab, host, f"{CACHE}/{hexdigest}")
    assert (held / "weights.bin").read_bytes() == (tmp_path / "m" / "weights.bin").read_bytes()

    for edge in EDGES:
        answer = answers(lab, edge)
        assert answer is not None, edge
        assert answer["weights"] == WEIGHTS["weights"] and answer["bias"] == WEIGHTS["bias"]

    def reported() -> list[str] | None:
        hosts = {h["name"]: h for h in lab.hub.admin.get("/hosts").json()}
        return hosts[host]["models"] if digest in hosts[host]["models"] else None

    wait_until(reported, timeout=120, what=f"{host} reporting model {digest[:19]}")
    site = next(s for s in lab.hub.admin.get("/status").json()["sites"] if digest in s["models"])
    assert site["models"]
