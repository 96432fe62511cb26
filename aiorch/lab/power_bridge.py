"""The lab's wire from a simulated BMC to a simulated machine: sushy-emulator's external
notifier PUTs each system's record here, and a change of its power state (requested or
applied) turns the machine (a QEMU VM, aiorch/lab/metal.py) on or off.

The fake driver never learns that a machine powered itself off (the ramdisk's `poweroff`):
the lab tells it back with a Reset ForceOff (SushyEmulator.force_off), and the repeat that
this causes is ignored here like any other.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("aiorch.lab.power")

PowerHandler = Callable[[str, bool], None]  # (system uuid, on?)


class PowerBridge:
    """An HTTP receiver on 127.0.0.1 for the notifier; `on_power(uuid, on)` runs once per
    change of a system's applied power state, in the order the changes came, and a reset
    (ForceRestart) of a running system is an off and then an on."""

    def __init__(self, on_power: PowerHandler) -> None:
        self._on_power = on_power
        self._known: dict[str, bool] = {}
        self._restarts: dict[str, str] = {}  # the reset request each system last acted on
        self._lock = threading.Lock()
        self.errors: list[str] = []  # what a handler raised, for the test to show
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/notify"

    def start(self) -> PowerBridge:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> PowerBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def seen(self, uuid: str, on: bool) -> None:
        """Record a state the machine reached by itself, so that the BMC's echo of it is no
        change (the VM exited, and the lab then told the BMC so)."""
        with self._lock:
            self._known[uuid] = on

    def notified(self, record: dict[str, object]) -> None:
        # A request shows first as `pending_power` (the fake applies it 1-11 s later, when
        # next read); a real machine starts on the request, so the lab does too.
        pending = record.get("pending_power")
        target = pending.get("power_state") if isinstance(pending, dict) else None
        uuid, state = str(record.get("uuid", "")), target or record.get("power_state")
        if not uuid:
            return
        if isinstance(state, str) and "Restart" in state:
            # A reset of a running machine: off, then on again. The record is re-sent while
            # the request waits (a boot-device change, say), so each request acts once.
            self._restart(uuid, str(pending.get("apply_time") if isinstance(pending, dict) else ""))
        elif state in ("On", "Off"):
            self._apply(uuid, [state == "On"])

    def _restart(self, uuid: str, request: str) -> None:
        with self._lock:
            if self._restarts.get(uuid) == request:
                return
            self._restarts[uuid] = request
        self._apply(uuid, [False, True])

    def _apply(self, uuid: str, steps: list[bool]) -> None:
        with self._lock:  # one change at a time: an Off never overtakes the On before it
            for on in steps:
                if self._known.get(uuid) == on:
                    continue
                self._known[uuid] = on
                log.info("lab BMC: system %s powered %s", uuid, "On" if on else "Off")
                try:
                    self._on_power(uuid, on)
                except Exception as exc:
                    self.errors.append(f"{uuid} {'On' if on else 'Off'}: {exc}")
                    log.exception("lab BMC: powering %s failed", uuid)
                    return

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    record = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self.send_error(400, "not JSON")
                    return
                if isinstance(record, dict):
                    bridge.notified(record)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                """Quiet: the bridge logs the changes that matter."""

        return Handler
