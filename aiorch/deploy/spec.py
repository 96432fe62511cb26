"""The deployment spec: one YAML document per model-serving workload, Kubernetes-style.

    apiVersion: aiorch.dev/v1
    kind: Deployment
    metadata: {name: llama-70b, project: nlp, labels: {app: llm}}
    spec: {image: ..., resources: {gpus: 2, gpuProduct: H100}, replicas: 2, placement: ...}

Every field is checked and every wrong field is reported at once, one line each. Values under
`secretEnv` are `SecretStr`: masked in repr, in `model_dump(mode="json")` and in errors.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from aiorch.deploy.fields import (
    DIGEST_RE,
    MAX_CPU,
    MAX_GPUS,
    MAX_ITEMS,
    MAX_MEMORY_MIB,
    MAX_REPLICAS,
    MAX_SECONDS,
    METRIC_RE,
    URL_PATH,
    AbsPath,
    DnsLabel,
    EnvName,
    Image,
    LabelKey,
    LabelValue,
    MemoryMiB,
    NonEmpty,
    Port,
    Seconds,
    Selector,
    StrictModel,
    Text,
    matching,
    scalar_to_str,
)
from aiorch.deploy.problems import problems
from aiorch.deploy.yaml_source import load_mapping
from aiorch.errors import InvalidInput
from edge_agent.contract.image import ImageRef, parse_image

API_VERSION = "aiorch.dev/v1"
SECRET_PATHS = ("spec.secretEnv",)
# Spec fields that say how many replicas run where and how they change, not what they are.
OUTSIDE_TEMPLATE = ("replicas", "placement", "rollout", "autoscale")


class Metadata(StrictModel):
    name: DnsLabel
    project: DnsLabel = Field(description="the team that owns it; quotas are per project")
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_ITEMS)


class PortSpec(StrictModel):
    container_port: Port
    host_port: Port | None = None
    protocol: Literal["TCP", "UDP"] = "TCP"


class Volume(StrictModel):
    """A host directory mounted into the container, typically the site's model cache."""

    host_path: AbsPath
    mount_path: AbsPath
    read_only: bool = False


class ModelSpec(StrictModel):
    """Weights from the hub's model store, by name and digest (`aiorch model push` prints
    it), mounted read-only at `mountPath`; the replica starts once all its files are there."""

    name: NonEmpty
    digest: Annotated[str, matching(DIGEST_RE, "sha256:<64 lowercase hex digits>")]
    mount_path: AbsPath


class Resources(StrictModel):
    gpus: int = Field(default=0, ge=0, le=MAX_GPUS)
    gpu_product: NonEmpty | None = Field(
        default=None, description="case-insensitive substring of the GPU's name, e.g. H100"
    )
    min_gpu_memory_mib: int | None = Field(
        default=None, ge=1, le=MAX_MEMORY_MIB, alias="minGpuMemoryMiB"
    )
    cpu: float = Field(default=0.0, ge=0, le=MAX_CPU, allow_inf_nan=False)
    memory_mib: MemoryMiB = Field(default=0, alias="memoryMiB")

    @model_validator(mode="after")
    def _gpu_filters_need_gpus(self) -> Resources:
        if self.gpus == 0 and (self.gpu_product or self.min_gpu_memory_mib):
            raise ValueError("gpuProduct and minGpuMemoryMiB need gpus >= 1")
        return self


class Residency(StrictModel):
    region: list[NonEmpty] = Field(min_length=1, max_length=MAX_ITEMS)


class PlacementSpec(StrictModel):
    selector: Selector = Field(
        default_factory=dict, description="site, region, role, host, or any host label"
    )
    spread: Literal["hosts", "sites", "none"] = "hosts"
    residency: Residency | None = None


class HttpGet(StrictModel):
    path: Annotated[str, Field(max_length=1024), matching(URL_PATH, "a path starting with '/'")]
    port: Port


class HealthCheck(StrictModel):
    http_get: HttpGet
    initial_delay_seconds: Seconds = 0
    period_seconds: int = Field(default=10, ge=1, le=MAX_SECONDS)
    timeout_seconds: int = Field(default=1, ge=1, le=3600)
    failure_threshold: int = Field(default=3, ge=1, le=1000)


