"""The job state table: random event sequences through `check` (hypothesis), reachability."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiorch.errors import Conflict
from aiorch.jobs import states


def reachable(start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for after in states.TRANSITIONS[todo.pop()]:
            if after not in seen:
                seen.add(after)
                todo.append(after)
    return seen


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(states.STATES), max_size=40))
def test_random_events_only_follow_the_table_and_terminal_states_stay(events):
    state, path = states.QUEUED, [states.QUEUED]
    for wanted in events:
        if states.allowed(state, wanted):
            states.check(state, wanted)
            assert state not in states.TERMINAL, f"{state} is terminal but moved to {wanted}"
            state = wanted
            path.append(state)
        else:
            with pytest.raises(Conflict, match=f"from {state} to {wanted}"):
                states.check(state, wanted)
    assert all(after in states.TRANSITIONS[before] for before, after in pairwise(path))
    assert set(path) <= set(states.STATES)


def test_the_table_covers_every_state_and_only_known_states():
    assert set(states.TRANSITIONS) == set(states.STATES)
    assert all(after <= set(states.STATES) for after in states.TRANSITIONS.values())
    assert all(not states.TRANSITIONS[end] for end in states.TERMINAL)


def test_every_state_is_reachable_from_queued_and_every_one_can_end():
    assert reachable(states.QUEUED) == set(states.STATES)
    for state in states.STATES:
        assert reachable(state) & states.TERMINAL, f"{state} can never end"


def test_preempted_and_node_lost_requeue_and_a_job_runs_again_only_through_the_queue():
    for lost in (states.PREEMPTED, states.NODE_LOST):
        assert states.allowed(lost, states.QUEUED)
    assert not states.allowed(states.PREEMPTED, states.RUNNING)
    assert not states.allowed(states.QUEUED, states.RUNNING), "admission and placement first"
    assert {states.SCHEDULED, states.STARTING, states.RUNNING} == states.HOLDING
