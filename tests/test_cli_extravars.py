"""`aiorch provision -e`: KEY=VALUE pairs, and @FILE for vars kept off the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiorch.cli.runs import parse_extravars
from aiorch.errors import UserError


def test_pairs_and_a_vars_file_merge_in_order(tmp_path: Path) -> None:
    secrets = tmp_path / "enroll.json"
    secrets.write_text('{"aiorch_edge_agent_enroll_token": "aie_x_y", "n": 3}')
    got = parse_extravars(["a=1", f"@{secrets}", "n=4"])
    assert got == {"a": "1", "aiorch_edge_agent_enroll_token": "aie_x_y", "n": "4"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [(None, "cannot read it"), ("- a list\n", "must hold a mapping"), ("{a: [\n", "cannot read")],
)
def test_a_bad_vars_file_is_named(tmp_path: Path, text: str | None, problem: str) -> None:
    path = tmp_path / "vars.yml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UserError, match=problem):
        parse_extravars([f"@{path}"])


def test_a_pair_without_equals_is_refused() -> None:
    with pytest.raises(UserError, match="KEY=VALUE or @FILE"):
        parse_extravars(["token"])
