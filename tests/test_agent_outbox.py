"""The agent's durable outbox against a simple model: append, ack, crash (reopen), bound."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.outbox import Outbox


def _samples(n: int, start: float = 0.0) -> list[tuple[float, str, float, dict[str, str]]]:
    return [(start + i, "m", float(i), {}) for i in range(n)]


def test_samples_leave_only_when_acked(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    box.append(_samples(5))
    batch = box.pending(3)
    assert batch is not None and (batch.seq_start, batch.seq_end) == (0, 2)
    assert len(box) == 5, "pending() does not remove anything"
    box.ack(batch)
    rest = box.pending(10)
    assert rest is not None and [s["seq"] for s in rest.samples] == [3, 4]


def test_epoch_and_sequence_survive_reopen(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    box.append(_samples(3))
    epoch = box.epoch
    box.close()
    again = Outbox(tmp_path / "o.db")
    again.append(_samples(1))
    assert again.epoch == epoch
    assert [s["seq"] for s in again.pending(10).samples] == [0, 1, 2, 3]  # type: ignore[union-attr]


def test_bound_drops_oldest_and_counts_exactly(tmp_path: Path):
    box = Outbox(tmp_path / "o.db", max_samples=4)
    box.append(_samples(10))
    batch = box.pending(10)
    assert batch is not None
    assert [s["seq"] for s in batch.samples] == [6, 7, 8, 9]
    assert batch.dropped == 6
    box.ack(batch)
    box.append(_samples(1))
    assert box.pending(10).dropped == 0  # type: ignore[union-attr]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 20)),
        st.tuples(st.just("ack"), st.integers(1, 30)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops)
def test_outbox_matches_model(tmp_path_factory, ops):
    path = tmp_path_factory.mktemp("box") / "o.db"
    bound = 25
    box = Outbox(path, max_samples=bound)
    model: list[int] = []
    next_seq = 0
    dropped = 0
    for op, n in ops:
        if op == "append":
            box.append(_samples(n))
            model.extend(range(next_seq, next_seq + n))
            next_seq += n
            excess = max(0, len(model) - bound)
            dropped += excess
            model = model[excess:]
        elif op == "ack":
            batch = box.pending(n)
            if batch is not None:
                assert [s["seq"] for s in batch.samples] == model[:n]
                assert batch.dropped == dropped
                box.ack(batch)
                model = model[len(batch.samples) :]
                dropped = 0
        else:
            box.close()
            box = Outbox(path, max_samples=bound)
        assert len(box) == len(model)
    box.close()
