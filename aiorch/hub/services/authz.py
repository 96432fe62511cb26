"""What a principal may do: one `authorize(principal, action, resource)` over a static table.

An action not in the table is denied. A user's role is looked up on the resource's own
project only: roles never merge across projects, and a role in project A says nothing about
project B (Mender CVE-2026-33552). The global admin may do everything; agents may do nothing
here (their own routes check them). Fleet-wide writes (inventory, hosts, runs, enrollment,
projects, quotas, the audit log) are the global admin's; fleet views are readable by anyone
holding a role somewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiorch.errors import Forbidden
from aiorch.hub.services.auth import Principal

ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}


class Scope(Enum):
    GLOBAL = "global"  # the global admin only
    FLEET = "fleet"  # the minimum role on any one project will do
    PROJECT = "project"  # the minimum role on the resource's own project


@dataclass(frozen=True)
class Rule:
    scope: Scope
    minimum: str = "admin"


_GLOBAL = Rule(Scope.GLOBAL)
_FLEET_READ = Rule(Scope.FLEET, "viewer")


def _project(minimum: str) -> Rule:
    return Rule(Scope.PROJECT, minimum)


ACTIONS: dict[str, Rule] = {
    # The fleet as everyone with a role may see it.
    "agent.read": _FLEET_READ,
    "host.read": _FLEET_READ,
    "site.read": _FLEET_READ,
    "run.read": _FLEET_READ,
    "playbook_set.read": _FLEET_READ,
    "enroll_token.read": _FLEET_READ,
    "fleet.status": _FLEET_READ,
    "telemetry.read": _FLEET_READ,
    "metrics.read": _FLEET_READ,
    "api.schema": _FLEET_READ,
    "machine.read": _FLEET_READ,
    # The fleet's trust and configuration: hand-written desired states hold every project's
    # workloads, inventory holds connection vars, runs are root on hosts.
    "agent.desired.read": _GLOBAL,
    "agent.desired.write": _GLOBAL,
    "agent.revoke": _GLOBAL,  # POST /agents/{id}/revoke and /rekey, on main with mTLS
    "agent.rekey": _GLOBAL,
    "inventory.import": _GLOBAL,
    "inventory.export": _GLOBAL,
    "host.retire": _GLOBAL,
    "run.start": _GLOBAL,
    "run.cancel": _GLOBAL,
    "playbook_set.import": _GLOBAL,  # a set's plays run on the hub, with the hub's rights
    "enroll_token.create": _GLOBAL,
    "enroll_token.revoke": _GLOBAL,
    "audit.read": _GLOBAL,
    "machine.manage": _GLOBAL,  # a BMC powers servers and a release wipes their disks
    "ca.read": _FLEET_READ,  # pins and phases are public facts, to anyone with a role
    "ca.rotate": _GLOBAL,
    "bundle.read": _FLEET_READ,  # which content is current, and the keys trusted to sign it
    "bundle.import": _GLOBAL,  # what every host installs comes from the imported content
    "bundle.trust": _GLOBAL,
    "project.create": _GLOBAL,
    "project.policy.set": _GLOBAL,  # allowed sites and hostPaths decide what a project reaches
    "quota.set": _GLOBAL,  # a project admin raising its own quota would make quotas moot
    "token.global_admin": _GLOBAL,
    # What projects own.
    "project.read": _project("viewer"),
    "deployment.read": _project("viewer"),
    "deployment.apply": _project("operator"),
    "deployment.delete": _project("operator"),
    "rollout.act": _project("operator"),
    "job.read": _project("viewer"),
    "job.submit": _project("operator"),
    "job.cancel": _project("operator"),
    "image.read": _project("viewer"),
    "image.push": _project("operator"),
    "model.read": _project("viewer"),
    "model.push": _project("operator"),
    "accounting.read": _project("viewer"),
    "role.grant": _project("admin"),
    "token.read": _project("admin"),
    "token.revoke": _project("admin"),
}


@dataclass(frozen=True)
class Resource:
    """What an action is on: `project` is None for the fleet, or for "any project" when a
    route checks early, before it knows which object (and so which project) it acts on."""

    kind: str
    project: str | None = None


FLEET = Resource("fleet")
ANY_PROJECT = Resource("any")


def in_project(project: str, kind: str = "project") -> Resource:
    return Resource(kind, project)


def _rank(role: str | None) -> int:
    return -1 if role is None else ROLE_RANK[role]


def authorize(principal: Principal, action: str, resource: Resource) -> None:
    """Return if `principal` may do `action` on `resource`, else raise Forbidden (403)."""
    rule = ACTIONS.get(action)
    if rule is None:
        raise Forbidden(f"action {action!r} is not allowed to anyone")
    if principal.kind != "user":
        raise Forbidden("agent credentials may only use the agent's own endpoints")
    if principal.is_global_admin:
        return
    if rule.scope is Scope.GLOBAL:
        raise Forbidden(f"{action} needs a global admin token")
    needed = ROLE_RANK[rule.minimum]
    if rule.scope is Scope.FLEET or resource.project is None:
        if any(ROLE_RANK[role] >= needed for role in principal.projects.values()):
            return
        raise Forbidden(f"{action} needs '{rule.minimum}' or higher on some project")
    held = principal.projects.get(resource.project)
    if _rank(held) >= needed:
        return
    if held is None:  # the caller learns nothing about a project it has no role in
        raise Forbidden(
            f"{action} needs '{rule.minimum}' or higher on the {resource.kind}'s project"
        )
    raise Forbidden(
        f"role '{held}' on project {resource.project} may not {action}; "
        f"needs '{rule.minimum}' or higher"
    )


def visible_projects(principal: Principal, action: str) -> frozenset[str] | None:
    """The projects whose rows `action` may show to `principal`; None means every project."""
    authorize(principal, action, ANY_PROJECT)
    if principal.is_global_admin:
        return None
    needed = ROLE_RANK[ACTIONS[action].minimum]
    return frozenset(p for p, role in principal.projects.items() if ROLE_RANK[role] >= needed)


def sql_in(column: str, projects: frozenset[str] | None) -> tuple[str, list[Any]]:
    """A WHERE condition keeping rows whose `column` is in `projects` (None: every row)."""
    if projects is None:
        return "1 = 1", []
    if not projects:
        return "1 = 0", []
    names = sorted(projects)
    return f"{column} IN ({', '.join('?' * len(names))})", names