class Rollout(StrictModel):
    strategy: Literal["rolling", "canary"] = "rolling"
    wave_size: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    max_unavailable: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    canary_selector: Selector | None = None
    pause_seconds: Seconds = 0
    progress_deadline_seconds: int = Field(
        default=600,
        ge=1,
        le=MAX_SECONDS,
        description="a wave not healthy by then fails the rollout",
    )
    auto_rollback: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Rollout:
        if self.wave_size is not None and self.max_unavailable is not None:
            raise ValueError("give waveSize or maxUnavailable, not both")
        if self.strategy == "canary" and not self.canary_selector:
            raise ValueError("strategy canary needs a canarySelector (e.g. site: edge1)")
        if self.strategy != "canary" and self.canary_selector is not None:
            raise ValueError("canarySelector is only for strategy canary")
        return self


class Autoscale(StrictModel):
    """The replica count follows `ceil(load / target)`, the metric summed over the replicas
    as their agents scrape it from `GET :port/path`. Never below 1: nothing here holds
    requests while a model loads, so scale-to-zero would drop them."""

    min: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    max: int = Field(ge=1, le=MAX_REPLICAS)
    metric: Annotated[
        str, Field(max_length=200), matching(METRIC_RE, "a Prometheus metric name")
    ] = Field(description="e.g. aiorch_model_requests_in_flight, vllm:num_requests_waiting")
    target: float = Field(gt=0, le=1e9, allow_inf_nan=False, description="load per replica")
    up_delay_seconds: Seconds = 300  # dstack's defaults
    down_delay_seconds: Seconds = 600
    port: Port = Field(description="the containerPort serving the metrics")
    path: Annotated[str, Field(max_length=1024), matching(URL_PATH, "a path starting with '/'")] = (
        "/metrics"
    )

    @model_validator(mode="after")
    def _max_at_least_min(self) -> Autoscale:
        if self.max < self.min:
            raise ValueError(f"max {self.max} is below min {self.min}")
        return self


class ContainerSpec(StrictModel):
    """What runs in the container, a deployment's replica or a job alike, checked alike."""

    image: Image
    command: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)
    args: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)
    env: dict[EnvName, Text] = Field(default_factory=dict, max_length=MAX_ITEMS)
    secret_env: dict[EnvName, Annotated[SecretStr, BeforeValidator(scalar_to_str)]] = Field(
        default_factory=dict, max_length=MAX_ITEMS
    )
    volumes: list[Volume] = Field(default_factory=list, max_length=MAX_ITEMS)
    models: list[ModelSpec] = Field(default_factory=list, max_length=MAX_ITEMS)
    resources: Resources = Field(default_factory=Resources)

    @property
    def image_ref(self) -> ImageRef:
        return parse_image(self.image)

    @field_validator("secret_env")
    @classmethod
    def _not_also_in_env(cls, value: dict[str, SecretStr], info: ValidationInfo) -> Any:
        both = sorted(set(value) & set(info.data.get("env", {})))
        if both:
            raise ValueError(f"{', '.join(both)} also in env; give each variable once")
        return value

    @field_validator("volumes")
    @classmethod
    def _mounts_unique(cls, value: list[Volume]) -> list[Volume]:
        mounts = [v.mount_path.rstrip("/") or "/" for v in value]
        for mount in mounts:
            if mounts.count(mount) > 1:
                raise ValueError(f"mountPath {mount} is used more than once")
        return value

    @field_validator("models")
    @classmethod
    def _model_mounts_free(cls, value: list[ModelSpec], info: ValidationInfo) -> Any:
        taken = [v.mount_path.rstrip("/") or "/" for v in info.data.get("volumes", [])]
        for model in value:
            mount = model.mount_path.rstrip("/") or "/"
            if mount in taken:
                raise ValueError(f"mountPath {mount} is used more than once")
            taken.append(mount)
        return value


