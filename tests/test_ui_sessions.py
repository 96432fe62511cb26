"""Dashboard sign-in over a real hub: the session cookie, its CSRF token, and sign-out."""

from __future__ import annotations

import re

import httpx
import pytest

from aiorch.hub.ui.router import operations
from tests.fixtures_hub import HubProcess, make_token

CSRF = re.compile(r'name="(csrf[^"]*)" value="([^"]+)"')


def _browser(hub: HubProcess) -> httpx.Client:
    return hub.client(root=True)


def _sign_in(client: httpx.Client, token: str) -> httpx.Response:
    form = client.get("/ui/login")
    field, value = CSRF.search(form.text).groups()  # type: ignore[union-attr]
    return client.post("/ui/login", data={field: value, "token": token})


def test_a_page_without_a_session_redirects_to_sign_in(shared_hub: HubProcess) -> None:
    with _browser(shared_hub) as client:
        response = client.get("/ui/")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"


def test_signing_in_sets_a_strict_httponly_secure_cookie(shared_hub: HubProcess) -> None:
    with _browser(shared_hub) as client:
        response = _sign_in(client, shared_hub.admin_token)
        assert response.status_code == 303, response.text
        cookie = response.headers["set-cookie"]
        assert "aiorch_session=" in cookie
        for flag in ("HttpOnly", "Secure", "SameSite=strict"):
            assert flag.lower() in cookie.lower(), cookie
        fleet = client.get("/ui/")
    assert fleet.status_code == 200
    assert "Fleet" in fleet.text
    assert "default-src 'self'" in fleet.headers["content-security-policy"]


def test_a_wrong_token_is_refused_and_no_session_is_made(shared_hub: HubProcess) -> None:
    with _browser(shared_hub) as client:
        response = _sign_in(client, "aiorch_nottherighttoken")
        assert response.status_code == 401
        assert "Sign-in refused" in response.text
        assert "aiorch_session" not in response.headers.get("set-cookie", "")
        assert client.get("/ui/").status_code == 303


def test_sign_in_without_its_csrf_token_is_refused(shared_hub: HubProcess) -> None:
    with _browser(shared_hub) as client:
        response = client.post("/ui/login", data={"token": shared_hub.admin_token})
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_sign_out_without_csrf_is_403_and_with_it_ends_the_session(
    shared_hub: HubProcess,
) -> None:
    with _browser(shared_hub) as client:
        _sign_in(client, shared_hub.admin_token)
        forged = client.post("/ui/logout", data={})
        assert forged.status_code == 403
        assert client.get("/ui/").status_code == 200  # still signed in
        field, value = CSRF.search(client.get("/ui/").text).groups()  # type: ignore[union-attr]
        out = client.post("/ui/logout", data={field: value})
        assert out.status_code == 303
        old_cookie = client.cookies.get("aiorch_session")
        assert old_cookie is None
        assert client.get("/ui/").status_code == 303


def test_revoking_the_token_ends_its_sessions(shared_hub: HubProcess, admin: httpx.Client) -> None:
    token = make_token(admin, "viewer")
    with _browser(shared_hub) as client:
        _sign_in(client, token)
        assert client.get("/ui/").status_code == 200
        token_id = next(t["id"] for t in admin.get("/tokens").json() if t["id"] in token)
        assert admin.delete(f"/tokens/{token_id}").status_code == 204
        assert client.get("/ui/").status_code == 303


def test_static_assets_are_served_without_a_session(shared_hub: HubProcess) -> None:
    with _browser(shared_hub) as client:
        response = client.get("/ui/static/vendor/htmx.min.js")
    assert response.status_code == 200
    assert "htmx" in response.text[:2000]


def _ui_routes() -> list[tuple[str, str]]:
    found = operations()
    assert len(found) >= 3, "route enumeration found too few dashboard routes"
    return found


SIGN_IN_PATHS = {"/ui/login"}


@pytest.mark.parametrize(("method", "path"), [r for r in _ui_routes() if r[1] not in SIGN_IN_PATHS])
def test_every_dashboard_route_needs_a_session(
    shared_hub: HubProcess, method: str, path: str
) -> None:
    """Pages redirect to sign-in; posts are refused outright (403), before they do anything."""
    url = re.sub(r"\{[^}]+\}", "x", path)
    with _browser(shared_hub) as client:
        response = client.request(method, url, data={} if method == "POST" else None)
    if method == "GET":
        assert response.status_code == 303, (path, response.text)
        assert response.headers["location"] == "/ui/login"
    else:
        assert response.status_code == 403, (path, response.text)
