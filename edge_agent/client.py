"""The agent's side of protocol v1, over one keep-alive HTTP connection to the hub."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edge_agent import __version__


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


class DigestMismatch(Exception):
    """A downloaded image archive is not the one asked for (corrupt or wrong content)."""


@dataclass(frozen=True)
class CheckinReply:
    changed: bool
    revision: int
    document: dict[str, Any] | None
    poll_interval_s: float | None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _transient(status: int) -> bool:
    """Worth retrying the same request later: overload, a timeout or a hub-side failure."""
    return status in (408, 429) or status >= 500


def _refusal(response: httpx.Response) -> Exception:
    """The exception for an answer of 400 or more: HubUnavailable or HubRefused."""
    status = response.status_code
    if _transient(status):
        return HubUnavailable(f"hub answered {status}: {_detail(response)}", _retry_after(response))
    return HubRefused(status, _detail(response))


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text.strip() or response.reason_phrase


class HubClient:
    def __init__(
        self, hub_url: str, credential: str | None = None, timeout_s: float = 10.0
    ) -> None:
        headers = {"User-Agent": f"aiorch-agent/{__version__}"}
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        # A TLS context (and its CA bundle, 2.7 MB resident) only for an https hub.
        tls = hub_url.startswith("https:")
        self.http = httpx.Client(
            base_url=hub_url.rstrip("/") + "/api/v1",
            headers=headers,
            timeout=timeout_s,
            verify=tls,
        )

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HubUnavailable(f"hub unreachable: {exc}") from None
        if response.status_code >= 400:
            raise _refusal(response)
        return response

    def enroll(self, token: str, facts: dict[str, Any]) -> dict[str, Any]:
        body = {"token": token, "facts": facts, "agent_version": __version__}
        result: dict[str, Any] = self._send("POST", "/enroll", json=body).json()
        return result

    def checkin(self, agent_id: str, body: dict[str, Any], known_revision: int) -> CheckinReply:
        response = self._send(
            "POST",
            f"/agents/{agent_id}/checkin",
            json=body,
            headers={"If-None-Match": f'"{known_revision}"'},
        )
        poll = response.headers.get("X-Aiorch-Poll-Interval")
        poll_s = float(poll) if poll else None
        if response.status_code == 304:
            return CheckinReply(False, known_revision, None, poll_s)
        data = response.json()
        return CheckinReply(True, int(data["revision"]), data["desired"], poll_s)

    def upload(self, agent_id: str, batch: dict[str, Any]) -> dict[str, Any]:
        body = wire_batch(batch)
        response = self._send("POST", f"/agents/{agent_id}/telemetry", json=body)
        result: dict[str, Any] = response.json()
        return result

    def download_image(self, agent_id: str, digest: str, dest: Path) -> None:
        """Stream an image archive (`podman save` output) to `dest`, hashing it on the way.
        It goes to a temp file beside `dest` and is renamed only once its sha256 is `digest`,
        so `dest` never holds a partial or wrong archive; a mismatch raises DigestMismatch."""
        expected = digest.removeprefix("sha256:")
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        sha = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as fh:
                with self.http.stream("GET", f"/agents/{agent_id}/images/{digest}") as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _refusal(response)
                    for chunk in response.iter_bytes(1 << 20):
                        sha.update(chunk)
                        fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            if sha.hexdigest() != expected:
                raise DigestMismatch(
                    f"image archive from the hub has sha256:{sha.hexdigest()}, not {digest}"
                )
            os.replace(tmp, dest)
        except httpx.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            raise HubUnavailable(f"image download failed: {exc}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


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
