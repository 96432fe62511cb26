"""The lab's model server: a fixed-weight logistic regression behind stdlib HTTP.

It stands in for a real model-serving container, small enough to build without a registry:
`GET /healthz` answers 200 `{"status": "ok"}`, and `POST /predict` with `{"features": [4
numbers]}` answers `{"score": p, "model": VERSION, "weights": [...], "bias": b}`. A version
named `*-broken` answers 500 on `/healthz` while still predicting, so a rollout of it can be
seen failing its health checks. With `MODEL_DIR` set, the weights come from
`MODEL_DIR/weights.json` (`{"weights": [4 numbers], "bias": b}`), a model the agent fetched
from the hub and mounted read-only: that is how the lab proves the model path end to end.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = os.environ.get("AIORCH_MODEL_VERSION", "v1")
HEALTHY = not VERSION.endswith("-broken")
PORT = int(os.environ.get("PORT", "8080"))
MODEL_DIR = os.environ.get("MODEL_DIR")
MAX_BODY = 64 * 1024


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


class Handler(BaseHTTPRequestHandler):
    server_version = "aiorch-model"

    def do_GET(self) -> None:
        if self.path != "/healthz":
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
            features = json.loads(self.rfile.read(length))["features"]
            numbers = [float(x) for x in features]
            if len(numbers) != len(WEIGHTS) or not all(map(math.isfinite, numbers)):
                raise ValueError
        except (ValueError, TypeError, KeyError):
            self._answer(400, {"error": f"features must be {len(WEIGHTS)} finite numbers"})
            return
        answer = {"score": score(numbers), "model": VERSION, "weights": list(WEIGHTS)}
        self._answer(200, {**answer, "bias": BIAS})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
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
