"""A hub in its own process: start `aiorch hub serve`, wait until it answers, stop or kill it.

Used by the demo (detached, outliving the command), by the tests and by the benchmarks, so
there is one way to run a hub from Python.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from aiorch.endpoint import CA_FILE, hub_tls
from aiorch.errors import UserError
from aiorch.wait import wait_until

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str | None, ca: Path) -> bool:
    """The hub at `url` answers /healthz, verified against the CA bundle `ca`."""
    if not url or not ca.exists():
        return False
    try:
        return httpx.get(f"{url}/healthz", timeout=1, verify=hub_tls(ca)).status_code == 200
    except httpx.HTTPError:
        return False


class HubProcess:
    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        poll_interval: float = 30.0,
        listen: list[str] | None = None,
        log_level: str = "warning",
        repo_dir: Path | None = None,
        serve_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.poll_interval = poll_interval
        self.listen = listen or []
        self.log_level = log_level
        self.repo_dir = repo_dir
        self.serve_args = list(serve_args)  # more `aiorch hub serve` options
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "hub.log"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        """The hub's CA bundle (DATA_DIR/ca.pem), what clients verify it by."""
        return self.data_dir / CA_FILE

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def argv(self) -> list[str]:
        argv = [str(BIN / "aiorch"), "hub", "serve", "--data-dir", str(self.data_dir)]
        argv += ["--port", str(self.port), "--poll-interval", str(self.poll_interval)]
        argv += ["--log-level", self.log_level]
        for address in self.listen:
            argv += ["--listen", address]
        if self.repo_dir is not None:
            argv += ["--repo-dir", str(self.repo_dir)]
        return argv + self.serve_args

    def start(self, *, detach: bool = False, timeout: float = 60) -> HubProcess:
        """Start and wait for /healthz; `detach` lets the hub outlive this Python process."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=detach
            )
        wait_until(self._up, timeout=timeout, what=f"hub on {self.url} (log: {self.log})")
        return self

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text()[-2000:]
            raise UserError(f"hub exited with {self.proc.returncode}: {tail.strip()}")
        return healthy(self.url, self.ca_path)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None
