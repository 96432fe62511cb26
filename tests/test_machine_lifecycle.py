"""The machine lifecycle's transition table and the burn-in verdict (pure, no hub)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiorch.errors import Conflict
from aiorch.metal.contract import ActionResult, Inventory
from aiorch.metal.lifecycle import (
    FAILED,
    FAILED_TWIN,
    TRANSITIONS,
    WAITING,
    Event,
    State,
    next_state,
    reachable,
)
from aiorch.metal.profile import BurnIn, HardwareClass, Timeouts, verdict

MAIN_PATH = [
    (Event.INSPECT, State.INSPECTING),
    (Event.INVENTORY, State.INSPECTED),
    (Event.BURN_IN, State.BURNING_IN),
    (Event.PASSED, State.ACCEPTED),
    (Event.ACCEPT, State.READY),
    (Event.PROVISION, State.PROVISIONING),
    (Event.DEPLOYED, State.PROVISIONED),
    (Event.AGENT_ONLINE, State.CONFIGURING),
    (Event.CONFIGURED, State.SERVING),
    (Event.RELEASE, State.DRAINING),
    (Event.DRAINED, State.RELEASING),
    (Event.WIPED, State.READY),
]


def test_the_main_path_runs_from_enrolled_to_serving_and_back_to_ready():
    state = State.ENROLLED
    for event, expected in MAIN_PATH:
        state = next_state(state, event)
        assert state is expected


def test_every_state_is_reachable_from_enrolled():
    assert reachable() == set(State)


def test_every_waiting_state_times_out_into_its_failed_twin():
    for state in WAITING:
        assert next_state(state, Event.TIMEOUT) is FAILED_TWIN[state]
        assert next_state(state, Event.FAIL) in FAILED
    assert not any(event is Event.TIMEOUT for (state, event) in TRANSITIONS if state not in WAITING)


def test_an_event_a_state_cannot_take_is_a_conflict_naming_both():
    with pytest.raises(Conflict) as exc:
        next_state(State.ENROLLED, Event.PROVISION)
    assert "enrolled cannot provision" in str(exc.value)
    assert "inspect" in str(exc.value)


def test_retired_is_final():
    for event in Event:
        with pytest.raises(Conflict):
            next_state(State.RETIRED, event)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(Event)), max_size=60))
def test_random_events_only_ever_move_along_the_table(events: list[Event]):
    """Whatever arrives in whatever order: every move is a table entry, a refused event
    leaves the state as it was, and a machine is never in a waiting state without a
    timeout to end it."""
    state = State.ENROLLED
    for event in events:
        try:
            moved = next_state(state, event)
        except Conflict:
            assert (state, event) not in TRANSITIONS
            continue
        assert TRANSITIONS[(state, event)] is moved
        if moved in WAITING:
            assert Timeouts().for_state(moved) > 0
        state = moved


INVENTORY = Inventory.model_validate(
    {
        "boot_mac": "52:54:00:12:34:56",
        "system": {"manufacturer": "aiorch-lab", "serial": "LAB-1", "uuid": ""},
        "cpus": 1,
        "memory_bytes": 1024**3,
        "disks": [{"name": "vda", "size_bytes": 2 * 1024**3, "serial": "D1"}],
        "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56"}],
        "pci": [
            {"address": "0000:00:04.0", "vendor": "0x10de", "device": "0x2330", "class": "0x030200"}
        ],
    }
)
MEASURED = {
    "cpu_bogo_ops_per_s": 120.0,
    "disk_write_mib_s": {"vda": 80.0},
    "smart": {"vda": "unsupported"},
}


def test_a_machine_meeting_its_class_passes():
    result = ActionResult(kind="burn_in", ok=True, measured=MEASURED)
    cls = HardwareClass(burn_in=BurnIn(min_cpus=1, expect_gpus=1, min_disk_write_mib_s=50))
    assert INVENTORY.system.uuid is None
    assert verdict(cls, INVENTORY, result) == []


def test_each_figure_below_its_floor_is_one_reason_with_both_numbers():
    result = ActionResult(kind="burn_in", ok=True, measured=MEASURED)
    cls = HardwareClass(
        burn_in=BurnIn(
            min_cpus=4,
            min_memory_gib=8,
            expect_gpus=8,
            min_disk_write_mib_s=500,
            min_disk_read_mib_s=10,
        )
    )
    problems = verdict(cls, INVENTORY, result)
    assert "cpus: 1, want at least 4" in problems
    assert "memory: 1 GiB, want at least 8 GiB" in problems
    assert "gpus: 1 found, want 8" in problems
    assert "disk write vda: 80 MiB/s, want at least 500 MiB/s" in problems
    assert "disk read: not measured (want at least 10 MiB/s)" in problems


def test_a_failed_smart_health_or_an_unfinished_burn_in_fails():
    measured = {**MEASURED, "smart": {"vda": "FAILED"}}
    result = ActionResult(kind="burn_in", ok=False, detail="stress-ng died", measured=measured)
    problems = verdict(HardwareClass(), INVENTORY, result)
    assert problems == ["burn-in did not complete: stress-ng died", "smart vda: FAILED"]
