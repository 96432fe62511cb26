"""`make demo` can run twice without harm, and `--down` removes what it made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aiorch.hub.process import free_port
from aiorch.lab import Lab
from tests.fixtures_lab import unique_lab_name

pytestmark = pytest.mark.lab


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiorch.demo", *args], capture_output=True, text=True, timeout=900
    )


def test_demo_twice_then_down(tmp_path: Path):
    name = unique_lab_name()
    args = ["--data-dir", str(tmp_path / "demo"), "--lab-name", name, "--port", str(free_port())]
    first = _demo(*args, "--hosts", "2")
    try:
        assert first.returncode == 0, first.stderr
        assert "agents: 1 online" in first.stdout
        second = _demo(*args, "--hosts", "2")
        assert second.returncode == 0, second.stderr
        assert "hub already running" in second.stdout
        assert len(Lab(name).hosts) == 2
    finally:
        down = _demo(*args, "--down")
    assert down.returncode == 0, down.stderr
    assert not (tmp_path / "demo").exists()
    assert Lab(name).hosts == []
