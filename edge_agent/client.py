"""The agent's side of protocol v1, over one keep-alive HTTPS connection to the hub.

It speaks HTTP with the standard library's http.client, which the agent loads anyway for its
health probes: httpx and what it pulls in (httpcore, anyio, h11, idna, certifi) cost about 6 MB
resident, a seventh of the agent's memory budget, for four kinds of request.

HTTPS only, verified against the hub's CAs, with the agent's certificate. With TLS 1.3 a hub
that refuses the certificate does so after the handshake, so the refusal surfaces on the
first read as a TLS alert (or a dropped connection): those are classified as the credential
being refused, not as the network being down, or the agent would wait for a network that is
fine instead of renewing.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent import __version__
from edge_agent.config import ConfigError
from edge_agent.contract.identity import (
    BUNDLE_HEADER,
    CHECKPOINT_HEADER,
    RENEW_HEADER,
    TIME_HEADER,
)

# A kept-alive connection the hub closed while it sat idle fails like this on its next request.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class HubUnavailable(Exception):
    """Transient: network down, hub overloaded or restarting. Retry later."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class HubRefused(Exception):
    """Permanent for this request: the hub said no (bad token, revoked credential, bad data).
    `status` is the HTTP status, which tells the agent what to do about it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"hub refused ({status}): {detail}")
        self.status = status
        self.detail = detail


class CredentialRejected(HubRefused):
    """The hub's TLS layer refused the agent's certificate (expired, unknown, revoked CA)."""

    def __init__(self, detail: str) -> None:
        super().__init__(401, f"the hub refused this agent's certificate: {detail}")


# TLS alerts a server sends about the client's certificate (OpenSSL's reason names).
_CERT_ALERTS = ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED", "DECRYPT_ERROR")


def _tls_refusal(exc: ssl.SSLError) -> bool:
    reason = str(getattr(exc, "reason", "") or exc)
    return "ALERT" in reason and any(word in reason for word in _CERT_ALERTS)


@dataclass(frozen=True)
class TrustNews:
    """What every answer says about trust: the hub's clock, its CAs' digest, renew now, and
    its newest audit checkpoint (JSON text)."""

    hub_time: float | None
    bundle: str | None
    renew: bool
    checkpoint: str | None = None

    @classmethod
    def of(cls, headers: http.client.HTTPMessage) -> TrustNews:
        renew = headers.get(RENEW_HEADER) == "1"
        time_, bundle = _number(headers.get(TIME_HEADER)), headers.get(BUNDLE_HEADER)
        return cls(time_, bundle, renew, headers.get(CHECKPOINT_HEADER))


class DigestMismatch(Exception):
    """A downloaded file is not the one asked for (corrupt or wrong content)."""


@dataclass(frozen=True)
class CheckinReply:
    changed: bool
    revision: int
    document: dict[str, Any] | None
    poll_interval_s: float | None


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _transient(status: int) -> bool:
    """Worth retrying the same request later: overload, a timeout or a hub-side failure."""
    return status in (408, 429) or status >= 500


def _refusal(status: int, headers: http.client.HTTPMessage, body: bytes) -> Exception:
    """The exception for an answer of 400 or more: HubUnavailable or HubRefused."""
    if _transient(status):
        retry_after = _number(headers.get("Retry-After"))
        return HubUnavailable(f"hub answered {status}: {_detail(status, body)}", retry_after)
    return HubRefused(status, _detail(status, body))


def _detail(status: int, body: bytes) -> str:
    """The hub's `detail`, else the body's text, else the status's name."""
    text = body.decode(errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return text or http.client.responses.get(status, "error")


def check_hub_url(hub_url: str) -> str:
    """`hub_url` if it is an https URL with a host; plain HTTP is refused outright."""
    url = urlsplit(hub_url)
    if url.scheme != "https" or not url.hostname:
        raise ConfigError(f"hub URL must look like https://HOST:PORT, got {hub_url!r}")
    try:
        _ = url.port
    except ValueError:
        raise ConfigError(f"hub URL {hub_url!r} has a bad port") from None
    return hub_url


class HubClient:
    """`tls` verifies the hub and presents the agent's certificate; `anonymous` only verifies,
    to ask a hub that dropped the connection whether it is up: if it is, the certificate was
    what it refused."""

    def __init__(
        self,
        hub_url: str,
        tls: ssl.SSLContext,
        timeout_s: float = 10.0,
        anonymous: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(check_hub_url(hub_url))
        self.host = url.hostname or ""
        self.port = url.port
        self.tls = tls
        self.anonymous = anonymous
        self.prefix = url.path.rstrip("/") + "/api/v1"
        self.timeout_s = timeout_s
        self.headers = {"User-Agent": f"aiorch-agent/{__version__}"}
        self.news = TrustNews(None, None, False)  # from the last answer
        # Check-ins and uploads share one kept-alive connection; image downloads, which may
        # take minutes on another thread, each open their own.
        self._conn: http.client.HTTPSConnection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self, tls: ssl.SSLContext | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.host, self.port, timeout=self.timeout_s, context=tls or self.tls
        )

    def _dropped(self, exc: BaseException) -> Exception:
        """A fresh connection the hub closed without an answer: with TLS 1.3 that is how a
        refused client certificate looks. A hub that answers without the certificate is up,
        so it was the certificate; otherwise the hub is away."""
        if self.anonymous is not None:
            probe = self._connect(self.anonymous)
            try:
                probe.request("GET", self.prefix.removesuffix("/api/v1") + "/healthz")
                up = probe.getresponse().status < 500
            except (OSError, http.client.HTTPException):
                up = False
            finally:
                probe.close()
            if up:
                return CredentialRejected(
                    "it closes connections that present it (expired, not yet valid, or from a "
                    "CA it does not trust)"
                )
        return HubUnavailable(f"hub unreachable: {_why(exc)}")

    def _send(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> _Answer:
        """One JSON request on the kept-alive connection; raises for answers of 400 or more."""
        data = None if body is None else json.dumps(body).encode()
        wanted = {**self.headers, **(headers or {})}
        if data is not None:
            wanted["Content-Type"] = "application/json"
        with self._lock:
            for fresh in (False, True):
                if self._conn is None:
                    self._conn, fresh = self._connect(), True
                try:
                    self._conn.request(method, self.prefix + path, body=data, headers=wanted)
                    response = self._conn.getresponse()
                    answer = _Answer(response.status, response.headers, response.read())
                    break
                except ssl.SSLCertVerificationError as exc:
                    self._drop()
                    raise HubUnavailable(f"cannot verify the hub: {exc.verify_message}") from None
                except ssl.SSLError as exc:
                    self._drop()
                    if _tls_refusal(exc):
                        raise CredentialRejected(_why(exc)) from None
                    if fresh:
                        raise self._dropped(exc) from None
                except _STALE as exc:
                    self._drop()
                    if fresh:
                        raise self._dropped(exc) from None
                except (OSError, http.client.HTTPException) as exc:
                    self._drop()
                    raise HubUnavailable(f"hub unreachable: {_why(exc)}") from None
        self.news = TrustNews.of(answer.headers)
        if answer.status >= 400:
            raise _refusal(answer.status, answer.headers, answer.body)
        return answer

    def enroll(self, token: str, csr: str, facts: dict[str, Any]) -> dict[str, Any]:
        body = {"token": token, "csr": csr, "facts": facts, "agent_version": __version__}
        result: dict[str, Any] = self._send("POST", "/enroll", body).json()
        return result

    def ca_bundle(self, agent_id: str | None = None) -> str:
        """The hub's CAs (PEM): the public copy before enrolling, the agent's own after."""
        path = f"/agents/{agent_id}/ca-bundle" if agent_id else "/ca-bundle"
        return self._send("GET", path).body.decode()

    def renew(self, agent_id: str, csr: str) -> dict[str, Any]:
        result: dict[str, Any] = self._send(
            "POST", f"/agents/{agent_id}/renew", {"csr": csr}
        ).json()
        return result

    def renew_nonce(self) -> str:
        return str(self._send("POST", "/renew-nonce").json()["nonce"])

    def renew_by_proof(self, proof: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = self._send("POST", "/renew-by-proof", proof).json()
        return result

    def checkin(self, agent_id: str, body: dict[str, Any], known_revision: int) -> CheckinReply:
        answer = self._send(
            "POST",
            f"/agents/{agent_id}/checkin",
            body,
            headers={"If-None-Match": f'"{known_revision}"'},
        )
        poll_s = _number(answer.headers.get("X-Aiorch-Poll-Interval"))
        if answer.status == 304:
            return CheckinReply(False, known_revision, None, poll_s)
        data = answer.json()
        return CheckinReply(True, int(data["revision"]), data["desired"], poll_s)

    def upload(self, agent_id: str, batch: dict[str, Any]) -> dict[str, Any]:
        answer = self._send("POST", f"/agents/{agent_id}/telemetry", wire_batch(batch))
        result: dict[str, Any] = answer.json()
        return result

    def open_get(
        self, path: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPSConnection, http.client.HTTPResponse]:
        """GET `path` on a fresh connection of its own (a download may take minutes on
        another thread) and return it with the answer, body unread; the caller closes it.
        An answer of 400 or more (but 416, which a resumed download handles) raises."""
        conn = self._connect()
        try:
            conn.request("GET", self.prefix + path, headers={**self.headers, **headers})
            response = conn.getresponse()
            if response.status >= 400 and response.status != 416:
                raise _refusal(response.status, response.headers, response.read())
        except (http.client.HTTPException, OSError, socket.gaierror, ssl.SSLError) as exc:
            conn.close()
            raise HubUnavailable(f"download failed: {_why(exc)}") from None
        except BaseException:
            conn.close()
            raise
        return conn, response

    def upload_artifact(self, agent_id: str, attempt: str, sha256: str, path: Path) -> None:
        """PUT a job's artifact (raw bytes, streamed from `path`) on a fresh connection of
        its own: it may be large; the hub checks it against `sha256`."""
        headers = {
            **self.headers,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(path.stat().st_size),
        }
        url = f"{self.prefix}/agents/{agent_id}/jobs/{attempt}/artifacts/{sha256}"
        conn = self._connect()
        try:
            with path.open("rb") as body:
                conn.request("PUT", url, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
        except (http.client.HTTPException, OSError, ssl.SSLError) as exc:
            raise HubUnavailable(f"artifact upload failed: {_why(exc)}") from None
        finally:
            conn.close()
        if response.status >= 400:
            raise _refusal(response.status, response.headers, answer)


def wire_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """Outbox rows to protocol v1: each series named once, samples as [seq, ts, series, value]."""
    index: dict[tuple[str, str], int] = {}
    series: list[dict[str, Any]] = []
    samples: list[list[Any]] = []
    for sample in batch["samples"]:
        key = (sample["metric"], json.dumps(sample["labels"], sort_keys=True))
        position = index.get(key)
        if position is None:
            position = index[key] = len(series)
            series.append({"metric": sample["metric"], "labels": sample["labels"]})
        samples.append([sample["seq"], sample["ts"], position, sample["value"]])
    head = {k: batch[k] for k in ("epoch", "seq_start", "seq_end", "dropped")}
    return {**head, "series": series, "samples": samples}
