"""The building blocks of specs (deployments' and jobs'): bounded scalar types, each
with the one-line reason it gives when a value is wrong, and the strict model base that
forbids unknown fields and reads camelCase."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from edge_agent.contract.image import parse_image

_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_KEY = re.compile(
    r"(?:[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
URL_PATH = re.compile(r"/[!-~]*")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

# Upper bounds on every count: far above any real deployment, low enough that a plan stays
# small and fast (a spec asking for ten million replicas is refused, not planned).
MAX_REPLICAS = 10_000
MAX_GPUS = 64  # per replica
MAX_CPU = 4096.0
MAX_MEMORY_MIB = 1 << 24  # 16 TiB
MAX_ITEMS = 256  # ports, volumes, env and label entries, command and args
MAX_SECONDS = 7 * 86400


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    """'90s', '15m', '12h', '7d' or plain seconds (the specs' and the CLI's one reading);
    ValueError when it is none of these, negative or endless."""
    text = text.strip().lower()
    unit = DURATION_UNITS.get(text[-1:]) if text else None
    value = float(text[:-1] if unit else text) * (unit or 1)
    if not 0 <= value < float("inf"):
        raise ValueError(f"not a duration: {text!r}")
    return value


def scalar_to_str(value: Any) -> Any:
    """YAML reads `1`, `true` and `0.5` as numbers; as env values and labels they are text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"must be {what}")
        return value

    return AfterValidator(check)


def _absolute_path(value: str) -> str:
    if not value.startswith("/") or "\0" in value or ".." in value.split("/"):
        raise ValueError("must be an absolute path without '..'")
    return value


def _image(value: str) -> str:
    parse_image(value)
    return value


Text = Annotated[str, BeforeValidator(scalar_to_str)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=253)]
DnsLabel = Annotated[
    str,
    matching(_DNS_LABEL, "a DNS label (a-z, 0-9 and '-', alphanumeric at both ends, <= 63)"),
]
LabelKey = Annotated[
    str,
    matching(_LABEL_KEY, "a label key ([prefix/]name; letters, digits, '-', '_', '.')"),
]
LabelValue = Annotated[str, BeforeValidator(scalar_to_str), Field(max_length=253)]
EnvName = Annotated[str, matching(_ENV_NAME, "a variable name ([A-Za-z_][A-Za-z0-9_]*)")]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[int, Field(ge=0, le=MAX_SECONDS)]
MemoryMiB = Annotated[int, Field(ge=0, le=MAX_MEMORY_MIB)]
AbsPath = Annotated[str, AfterValidator(_absolute_path)]
Image = Annotated[str, AfterValidator(_image)]
Selector = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_ITEMS)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, alias_generator=to_camel)
