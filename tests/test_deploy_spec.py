"""The deployment spec: examples load, every wrong field is named once, YAML errors name their
line, secrets never show, and the hashes are stable."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiorch.deploy.spec import SpecError, load_spec, parse_spec, spec_hash, template_hash
from aiorch.errors import InvalidInput
from edge_agent.contract.image import parse_image

EXAMPLES = sorted((Path(__file__).parents[1] / "examples" / "deployments").glob("*.yaml"))
DIGEST = "sha256:" + "ab" * 32
BASE: dict[str, Any] = {
    "apiVersion": "aiorch.dev/v1",
    "kind": "Deployment",
    "metadata": {"name": "llm", "project": "nlp"},
    "spec": {
        "image": "registry.local/vllm/vllm-openai:v0.6.3",
        "ports": [{"containerPort": 8000}],
        "healthCheck": {"httpGet": {"path": "/health", "port": 8000}},
        "secretEnv": {"API_KEY": "hunter2-secret"},
    },
}


def with_field(path: str, value: Any) -> dict[str, Any]:
    """BASE with one field set; `path` is dotted, list items as numbers."""
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[int(last) if isinstance(node, list) else last] = value
    return doc


def problems_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(yaml.safe_dump(doc, sort_keys=False))
    return caught.value.problems


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    spec = load_spec(path.read_text())
    assert spec.spec.image_ref.pinned
    assert spec.spec.replicas >= 1


def test_example_values_read_as_text() -> None:
    spec = load_spec((EXAMPLES[0].parent / "llm-dc1-h100.yaml").read_text())
    assert spec.spec.env["HF_HUB_OFFLINE"] == "1"
    assert "2" in spec.spec.args
    assert spec.spec.resources.min_gpu_memory_mib == 80000
    assert spec.spec.placement.residency is not None
    assert spec.spec.placement.residency.region == ["eu"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("spec.resources.gpus", -1, "spec.resources.gpus: must be >= 0 (got -1)"),
        ("spec.resources.gpus", 1.5, "spec.resources.gpus: must be a whole number (got 1.5)"),
        ("spec.resources.gpus", True, "spec.resources.gpus: must be a whole number (got True)"),
        ("spec.resources.cpu", "4", "spec.resources.cpu: must be a number (got '4')"),
        ("spec.replicas", -2, "spec.replicas: must be >= 0 (got -2)"),
        ("apiVersion", "v1", "apiVersion: must be 'aiorch.dev/v1' (got 'v1')"),
        ("kind", "Pod", "kind: must be 'Deployment' (got 'Pod')"),
        (
            "metadata.name",
            "My_LLM",
            "metadata.name: must be a DNS label (a-z, 0-9 and '-', alphanumeric at both ends,"
            " <= 63) (got 'My_LLM')",
        ),
        (
            "spec.image",
            "vllm@sha256:abc",
            "spec.image: digest must be sha256:<64 lowercase hex digits> (got 'vllm@sha256:abc')",
        ),
        (
            "spec.ports.0.containerPort",
            70000,
            "spec.ports[0].containerPort: must be <= 65535 (got 70000)",
        ),
        (
            "spec.ports.0.protocol",
            "tcp",
            "spec.ports[0].protocol: must be 'TCP' or 'UDP' (got 'tcp')",
        ),
        (
            "spec.volumes",
            [{"hostPath": "models", "mountPath": "/models"}],
            "spec.volumes[0].hostPath: must be an absolute path without '..' (got 'models')",
        ),
        (
            "spec.placement.spread",
            "zones",
            "spec.placement.spread: must be 'hosts', 'sites' or 'none' (got 'zones')",
        ),
        (
            "spec.placement.residency",
            {"region": []},
            "spec.placement.residency.region: must not be empty",
        ),
        (
            "spec.healthCheck.periodSeconds",
            0,
            "spec.healthCheck.periodSeconds: must be >= 1 (got 0)",
        ),
        (
            "spec.healthCheck.httpGet.path",
            "health",
            "spec.healthCheck.httpGet.path: must be a path starting with '/' (got 'health')",
        ),
        (
            "spec.rollout.autoRollback",
            "yes",
            "spec.rollout.autoRollback: must be true or false (got 'yes')",
        ),
        ("spec.replica", 2, "spec.replica: unknown field (did you mean 'replicas'?)"),
        ("spec.resources.gpu", 1, "spec.resources.gpu: unknown field (did you mean 'gpus'?)"),
        (
            "spec.env",
            {"bad-name": "x"},
            "spec.env.bad-name: must be a variable name ([A-Za-z_][A-Za-z0-9_]*) (got 'bad-name')",
        ),
        ("spec.env", ["A=1"], "spec.env: must be a mapping (got a list)"),
        ("spec.secretEnv.API_KEY", ["hunter2"], "spec.secretEnv.API_KEY: must be a string"),
        (
            "spec.env",
            {"API_KEY": "x"},
            "spec.secretEnv: API_KEY also in env; give each variable once",
        ),
        (
            "spec.ports",
            [{"containerPort": 8000}, {"containerPort": 8000}],
            "spec.ports: containerPort 8000/TCP is listed more than once",
        ),
        (
            "spec.healthCheck.httpGet.port",
            9000,
            "spec.healthCheck: httpGet.port 9000 is not a containerPort (declared: 8000)",
        ),
        (
            "spec.resources",
            {"gpuProduct": "H100"},
            "spec.resources: gpuProduct and minGpuMemoryMiB need gpus >= 1",
        ),
        (
            "spec.rollout",
            {"waveSize": 2, "maxUnavailable": 1},
            "spec.rollout: give waveSize or maxUnavailable, not both",
        ),
        (
            "spec.rollout",
            {"strategy": "canary"},
            "spec.rollout: strategy canary needs a canarySelector (e.g. site: edge1)",
        ),
    ],
)
def test_each_wrong_field_has_its_own_message(path: str, value: Any, expected: str) -> None:
    assert problems_of(with_field(path, value)) == [expected]


def test_all_wrong_fields_are_reported_at_once() -> None:
    doc = with_field("spec.resources.gpus", -1)
    doc["spec"]["replicas"] = "two"
    doc["metadata"]["labels"] = {"a b": "x"}
    del doc["metadata"]["project"]
    found = problems_of(doc)
    assert found == [
        "metadata.project: required",
        "metadata.labels['a b']: must be a label key ([prefix/]name; letters, digits, '-', '_',"
        " '.') (got 'a b')",
        "spec.resources.gpus: must be >= 0 (got -1)",
        "spec.replicas: must be a whole number (got 'two')",
    ]
    with pytest.raises(InvalidInput, match=r"metadata\.project: required; metadata\.labels"):
        parse_spec(doc)


def test_secrets_never_show() -> None:
    spec = parse_spec(BASE)
    assert spec.spec.secret_env["API_KEY"].get_secret_value() == "hunter2-secret"
    shown = [repr(spec), str(spec), str(spec.model_dump(mode="json", by_alias=True))]
    assert not any("hunter2" in text for text in shown)
    bad = with_field("spec.secretEnv.API_KEY", {"hunter2": "x"})
    assert not any("hunter2" in line for line in problems_of(bad))


def test_scalars_read_as_text_where_text_is_meant() -> None:
    doc = with_field("spec.env", {"OFFLINE": 1, "DEBUG": True, "RATIO": 0.5})
    doc["spec"]["args"] = ["--tp", 2]
    spec = parse_spec(doc)
    assert spec.spec.env == {"OFFLINE": "1", "DEBUG": "true", "RATIO": "0.5"}
    assert spec.spec.args == ["--tp", "2"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("apiVersion: aiorch.dev/v1\nkind: Deployment\nmetadata:\n  name: [x\n", "line 5"),
        ("apiVersion: aiorch.dev/v1\nkind: Deployment\nspec:\n\timage: x\n", "line 4"),
        (
            "kind: Deployment\nmetadata: {}\nkind: Deployment\n",
            "line 3: duplicate key 'kind' (first on line 1)",
        ),
        ("metadata: &m {name: x}\nspec: *m\n", "line 2: YAML aliases"),
        ("- a\n- b\n", "spec must be a mapping (got list)"),
        ("# nothing\n", "spec is empty"),
    ],
)
def test_yaml_errors_name_the_line(text: str, expected: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        load_spec(text)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def _reordered(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def test_spec_hash_is_stable() -> None:
    text = EXAMPLES[0].read_text()
    first = load_spec(text)
    again = load_spec(yaml.safe_dump(_reordered(yaml.safe_load(text)), sort_keys=False))
    assert spec_hash(first) == spec_hash(load_spec(text)) == spec_hash(again)
    assert len(spec_hash(first)) == 64
    spelled_out = with_field("spec.replicas", 1)
    spelled_out["spec"]["rollout"] = {"strategy": "rolling", "autoRollback": True}
    assert spec_hash(parse_spec(spelled_out)) == spec_hash(parse_spec(BASE))


def test_hashes_see_what_they_should() -> None:
    base = parse_spec(BASE)
    scaled = parse_spec(with_field("spec.replicas", 3))
    rotated = parse_spec(with_field("spec.secretEnv.API_KEY", "another"))
    assert spec_hash(scaled) != spec_hash(base)
    assert template_hash(scaled) == template_hash(base)  # scaling restarts nothing
    assert template_hash(rotated) != template_hash(base)  # a new secret reaches the replicas
    assert "another" not in spec_hash(rotated)


@pytest.mark.parametrize(
    ("reference", "canonical"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("vllm/vllm-openai:v0.6.3", "docker.io/vllm/vllm-openai:v0.6.3"),
        ("localhost:5000/triton@" + DIGEST, "localhost:5000/triton@" + DIGEST),
        ("reg.local/a/b:1.0@" + DIGEST, "reg.local/a/b:1.0@" + DIGEST),
    ],
)
def test_image_references_normalise(reference: str, canonical: str) -> None:
    assert str(parse_image(reference)) == canonical


@pytest.mark.parametrize(
    "reference", ["Vllm/x", "x@sha512:" + "a" * 128, "x:", "reg.local/", "a b"]
)
def test_bad_image_references_are_refused(reference: str) -> None:
    with pytest.raises(ValueError):
        parse_image(reference)


def test_invalid_example_problems_are_the_ones_the_readme_shows() -> None:
    path = Path(__file__).parents[1] / "examples" / "invalid" / "chat-with-mistakes.yaml"
    with pytest.raises(SpecError) as caught:
        load_spec(path.read_text())
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert len(caught.value.problems) == 5
    for problem in caught.value.problems:
        assert f"\n{problem}\n" in readme


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("spec.replicas", 10_000_000, "spec.replicas: must be <= 10000 (got 10000000)"),
        ("spec.resources.gpus", 65, "spec.resources.gpus: must be <= 64 (got 65)"),
        ("spec.resources.cpu", float("inf"), "spec.resources.cpu: must be a finite number"),
        ("spec.resources.memoryMiB", 2**40, "spec.resources.memoryMiB: must be <= 16777216"),
        ("spec.rollout.pauseSeconds", 10**9, "spec.rollout.pauseSeconds: must be <= 604800"),
        ("spec.rollout.waveSize", 2**70, "spec.rollout.waveSize: must be <= 10000"),
        ("spec.healthCheck.failureThreshold", 10**6, "failureThreshold: must be <= 1000"),
        ("spec.args", ["x"] * 300, "spec.args: must have at most 256 item(s)"),
    ],
    ids=["replicas", "gpus", "cpu-inf", "memory", "pause", "wave", "threshold", "args"],
)
def test_every_count_has_an_upper_bound_named_in_the_error(
    path: str, value: Any, expected: str
) -> None:
    (problem,) = problems_of(with_field(path, value))
    assert expected in problem


def test_one_duration_reading_for_specs_and_the_cli():
    from aiorch.deploy.fields import duration_seconds

    assert [duration_seconds(t) for t in ("90", "90s", "30m", "1.5h", "2D", "0s")] == [
        90.0, 90.0, 1800.0, 5400.0, 172800.0, 0.0,
    ]  # fmt: skip
    for bad in ("", "h", "2w", "-5m", "inf", "nan"):
        with pytest.raises(ValueError):
            duration_seconds(bad)
