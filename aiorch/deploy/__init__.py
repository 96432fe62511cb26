"""Model-serving deployments, the pure core: the spec, placement over the fleet, and policies.

No database and no HTTP here: the hub feeds in a spec, a snapshot of its hosts and the
deployment's current replicas, and stores the plan and the policy decisions that come out.
"""

from aiorch.deploy.hosts import Gpu, HostView, Replica
from aiorch.deploy.placement import Move, Plan, Removal, Unplaced, plan_placement
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
from aiorch.deploy.spec import (
    DeploymentSpec,
    SpecError,
    load_spec,
    parse_spec,
    spec_hash,
    template_hash,
)

__all__ = [
    "DeploymentSpec",
    "Gpu",
    "HostView",
    "ImagePolicy",
    "Move",
    "Outcome",
    "Plan",
    "PolicyDecision",
    "Quota",
    "Removal",
    "Replica",
    "ResidencyPolicy",
    "SpecError",
    "Unplaced",
    "Usage",
    "check_image",
    "check_quota",
    "check_residency",
    "enforce",
    "load_spec",
    "parse_spec",
    "plan_placement",
    "spec_hash",
    "template_hash",
]