class WorkloadSpec(ContainerSpec):
    ports: list[PortSpec] = Field(default_factory=list, max_length=MAX_ITEMS)
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    health_check: HealthCheck | None = None
    rollout: Rollout = Field(default_factory=Rollout)
    autoscale: Autoscale | None = None

    @field_validator("ports")
    @classmethod
    def _ports_unique(cls, value: list[PortSpec]) -> list[PortSpec]:
        for attr in ("container_port", "host_port"):
            seen = [(getattr(p, attr), p.protocol) for p in value if getattr(p, attr)]
            for port, protocol in seen:
                if seen.count((port, protocol)) > 1:
                    name = to_camel(attr)
                    raise ValueError(f"{name} {port}/{protocol} is listed more than once")
        return value

    @field_validator("health_check")
    @classmethod
    def _probe_a_declared_port(cls, value: HealthCheck | None, info: ValidationInfo) -> Any:
        ports = {p.container_port for p in info.data.get("ports", [])}
        if value is not None and "ports" in info.data and value.http_get.port not in ports:
            declared = ", ".join(str(p) for p in sorted(ports)) or "none"
            raise ValueError(
                f"httpGet.port {value.http_get.port} is not a containerPort (declared: {declared})"
            )
        return value

    @field_validator("autoscale")
    @classmethod
    def _scrape_a_declared_port(cls, value: Autoscale | None, info: ValidationInfo) -> Any:
        tcp = {p.container_port for p in info.data.get("ports", []) if p.protocol == "TCP"}
        if value is not None and "ports" in info.data and value.port not in tcp:
            declared = ", ".join(str(p) for p in sorted(tcp)) or "none"
            raise ValueError(f"port {value.port} is not a TCP containerPort (declared: {declared})")
        return value


class DeploymentSpec(StrictModel):
    api_version: Literal["aiorch.dev/v1"]
    kind: Literal["Deployment"]
    metadata: Metadata
    spec: WorkloadSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def project(self) -> str:
        return self.metadata.project


def parse_spec(data: dict[str, Any]) -> DeploymentSpec:
    """Validate an already-decoded spec (a JSON body); InvalidInput lists every wrong field."""
    try:
        return DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        lines = problems(exc, DeploymentSpec, secret=SECRET_PATHS)
        raise SpecError(lines) from None


def load_spec(text: str) -> DeploymentSpec:
    """Parse and validate a YAML spec; YAML errors name their line, field errors their path."""
    return parse_spec(load_mapping(text))


class SpecError(InvalidInput):
    """A spec with wrong fields: `problems` has one line per field, the message joins them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def spec_hash(spec: DeploymentSpec) -> str:
    """SHA-256 of the whole spec, defaults filled in and keys sorted: applying the same spec
    twice gives the same hash whatever its key order or which defaults were spelt out."""
    return _digest(spec_document(spec))


def template_hash(spec: DeploymentSpec) -> str:
    """SHA-256 of what a running replica is made of (image, command, env, ports, volumes,
    resources, health check); scaling, placement and rollout changes leave it alone, so the
    hub knows which changes restart replicas."""
    workload = spec_document(spec)["spec"]
    for outside in OUTSIDE_TEMPLATE:
        workload.pop(outside, None)
    return _digest(workload)


def with_template(spec: DeploymentSpec, template: DeploymentSpec) -> DeploymentSpec:
    """`spec` with the replicas of `template`: its image, command, env and the rest, while
    the replica count, placement and rollout stay `spec`'s (what a rollback restores)."""
    document, source = spec_document(spec), spec_document(template)
    document["spec"] = {
        **{key: value for key, value in source["spec"].items() if key not in OUTSIDE_TEMPLATE},
        **{key: document["spec"][key] for key in OUTSIDE_TEMPLATE if key in document["spec"]},
    }
    return parse_spec(document)


def spec_document(spec: DeploymentSpec) -> dict[str, Any]:
    """The spec as plain data, defaults filled in and secret values readable."""
    data = spec.model_dump(mode="json", by_alias=True)
    # Secrets count (a rotated secret must reach the replicas); only the digest is ever shown.
    data["spec"]["secretEnv"] = {
        name: value.get_secret_value() for name, value in spec.spec.secret_env.items()
    }
    for added in ("models", "autoscale"):  # unset as before they existed: hashes stay the same
        if not data["spec"][added]:
            del data["spec"][added]
    return data


def _digest(data: dict[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
