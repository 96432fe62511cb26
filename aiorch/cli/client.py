"""The CLI's HTTP client for the hub: finds the hub and a token, turns answers into errors."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from aiorch import errors
from aiorch.endpoint import CA_FILE, endpoint_url, hub_tls
from aiorch.hub.settings import HubSettings

_BY_STATUS: dict[int, type[errors.AiorchError]] = {
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    410: errors.Gone,
    422: errors.InvalidInput,
}


def default_data_dir() -> Path:
    env = os.environ.get("AIORCH_DATA_DIR")
    return Path(env) if env else Path.home() / ".local" / "share" / "aiorch"


@dataclass
class HubClient:
    url: str
    token: str | None
    verify: ssl.SSLContext
    timeout: float = 30.0

    @classmethod
    def resolve(
        cls, hub: str | None, token: str | None, data_dir: Path, ca: Path | None = None
    ) -> HubClient:
        """Explicit options win, then AIORCH_HUB/AIORCH_TOKEN/AIORCH_CA, then the local data
        dir's hub, token and CA."""
        settings = HubSettings(data_dir=data_dir)
        url = hub or os.environ.get("AIORCH_HUB") or endpoint_url(data_dir)
        if not url:
            raise errors.UserError(
                f"no hub found: pass --hub URL, set AIORCH_HUB, or start one with "
                f"'aiorch hub serve --data-dir {data_dir}'"
            )
        if not url.startswith("https://"):
            raise errors.UserError(f"the hub serves HTTPS only: use https://..., not {url!r}")
        token = token or os.environ.get("AIORCH_TOKEN")
        if token is None and settings.admin_token_path.exists():
            token = settings.admin_token_path.read_text().strip()
        env_ca = os.environ.get("AIORCH_CA")
        ca = ca or (Path(env_ca) if env_ca else None)
        if ca is None and (data_dir / CA_FILE).exists():
            ca = data_dir / CA_FILE
        return cls(url=url.rstrip("/"), token=token, verify=hub_tls(ca))

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = httpx.request(
                method,
                f"{self.url}/api/v1{path}",
                headers=headers,
                timeout=self.timeout,
                verify=self.verify,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise errors.UserError(f"cannot reach hub at {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text.strip() or response.reason_phrase
            cls = _BY_STATUS.get(response.status_code, errors.AiorchError)
            raise cls(f"hub answered {response.status_code}: {detail}")
        return response

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body).json()

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", path, json=body).json()

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, json=body).json()

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def upload(self, path: str, file: Path, **params: str) -> Any:
        """Stream a file as the body (image archives can be gigabytes)."""
        with file.open("rb") as fh:
            response = self.request(
                "POST",
                path,
                headers={"Content-Type": "application/octet-stream"},
                params=params,
                content=iter(lambda: fh.read(1 << 20), b""),
            )
        return response.json()

    def text(self, path: str) -> str:
        return self.request("GET", path).text
