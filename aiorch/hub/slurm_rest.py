"""The hub's client for slurmrestd, as a `ClusterBackend`.

slurmrestd speaks plain HTTP and listens on the controller's loopback only (the role binds
it there), so nothing on the network can reach it. The hub reaches it through an SSH session
with the controller, logged in the way Ansible logs in (keys, jump hosts, pinned host keys),
each request on its own forwarded channel. Requests carry a JWT the hub mints from the
cluster's key for a few minutes, for the job user (`sun`): no token is stored.

Job output is a file on the job's batch host (`<output_dir>/<id>.out`): read over SFTP.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import jwt
import paramiko

from aiorch.hub.context import HubContext
from aiorch.hub.services import clusters
from aiorch.hub.services.clusters import Cluster
from aiorch.hub.services.preflight import LoginFailed, open_session
from aiorch.jobs.slurm import API, ClusterError, ClusterJob, submission
from aiorch.jobs.spec import JobSpec
from edge_agent.contract.job import LOG_TAIL_BYTES

TOKEN_LIFETIME_S = 300
Hostvars = Callable[[set[str]], Mapping[str, Mapping[str, Any]]]


class _ChannelConnection(http.client.HTTPConnection):
    """HTTP/1.1 over an SSH channel forwarded to the controller's loopback."""

    def __init__(self, channel: paramiko.Channel, port: int) -> None:
        super().__init__("127.0.0.1", port)
        self._channel = channel

    def connect(self) -> None:
        self.sock = self._channel


class SlurmBackend:
    """One Slurm cluster; `hostvars` says how to log in to its hosts."""

    def __init__(self, cluster: Cluster, key: bytes, hostvars: Hostvars, timeout: float) -> None:
        self.name = cluster.name
        self.cluster, self._key, self.hostvars, self.timeout = cluster, key, hostvars, timeout

    @contextmanager
    def session(self) -> Iterator[_Api]:
        with ExitStack() as stack:
            api = _Api(self, self.hostvars(set(self.cluster.hosts)), stack)
            try:
                api.login(self.cluster.controller)
            except (LoginFailed, OSError, paramiko.SSHException) as exc:
                raise ClusterError(f"cannot reach the controller: {exc}") from None
            yield api

    def token(self) -> str:
        now = int(time.time())
        claims = {"iat": now, "exp": now + TOKEN_LIFETIME_S, "sun": self.cluster.job_user}
        return jwt.encode(claims, self._key, algorithm="HS256")


class _Api:
    """One pass's conversation: the hosts' vars merged once, one SSH session per host."""

    def __init__(
        self, backend: SlurmBackend, hostvars: Mapping[str, Mapping[str, Any]], stack: ExitStack
    ) -> None:
        self._backend, self._hostvars, self._stack = backend, hostvars, stack
        self._cluster = backend.cluster
        self._sessions: dict[str, paramiko.SSHClient] = {}

    def login(self, host: str) -> paramiko.SSHClient:
        if host not in self._sessions:
            self._sessions[host] = open_session(
                host, self._hostvars[host], self._backend.timeout, self._stack
            )
        return self._sessions[host]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        transport = self.login(self._cluster.controller).get_transport()
        if transport is None or not transport.is_active():
            raise ClusterError("the SSH session with the controller closed")
        port, timeout = self._cluster.rest_port, self._backend.timeout
        try:
            channel = transport.open_channel(
                "direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=timeout
            )
        except (paramiko.SSHException, OSError) as exc:
            raise ClusterError(f"slurmrestd on 127.0.0.1:{port} is not answering: {exc}") from None
        channel.settimeout(timeout)
        conn = _ChannelConnection(channel, port)
        headers = {
            "X-SLURM-USER-NAME": self._cluster.job_user,
            "X-SLURM-USER-TOKEN": self._backend.token(),
            "Content-Type": "application/json",
            "Connection": "close",
        }
        try:
            conn.request(method, f"/slurm/{API}{path}", json.dumps(body) if body else None, headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ClusterError(f"slurmrestd {method} {path}: {exc}") from None
        finally:
            conn.close()
        try:
            data: dict[str, Any] = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        errors = [e.get("error") or e.get("description") for e in data.get("errors") or []]
        if response.status >= 400 or any(errors):
            said = "; ".join(str(e) for e in errors if e) or raw[:200].decode(errors="replace")
            raise ClusterError(f"slurmrestd {method} {path}: HTTP {response.status}: {said}")
        return data

    def submit(self, name: str, spec: JobSpec) -> str:
        body = submission(name, spec, self._cluster.output_dir)
        job_id = self._call("POST", "/job/submit", body).get("job_id")
        if job_id is None:
            raise ClusterError("slurmrestd accepted the job but gave no job id")
        return str(job_id)

    def find(self, name: str) -> str | None:
        """The newest job named `name` (a submission whose answer a crash lost)."""
        found = [j for j in self._call("GET", "/jobs").get("jobs") or [] if j.get("name") == name]
        return str(max(int(j["job_id"]) for j in found)) if found else None

    def status(self, job_id: str) -> ClusterJob | None:
        try:
            jobs = self._call("GET", f"/job/{job_id}").get("jobs") or []
        except ClusterError as exc:
            if "Invalid job id" in str(exc):
                return None  # slurmctld has forgotten it (MinJobAge)
            raise
        if not jobs:
            return None
        job = jobs[0]
        return ClusterJob(
            job_id=str(job["job_id"]),
            state=str(job.get("job_state") or "UNKNOWN"),
            reason=job.get("state_reason"),
            exit_code=_exit_code(job.get("exit_code")),
            nodes=str(job.get("nodes") or ""),
            batch_host=job.get("batch_host") or None,
            started_at=float(job["start_time"]) if job.get("start_time") else None,
            finished_at=float(job["end_time"]) if job.get("end_time") else None,
        )

    def cancel(self, job_id: str) -> None:
        self._call("DELETE", f"/job/{job_id}")

    def output(self, job: ClusterJob) -> tuple[str, int]:
        """The end of the job's output file on its batch host, and the file's length."""
        host = job.batch_host
        if host is None or host not in self._cluster.hosts:
            return "", 0
        path = f"{self._cluster.output_dir}/{job.job_id}.out"
        try:
            with self.login(host).open_sftp() as sftp, sftp.open(path, "rb") as fh:
                size = fh.stat().st_size or 0
                fh.seek(max(0, size - LOG_TAIL_BYTES))
                tail = fh.read().decode(errors="replace")
        except FileNotFoundError:
            return "", 0
        except (LoginFailed, OSError, paramiko.SSHException) as exc:
            raise ClusterError(f"cannot read {path} on {host}: {exc}") from None
        return tail, size


def _exit_code(value: Any) -> int | None:
    """v0.0.38 gives the wait status as a number: the exit code is its high byte."""
    if isinstance(value, dict):  # later API versions: {"return_code": N, ...}
        value = value.get("return_code")
    if not isinstance(value, int):
        return None
    return value >> 8 if value > 255 else value


def slurm_backends(ctx: HubContext) -> Callable[[Cluster], SlurmBackend]:
    """How the cluster pass gets each cluster's client: the hub's JWT key, and logins the
    way the inventory says."""
    key = clusters.key_paths(ctx.settings.data_dir)[clusters.JWT_KEY].read_bytes()

    def hostvars(hosts: set[str]) -> Mapping[str, Mapping[str, Any]]:
        return clusters.hostvars(ctx, hosts)

    return lambda cluster: SlurmBackend(cluster, key, hostvars, ctx.settings.preflight_timeout_s)
