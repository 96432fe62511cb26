"""The job spec: one YAML document per training or batch job, beside deployments.

    apiVersion: aiorch.dev/v1
    kind: Job
    metadata: {name: finetune-7b, project: nlp}
    spec: {image: ..., command: [...], resources: {gpus: 2, gpuProduct: H100},
           maxDuration: 2h, priority: 60, preemptible: true, artifacts: [/out/model.bin]}

It shares its building blocks (metadata, resources, placement, volumes, models, env and
secretEnv) with the deployment spec, so both are checked the same way, every wrong field
reported at once, one line each.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError

from aiorch.deploy.fields import MAX_ITEMS, MAX_SECONDS, AbsPath, StrictModel, duration_seconds
from aiorch.deploy.problems import problems
from aiorch.deploy.spec import SECRET_PATHS, ContainerSpec, Metadata, PlacementSpec, SpecError
from aiorch.deploy.yaml_source import load_mapping

MAX_NODES = 64
RetryReason = Literal["node_lost", "preempted", "error"]
RETRY_REASONS: tuple[RetryReason, ...] = ("node_lost", "preempted", "error")


def _duration(value: Any) -> Any:
    """`90`, `"90s"`, `"30m"`, `"12h"` or `"2d"` as whole seconds."""
    if not isinstance(value, str):
        return value
    try:
        seconds = duration_seconds(value)
    except ValueError:
        seconds = None
    if seconds is None or not seconds.is_integer():
        raise ValueError("a duration such as 90s, 30m, 12h or 2d (or whole seconds)")
    return int(seconds)


Duration = Annotated[int, BeforeValidator(_duration), Field(ge=1, le=MAX_SECONDS)]


class Retry(StrictModel):
    on: list[RetryReason] = Field(
        default_factory=lambda: list(RETRY_REASONS[:2]),
        max_length=len(RETRY_REASONS),
        description="which endings start another attempt",
    )
    limit: int = Field(default=3, ge=0, le=100, description="attempts after the first")
    backoff: Annotated[int, BeforeValidator(_duration), Field(ge=0, le=MAX_SECONDS)] = 30


class JobWork(ContainerSpec):
    nodes: int = Field(default=1, ge=1, le=MAX_NODES, description=">1 runs through Slurm")
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    priority: int = Field(default=50, ge=0, le=100, description="higher goes first")
    max_duration: Duration = Field(description="stopped (timed_out) once it has run this long")
    retry: Retry = Field(default_factory=Retry)
    preemptible: bool = False
    grace_period: Annotated[int, BeforeValidator(_duration), Field(ge=0, le=3600)] = 30
    artifacts: list[AbsPath] = Field(default_factory=list, max_length=MAX_ITEMS)
    cluster: str | None = Field(default=None, min_length=1, max_length=63)


class JobSpec(StrictModel):
    api_version: Literal["aiorch.dev/v1"]
    kind: Literal["Job"]
    metadata: Metadata
    spec: JobWork

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def project(self) -> str:
        return self.metadata.project

    def gpu_seconds(self) -> int:
        """What admission reserves against the project's budget: gpus * nodes * maxDuration."""
        return self.spec.resources.gpus * self.spec.nodes * self.spec.max_duration


def parse_job(data: dict[str, Any]) -> JobSpec:
    """Validate an already-decoded job spec; SpecError lists every wrong field."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems(exc, JobSpec, secret=SECRET_PATHS)) from None


def load_job(text: str) -> JobSpec:
    return parse_job(load_mapping(text))
