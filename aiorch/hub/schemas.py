"""Request bodies of the HTTP API (answers are plain dicts from the services).

Field constraints live here so that bad input is refused with a 422 naming the
field before any service runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from edge_agent.contract.facts import parse_facts

Name = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenCreate(Strict):
    role: Literal["admin", "operator", "viewer"]
    name: str = Field("", max_length=200)


class EnrollTokenCreate(Strict):
    site: str = Name
    ttl_s: float = Field(3600, gt=0, le=365 * 86400)
    uses: int = Field(1, ge=1, le=100_000)


def _checked_facts(facts: dict[str, Any]) -> dict[str, Any]:
    parse_facts(facts)  # its ContractError is a ValueError: a 422 naming the field
    return facts


# An agent's facts as the contract defines them, stored as sent once they pass.
HostFacts = Annotated[dict[str, Any], AfterValidator(_checked_facts)]


class EnrollRequest(Strict):
    token: str = Field(min_length=1, max_length=200)
    facts: HostFacts
    agent_version: str = Field("", max_length=64)


class CheckinRequest(Strict):
    agent_version: str = Field(max_length=64)
    uptime_s: float = Field(ge=0)
    facts_hash: str = Field(max_length=128)
    applied_revision: int = Field(ge=0)
    facts: HostFacts | None = None
    report: dict[str, Any] | None = None


class SeriesRef(Strict):
    """One time series in a batch: a Prometheus-style metric name and its labels."""

    metric: str = Field(min_length=1, max_length=200, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)


class TelemetryBatch(Strict):
    """Samples `[seq, ts, series_index, value]`; `dropped` counts this epoch's samples that
    the agent had to drop (cumulative, so a resent batch never counts a drop twice)."""

    epoch: str = Field(min_length=1, max_length=64)
    seq_start: int = Field(ge=0)
    seq_end: int = Field(ge=0)
    dropped: int = Field(0, ge=0)
    series: list[SeriesRef] = Field(max_length=10_000)
    samples: list[tuple[int, float, int, float]] = Field(max_length=100_000)


class DesiredStateUpdate(Strict):
    document: dict[str, Any]


class InventoryImport(Strict):
    filename: str = Field(min_length=1, max_length=255)
    content: str = Field(min_length=1)


class SpecText(Strict):
    """A deployment spec as the YAML text the user wrote (errors then point at its lines)."""

    spec: str = Field(min_length=1, max_length=1 << 20)


class QuotaUpdate(Strict):
    max_gpus: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=0)
