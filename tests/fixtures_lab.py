"""Pytest fixtures for tests that need real hosts: a shared 3-host lab and a lab factory.

Registered from tests/conftest.py (``pytest_plugins``). Labs get unique names so
runs and labs never collide, and every lab made here is torn down at the end of
the session. Tests that break a shared host (cut, pause, ...) must repair it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aiorch.lab import Lab
from tests.tiers import require_lab

INVENTORIES = Path(__file__).resolve().parents[1] / "inventories"

LabFactory = Callable[..., Lab]


def unique_lab_name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def lab_factory() -> Iterator[LabFactory]:
    """``make(hosts=1, name=None) -> Lab``: an extra lab, up and reachable, removed at the end."""
    require_lab()
    made: list[Lab] = []

    def make(hosts: int = 1, name: str | None = None) -> Lab:
        lab = Lab(name or unique_lab_name(), inventory_dir=INVENTORIES)
        made.append(lab)
        lab.up(hosts=hosts)
        return lab

    yield make
    for lab in reversed(made):
        lab.down()


@pytest.fixture(scope="session")
def lab(lab_factory: LabFactory) -> Lab:
    """The session's shared lab: dc1-1 (gpu-server), edge1-1 and edge2-1 (edge boxes)."""
    return lab_factory(hosts=3)
