"""Dashboard clients for in-process tests: `sign_in(role=None)` signs a browser-like client in
through the sign-in form against the test module's own `ctx` fixture (whatever it seeded)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from aiorch.hub.app import create_app
from aiorch.hub.context import HubContext
from aiorch.hub.services import tokens

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def sign_in(ctx: HubContext) -> Iterator[Callable[..., TestClient]]:
    """`sign_in(role=None)`: a client signed in through the form, as a global admin or with
    `role` on project default."""
    clients: list[TestClient] = []

    def make(role: str | None = None) -> TestClient:
        made = tokens.create(ctx, "t", "user:test", role=role, global_admin=role is None)
        client = TestClient(create_app(ctx, run_jobs=False), follow_redirects=False)
        csrf = CSRF.search(client.get("/ui/login").text).group(1)  # type: ignore[union-attr]
        answer = client.post("/ui/login", data={"csrf_token": csrf, "token": made["token"]})
        assert answer.status_code == 303, answer.text
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
