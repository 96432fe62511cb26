"""The lab's model server: a fixed-weight logistic regression behind stdlib HTTP.

It stands in for a real model-serving container, small enough to build without a registry:
`GET /healthz` answers 200 `{"status": "ok"}`, and `POST /predict` with `{"features": [4
numbers]}` answers `{"score": p, "model": VERSION, "weights": [...], "bias": b}`. A version
named `*-broken` answers 500 on `/healthz` while still predicting, so a rollout of it can be
seen failing its health checks. With `MODEL_DIR` set, the weights come from
`MODEL_DIR/weights.json` (`{"weights": [4 numbers], "bias": b}`), a model the agent fetched
from the hub and mounted read-only: that is how the lab proves the model path end to end.
`GET /metrics` gives, in Prometheus text, `aiorch_model_requests_in_flight`: the predictions
being answered right now, what the lab autoscales on. A prediction with `"hold_s": N` (0 to
`MAX_HOLD_S`) is answered only after N seconds, or dropped as soon as its client hangs up:
that is how a test holds load open, and ends it.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = os.environ.get("AIORCH_MODEL_VERSION", "v1")
HEALTHY = not VERSION.endswith("-broken")
PORT = int(os.environ.get("PORT", "8080"))
MODEL_DIR = os.environ.get("MODEL_DIR")
MAX_BODY = 64 * 1024
MAX_HOLD_S = 300.0
IN_FLIGHT = "aiorch_model_requests_in_flight"


def load_weights() -> tuple[tuple[float, ...], float]:
    """The built-in weights, or those of the mounted model (which must then be readable)."""
    if not MODEL_DIR:
        return (0.8, -0.4, 0.25, 1.1), -0.3
    with open(os.path.join(MODEL_DIR, "weights.json")) as fh:
        data = json.load(fh)
    weights = tuple(float(w) for w in data["weights"])
    if len(weights) != 4:
        raise ValueError("weights.json must hold 4 weights")
    return weights, float(data.get("bias", 0.0))


WEIGHTS, BIAS = load_weights()


def score(features: list[float]) -> float:
    z = BIAS + sum(w * x for w, x in zip(WEIGHTS, features, strict=True))
    return 1.0 / (1.0 + math.exp(-z))


class InFlight:
    """Predictions being answered, counted across the server's threads."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self, delta: int) -> None:
        with self._lock:
            self.count += delta


IN_FLIGHT_NOW = InFlight()


def metrics_page() -> str:
    return (
        f"# HELP {IN_FLIGHT} Predictions being answered right now.\n"
        f"# TYPE {IN_FLIGHT} gauge\n"
        f'{IN_FLIGHT}{{model="{VERSION}"}} {IN_FLIGHT_NOW.count}\n'
    )


class Handler(BaseHTTPRequestHandler):
    server_version = "aiorch-model"

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, metrics_page().encode(), "text/plain; version=0.0.4")
        elif self.path != "/healthz":
            self._answer(404, {"error": "not found"})
        elif HEALTHY:
            self._answer(200, {"status": "ok"})
        else:
            self._answer(500, {"status": "broken", "model": VERSION})

    def do_POST(self) -> None:
        if self.path != "/predict":
            self._answer(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413, {"error": "body too large"})
            return
        try:
            body = json.loads(self.rfile.read(length))
            numbers = [float(x) for x in body["features"]]
            if len(numbers) != len(WEIGHTS) or not all(map(math.isfinite, numbers)):
                raise ValueError
        except (ValueError, TypeError, KeyError):
            self._answer(400, {"error": f"features must be {len(WEIGHTS)} finite numbers"})
            return
        hold = body.get("hold_s", 0)
        if isinstance(hold, bool) or not isinstance(hold, int | float):
            hold = -1
        if not 0 <= hold <= MAX_HOLD_S:
            self._answer(400, {"error": f"hold_s must be a number of seconds, 0 to {MAX_HOLD_S:g}"})
            return
        IN_FLIGHT_NOW.add(1)
        try:
            if not self._held(hold):
                return  # nobody left to answer
            answer = {"score": score(numbers), "model": VERSION, "weights": list(WEIGHTS)}
            self._answer(200, {**answer, "bias": BIAS})
        finally:
            IN_FLIGHT_NOW.add(-1)

    def _held(self, seconds: float) -> bool:
        """Wait `seconds`; False as soon as the client hangs up (its socket reads EOF)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.5))
            if readable:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    return False
                time.sleep(min(left, 0.5))  # it sent more; nothing to read here
        return True

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # a health probe every few seconds is not worth a log line


def main() -> None:
    # PID 1 in a container ignores SIGTERM unless it asks for it: without this, every stop
    # waits out podman's timeout and ends in SIGKILL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    print(f"aiorch-model {VERSION} listening on :{PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
