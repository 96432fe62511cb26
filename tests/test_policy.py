"""Policies: quotas with the numbers, residency enforced and explained, images only from the
hub's store, and a structured decision for the audit log every time."""

from __future__ import annotations

from typing import Any

import pytest

from aiorch.deploy.hosts import HostView, Replica
from aiorch.deploy.placement import Plan, plan_placement
from aiorch.deploy.policy import (
    ImagePolicy,
    Outcome,
    PolicyDecision,
    Quota,
    ResidencyPolicy,
    Usage,
    check_image,
    check_quota,
    check_residency,
    enforce,
)
from aiorch.deploy.spec import DeploymentSpec, parse_spec
from aiorch.errors import Forbidden

DIGEST = "sha256:" + "7f" * 32
OTHER_DIGEST = "sha256:" + "01" * 32


def deployment(
    project: str = "vision", replicas: int = 5, gpus: int = 2, **spec: Any
) -> DeploymentSpec:
    return parse_spec(
        {
            "apiVersion": "aiorch.dev/v1",
            "kind": "Deployment",
            "metadata": {"name": "detector", "project": project},
            "spec": {
                "image": spec.pop("image", f"registry.local/triton:24.08@{DIGEST}"),
                "replicas": replicas,
                "resources": {"gpus": gpus},
                **spec,
            },
        }
    )


def test_over_quota_is_refused_with_the_numbers() -> None:
    decision = check_quota(deployment(), Quota("vision", max_gpus=16), Usage(gpus=8, replicas=3))
    assert decision == PolicyDecision(
        "quota", Outcome.DENY, "project vision: 10 GPUs requested + 8 in use > quota 16"
    )
    both = check_quota(deployment(), Quota("vision", 16, 6), Usage(gpus=8, replicas=3))
    assert both.reason == (
        "project vision: 10 GPUs requested + 8 in use > quota 16; "
        "5 replicas requested + 3 in use > quota 6"
    )


def test_within_quota_is_allowed_and_says_why() -> None:
    decision = check_quota(deployment(), Quota("vision", max_gpus=18), Usage(gpus=8, replicas=3))
    assert decision.outcome is Outcome.ALLOW
    assert decision.reason == (
        "project vision: 10 GPUs + 8 in use, 5 replicas + 3 in use, "
        "within quota 18 GPUs, unlimited replicas"
    )
    assert check_quota(deployment(), None, Usage()).reason == "project vision has no quota"


def test_image_must_be_in_the_store() -> None:
    store = frozenset({DIGEST, "registry.local/vllm/vllm-openai:v0.6.3", "nginx:1.27"})
    policy = ImagePolicy(store)
    assert [d.outcome for d in check_image(deployment(), policy)] == [Outcome.ALLOW]
    by_tag = deployment(image="docker.io/library/nginx:1.27")
    assert check_image(by_tag, policy)[0].outcome is Outcome.ALLOW  # same image, normalised
    unknown = deployment(image=f"registry.local/triton:24.08@{OTHER_DIGEST}")
    assert check_image(unknown, policy) == [
        PolicyDecision(
            "image-source",
            Outcome.DENY,
            f"image registry.local/triton:24.08@{OTHER_DIGEST} is not in the hub's image store; "
            "load it there first",
        )
    ]
    wrong_tag = deployment(image="registry.local/vllm/vllm-openai:latest")
    assert check_image(wrong_tag, policy)[0].outcome is Outcome.DENY


def test_a_store_entry_with_a_digest_covers_that_digest() -> None:
    policy = ImagePolicy(frozenset({f"registry.local/triton:24.08@{DIGEST}"}))
    assert (
        check_image(deployment(image=f"mirror.local/triton@{DIGEST}"), policy)[0].outcome == "allow"
    )
    assert (
        check_image(deployment(image="registry.local/triton:24.08"), policy)[0].outcome == "allow"
    )


def test_require_digest_refuses_tags() -> None:
    policy = ImagePolicy(frozenset({"registry.local/vllm:1"}), require_digest=True)
    decisions = check_image(deployment(image="registry.local/vllm:1"), policy)
    assert [(d.policy, d.outcome) for d in decisions] == [
        ("require-digest", Outcome.DENY),
        ("image-source", Outcome.ALLOW),
    ]
    assert decisions[0].reason == (
        "image registry.local/vllm:1 is referenced by tag only; "
        "policy requireDigest needs name@sha256:<digest>"
    )
    pinned = ImagePolicy(frozenset({DIGEST}), require_digest=True)
    assert all(d.outcome is Outcome.ALLOW for d in check_image(deployment(), pinned))


FLEET = [
    HostView("eu-1", site="dc1", region="eu"),
    HostView("eu-2", site="dc1", region="eu"),
    HostView("us-1", site="dc2", region="us"),
]


def test_residency_policy_keeps_placement_inside_and_explains() -> None:
    spec = deployment(replicas=3, gpus=0)
    policy = ResidencyPolicy("vision", frozenset({"eu"}))
    plan = plan_placement(spec, FLEET, regions=policy.regions)
    assert {r.host for r in plan.replicas} == {"eu-1", "eu-2"}
    decision = check_residency(spec, policy, plan, FLEET)
    assert decision == PolicyDecision(
        "residency", Outcome.ALLOW, "3 replica(s) in eu; 1 host(s) elsewhere not considered"
    )


def test_residency_denies_a_spec_outside_the_policy() -> None:
    spec = deployment(gpus=0, placement={"residency": {"region": ["us"]}})
    policy = ResidencyPolicy("vision", frozenset({"eu"}))
    decision = check_residency(spec, policy, Plan(), FLEET)
    assert decision.outcome is Outcome.DENY
    assert decision.reason == (
        "spec residency us is outside the regions allowed for project vision: eu"
    )


def test_residency_denies_a_plan_that_strays() -> None:
    spec = deployment(gpus=0, placement={"residency": {"region": ["eu"]}})
    stray = Plan(kept=(Replica(0, "eu-1"), Replica(1, "us-1")))
    decision = check_residency(spec, None, stray, FLEET)
    assert decision == PolicyDecision(
        "residency", Outcome.DENY, "outside eu: replica 1 on us-1 (region us)"
    )
    assert check_residency(deployment(), None, Plan(), FLEET).reason == (
        "no residency asked or imposed"
    )


def test_enforce_refuses_with_every_denial() -> None:
    decisions = [
        PolicyDecision(
            "quota", Outcome.DENY, "project vision: 10 GPUs requested + 8 in use > quota 16"
        ),
        PolicyDecision("image-source", Outcome.ALLOW, "fine"),
        PolicyDecision("require-digest", Outcome.DENY, "tag only"),
    ]
    with pytest.raises(Forbidden) as caught:
        enforce(decisions)
    assert str(caught.value) == "project vision: 10 GPUs requested + 8 in use > quota 16; tag only"
    enforce(decisions[1:2])


def test_decisions_are_audit_records() -> None:
    record = PolicyDecision("quota", Outcome.DENY, "over").to_audit()
    assert record == {"policy": "quota", "outcome": "deny", "reason": "over"}
