"""Request bodies of the HTTP API (answers are plain dicts from the services).

Field constraints live here so that bad input is refused with a 422 naming the
field before any service runs. Every number that can reach SQLite is bounded and finite:
an integer past 2^63 or a NaN stored by one agent would otherwise break the writes or the
reads of everyone (a heartbeat flush is one statement for the whole fleet).
"""

from __future__ import annotations

import math
import posixpath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from aiorch.deploy.spec import DnsLabel
from edge_agent.contract.facts import parse_facts

Name = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

MAX_SQL_INT = 2**63 - 1  # SQLite's INTEGER is a signed 64-bit value
MAX_JSON_DEPTH = 32  # deeper documents are refused rather than left to recursion limits
MAX_TIMESTAMP = 1e11  # Unix seconds, about the year 5100

Count = Annotated[int, Field(ge=0, le=MAX_SQL_INT)]
Seconds = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
Timestamp = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def _plain_json(value: Any) -> Any:
    """Refuse what the stored JSON could not give back: NaN or infinite numbers, integers
    past 64 bits, and nesting deeper than MAX_JSON_DEPTH (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, int) and not -MAX_SQL_INT - 1 <= item <= MAX_SQL_INT:
            raise ValueError("integers must fit in 64 bits")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_plain_json)]


def absolute_path(path: str) -> str:
    if not path.startswith("/") or posixpath.normpath(path) != path or len(path) > 4096:
        raise ValueError(f"{path!r} is not a normalised absolute path (like /data/models)")
    return path


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Role = Literal["viewer", "operator", "admin"]
TOKEN_TTL_DAYS, MAX_TOKEN_TTL_DAYS = 90, 366


class TokenCreate(Strict):
    name: str = Field("", max_length=200)
    role: Role | None = Field(None, description="The token's role on `project`.")
    project: DnsLabel = "default"
    global_admin: bool = False
    expires_s: float = Field(
        TOKEN_TTL_DAYS * 86400, gt=0, le=MAX_TOKEN_TTL_DAYS * 86400, allow_inf_nan=False
    )

    @model_validator(mode="after")
    def _grants_something(self) -> TokenCreate:
        if self.role is None and not self.global_admin:
            raise ValueError("give a role (on a project) or global_admin")
        return self


class ProjectCreate(Strict):
    name: DnsLabel


HostPathPrefix = Annotated[str, AfterValidator(absolute_path)]


class ProjectPolicy(Strict):
    """Lists to replace; a list left out stays as it is, an empty one clears it."""

    allowed_sites: list[Annotated[str, Name]] | None = Field(None, max_length=10_000)
    allowed_regions: list[Annotated[str, Name]] | None = Field(None, max_length=10_000)
    host_path_prefixes: list[HostPathPrefix] | None = Field(None, max_length=1000)


class RoleGrant(Strict):
    role: Role


class EnrollTokenCreate(Strict):
    site: str = Name
    ttl_s: float = Field(3600, gt=0, le=365 * 86400, allow_inf_nan=False)
    uses: int = Field(1, ge=1, le=100_000)
    host: str | None = Field(None, min_length=1, max_length=253)
    replace: bool = False


def _checked_facts(facts: dict[str, Any]) -> dict[str, Any]:
    parse_facts(facts)  # its ContractError is a ValueError: a 422 naming the field
    return facts


# An agent's facts as the contract defines them, stored as sent once they pass.
HostFacts = Annotated[dict[str, Any], AfterValidator(_checked_facts)]


CSR = Field(min_length=1, max_length=8192, description="PEM certificate signing request")


class EnrollRequest(Strict):
    token: str = Field(min_length=1, max_length=300)
    csr: str = CSR
    facts: HostFacts
    agent_version: str = Field("", max_length=64)


class RenewRequest(Strict):
    csr: str = CSR


class ProofRenewRequest(Strict):
    """A renewal the TLS layer cannot carry: the old certificate and a signature by its key."""

    certificate: str = Field(min_length=1, max_length=8192)
    csr: str = CSR
    nonce: str = Field(min_length=1, max_length=200)
    signature: str = Field(min_length=1, max_length=400)


MAX_REASON = 2000


def _shortened(value: Any) -> Any:
    """A long reason (podman's stderr, say) is cut, not refused: it is not hostile."""
    return value[:MAX_REASON] if isinstance(value, str) else value


class WorkloadReport(BaseModel):
    """One workload as its agent last saw it (fields a newer agent adds are dropped)."""

    state: Literal["pending", "starting", "healthy", "unhealthy", "failed"]
    reason: Annotated[str | None, BeforeValidator(_shortened)] = None
    template_hash: str | None = Field(None, max_length=128)
    restarts: Count = 0
    container: str | None = Field(None, max_length=253)
    # An autoscaled replica's metric, as its agent last scraped it; None: no value.
    load: float | None = Field(None, ge=-1e12, le=1e12, allow_inf_nan=False)


class AgentReport(BaseModel):
    """The agent's last reconcile pass: the revision it applied and each workload's state."""

    revision: Count = 0
    workloads: dict[Annotated[str, Field(max_length=600)], WorkloadReport] = Field(
        default_factory=dict, max_length=10_000
    )
    # Job attempts by id, as edge_agent.contract.job defines them (checked there, one home).
    jobs: dict[Annotated[str, Field(max_length=128)], dict[str, Any]] = Field(
        default_factory=dict, max_length=1_000
    )
    # The outcome of a no-BMC power request, as edge_agent.contract.power defines it.
    power: dict[str, Any] | None = None


class CheckinRequest(Strict):
    agent_version: str = Field(max_length=64)
    uptime_s: Seconds
    facts_hash: str = Field(max_length=128)
    applied_revision: Count
    facts: HostFacts | None = None
    report: AgentReport | None = None


# Prometheus label names (one invalid name spoils the whole scrape for every host).
LabelName = Annotated[str, Field(max_length=200, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]


class SeriesRef(Strict):
    """One time series in a batch: a Prometheus-style metric name and its labels. Names and
    labels the hub reserves are dropped at ingest, series by series (services.exposition)."""

    metric: str = Field(min_length=1, max_length=200, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    labels: dict[LabelName, Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=dict, max_length=32
    )


MAX_SERIES = 10_000


class TelemetryBatch(Strict):
    """Samples `[seq, ts, series_index, value]`; `dropped` counts this epoch's samples that
    the agent had to drop (cumulative, so a resent batch never counts a drop twice)."""

    epoch: str = Field(min_length=1, max_length=64)
    seq_start: Count
    seq_end: Count
    dropped: Count = 0
    series: list[SeriesRef] = Field(max_length=MAX_SERIES)
    samples: list[tuple[Count, Timestamp, Annotated[int, Field(ge=0, lt=MAX_SERIES)], Finite]] = (
        Field(max_length=100_000)
    )


class DesiredStateUpdate(Strict):
    document: JsonObject


class InventoryImport(Strict):
    filename: str = Field(min_length=1, max_length=255)
    content: str = Field(min_length=1)


class SpecText(Strict):
    """A deployment spec as the YAML text the user wrote (errors then point at its lines)."""

    spec: str = Field(min_length=1, max_length=1 << 20)


class QuotaUpdate(Strict):
    max_gpus: int | None = Field(None, ge=0, le=1_000_000)
    max_replicas: int | None = Field(None, ge=0, le=1_000_000)
    gpu_hours: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    budget_period: Literal["day", "week", "month"] | None = None


class BundleImportRequest(Strict):
    path: str = Field(min_length=1, max_length=4096, description="A bundle directory on the hub.")
    allow_downgrade: bool = False


class BundleKeyAdd(Strict):
    public_key: str = Field(min_length=1, max_length=64 * 1024, description="A bundle.pub's text.")


class BundleImportInfo(BaseModel):
    digest: str
    name: str
    version: int
    key_id: str
    expires: str
    imported_by: str
    imported_at: float
    downgrade: bool
    current: bool


class BundleKeyInfo(BaseModel):
    key_id: str
    added_by: str
    added_at: float
