"""A machine's lifecycle, from a powered-off server to a serving host: one explicit transition
table (like MAAS's NODE_TRANSITIONS), and a deadline on every state that waits on the machine.

Pure: no store, no BMC. The hub persists the state and audits each transition; this module
only says which event moves which state where. A state that waits on the machine (it is
booting, testing, writing) has a timeout; when it passes, `timeout` moves the machine into
the failed twin of that step, with the reason, so nothing sits in "inspecting" forever (the
BareMetalHost-stuck-in-inspecting reports of the anchors).

    enrolled -> inspecting -> inspected -> burning_in -> accepted | quarantined
    accepted -> ready -> provisioning -> provisioned -> configuring -> serving
    serving | provisioned | configuring -> draining -> releasing -> ready
    any (but retired) -> maintenance -> enrolled;  ready | enrolled | ... -> retired
"""

from __future__ import annotations

from enum import StrEnum

from aiorch.errors import Conflict


class State(StrEnum):
    ENROLLED = "enrolled"
    INSPECTING = "inspecting"
    INSPECTED = "inspected"
    BURNING_IN = "burning_in"
    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"
    READY = "ready"
    PROVISIONING = "provisioning"
    PROVISIONED = "provisioned"
    CONFIGURING = "configuring"
    SERVING = "serving"
    DRAINING = "draining"
    RELEASING = "releasing"
    MAINTENANCE = "maintenance"
    RETIRED = "retired"
    FAILED_INSPECTING = "failed_inspecting"
    FAILED_BURNING_IN = "failed_burning_in"
    FAILED_PROVISIONING = "failed_provisioning"
    FAILED_CONFIGURING = "failed_configuring"
    FAILED_RELEASING = "failed_releasing"


class Event(StrEnum):
    INSPECT = "inspect"  # operator: boot the ramdisk and take inventory
    INVENTORY = "inventory"  # ramdisk: inventory posted
    BURN_IN = "burn_in"  # hub: the ramdisk was told to burn in
    PASSED = "passed"  # ramdisk: burn-in met the class's profile
    FAILED_PROFILE = "failed_profile"  # ramdisk: burn-in measured below the profile
    ACCEPT = "accept"  # operator: an accepted (or, forced, a quarantined) machine is ready
    PROVISION = "provision"  # operator: write an image
    DEPLOYED = "deployed"  # ramdisk: image written and verified, rebooting to disk
    AGENT_ONLINE = "agent_online"  # hub: the new OS's agent enrolled; site.yml starts
    CONFIGURED = "configured"  # hub: site.yml done
    RELEASE = "release"  # operator: take it back (serving: drain first)
    DRAINED = "drained"  # hub: no workloads left; wipe
    WIPED = "wiped"  # ramdisk: disks wiped
    FAIL = "fail"  # any waiting step failed (the ramdisk, the BMC or a run said why)
    TIMEOUT = "timeout"  # hub: a waiting step's deadline passed
    MAINTENANCE = "maintenance"  # operator: take it out of the lifecycle
    EXIT_MAINTENANCE = "exit_maintenance"  # operator: back in, to be inspected again
    RETIRE = "retire"  # operator: gone for good


S, E = State, Event
FAILED_TWIN: dict[State, State] = {
    S.INSPECTING: S.FAILED_INSPECTING,
    S.INSPECTED: S.FAILED_INSPECTING,
    S.BURNING_IN: S.FAILED_BURNING_IN,
    S.PROVISIONING: S.FAILED_PROVISIONING,
    S.PROVISIONED: S.FAILED_PROVISIONING,
    S.CONFIGURING: S.FAILED_CONFIGURING,
    S.DRAINING: S.FAILED_RELEASING,
    S.RELEASING: S.FAILED_RELEASING,
}
# The states that wait on the machine: each has a deadline (hardware class timeouts).
WAITING = frozenset(FAILED_TWIN)
FAILED = frozenset(FAILED_TWIN.values())
# A machine may be inspected again from any state with no OS of aiorch's on it.
_REINSPECTABLE = (S.ENROLLED, S.INSPECTED, S.ACCEPTED, S.QUARANTINED, S.READY, *FAILED)
_RETIRABLE = (S.ENROLLED, S.ACCEPTED, S.QUARANTINED, S.READY, S.MAINTENANCE, *FAILED)
_RELEASABLE = (S.PROVISIONED, S.CONFIGURING, S.SERVING, *FAILED - {S.FAILED_INSPECTING})

TRANSITIONS: dict[tuple[State, Event], State] = {
    **{(state, E.INSPECT): S.INSPECTING for state in _REINSPECTABLE},
    (S.INSPECTING, E.INVENTORY): S.INSPECTED,
    (S.INSPECTED, E.BURN_IN): S.BURNING_IN,
    (S.BURNING_IN, E.PASSED): S.ACCEPTED,
    (S.BURNING_IN, E.FAILED_PROFILE): S.QUARANTINED,
    (S.ACCEPTED, E.ACCEPT): S.READY,
    (S.QUARANTINED, E.ACCEPT): S.READY,  # forced by the operator, and audited as such
    (S.READY, E.PROVISION): S.PROVISIONING,
    (S.PROVISIONING, E.DEPLOYED): S.PROVISIONED,
    (S.PROVISIONED, E.AGENT_ONLINE): S.CONFIGURING,
    (S.CONFIGURING, E.CONFIGURED): S.SERVING,
    (S.SERVING, E.RELEASE): S.DRAINING,
    **{(state, E.RELEASE): S.RELEASING for state in _RELEASABLE if state is not S.SERVING},
    (S.READY, E.RELEASE): S.RELEASING,  # a wipe of a machine that was never provisioned
    (S.DRAINING, E.DRAINED): S.RELEASING,
    (S.RELEASING, E.WIPED): S.READY,
    **{(state, E.FAIL): twin for state, twin in FAILED_TWIN.items()},
    **{(state, E.TIMEOUT): twin for state, twin in FAILED_TWIN.items()},
    **{(state, E.MAINTENANCE): S.MAINTENANCE for state in State if state is not S.RETIRED},
    (S.MAINTENANCE, E.EXIT_MAINTENANCE): S.ENROLLED,
    **{(state, E.RETIRE): S.RETIRED for state in _RETIRABLE},
}


def next_state(state: State, event: Event) -> State:
    """Where `event` takes a machine in `state`; Conflict naming both when it cannot."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s is state)
        raise Conflict(
            f"a machine in state {state.value} cannot {event.value.replace('_', ' ')} "
            f"(it can: {', '.join(allowed) or 'nothing'})"
        ) from None


def reachable(start: State = S.ENROLLED) -> set[State]:
    """Every state some sequence of events reaches from `start` (the table has no orphan)."""
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen
