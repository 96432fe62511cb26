"""What every service needs: the store, the settings and a clock (replaceable in tests)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from aiorch.hub.pki.authority import Authority
from aiorch.hub.pki.bootstrap import open_authority
from aiorch.hub.pki.listener import Listener
from aiorch.hub.sealing import Sealer
from aiorch.hub.services.audit_key import AuditKey
from aiorch.hub.services.heartbeats import HeartbeatBuffer
from aiorch.hub.services.latest import LatestValues, PerMinute
from aiorch.hub.services.series import InternedIds, series_ids, stream_ids
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store


@dataclass
class HubContext:
    store: Store
    settings: HubSettings
    clock: Callable[[], float] = field(default=time.time)
    heartbeats: HeartbeatBuffer = field(default_factory=HeartbeatBuffer)
    series: InternedIds = field(default_factory=series_ids)
    streams: InternedIds = field(default_factory=stream_ids)
    latest: LatestValues = field(default_factory=LatestValues)
    per_minute: PerMinute = field(default_factory=PerMinute)  # /metrics figures over rollups
    listener: Listener | None = None  # the TLS listener, when this context serves one
    repo_dir: Path | None = None  # `hub serve --repo DIR`: served instead of imported content

    @cached_property
    def sealer(self) -> Sealer:
        """Made on first use: a hub that never stores a secret needs no key file."""
        return Sealer.in_dir(self.settings.data_dir)

    @cached_property
    def authority(self) -> Authority:
        """The CAs in force (the first made now if there is none)."""
        settings = self.settings
        return open_authority(settings.data_dir, self.store, self.clock(), settings.tls_ca)

    def trust_changed(self) -> Authority:
        """Reload the authority after a CA rotation step, and the listener's trust with it."""
        self.__dict__.pop("authority", None)
        authority = self.authority
        if self.listener is not None:
            self.listener.ensure(authority, self.clock())
            self.listener.reload(authority)
        return authority

    @cached_property
    def audit_key(self) -> AuditKey:
        """Made on first use, or at hub start by audit_checkpoints.prepare."""
        return AuditKey.in_dir(self.settings.data_dir)


def decode_json_fields(row: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """Rows keep nested values as JSON text; API answers want them as objects."""
    out = dict(row)
    for name in fields:
        if isinstance(out.get(name), str):
            out[name] = json.loads(out[name])
    return out
