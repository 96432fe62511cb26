"""What every service needs: the store, the settings and a clock (replaceable in tests)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from aiorch.hub.sealing import Sealer
from aiorch.hub.services.audit_key import AuditKey
from aiorch.hub.services.heartbeats import HeartbeatBuffer
from aiorch.hub.services.latest import LatestValues
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

    @cached_property
    def sealer(self) -> Sealer:
        """Made on first use: a hub that never stores a secret needs no key file."""
        return Sealer.in_dir(self.settings.data_dir)

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
