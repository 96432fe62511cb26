"""The keys a hub trusts to sign bundles: added once, listed, removed, every change audited;
the last key goes only when forced while content is imported; only a global admin changes them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from aiorch.bundle import keys
from aiorch.errors import Conflict, InvalidInput, NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, bundle_trust
from tests.fixtures_hub import HubProcess, make_token


@pytest.fixture(scope="module")
def key_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two bundle key pairs (gpg makes each: a second or so)."""
    dirs = [tmp_path_factory.mktemp(f"key{i}") for i in range(2)]
    for folder in dirs:
        keys.generate(folder)
    return dirs


def _pub(folder: Path) -> str:
    return (folder / keys.PUB_FILE).read_text()


def _key_id(folder: Path) -> str:
    return keys.load_public(folder / keys.PUB_FILE).id


def test_add_list_remove_each_audited(
    make_context: Callable[..., HubContext], key_dirs: list[Path]
) -> None:
    ctx = make_context()
    first, second = key_dirs
    added = bundle_trust.add(ctx, _pub(first), "admin")
    assert added["key_id"] == _key_id(first)
    bundle_trust.add(ctx, _pub(second), "admin")
    both = {_key_id(first), _key_id(second)}
    assert {k["key_id"] for k in bundle_trust.list_keys(ctx)} == both
    assert {k.id for k in bundle_trust.trusted(ctx.store.read())} == both
    bundle_trust.remove(ctx, _key_id(first), "admin")
    assert [k["key_id"] for k in bundle_trust.list_keys(ctx)] == [_key_id(second)]
    entries = [(e["action"], e["detail"]["key_id"]) for e in audit.list_entries(ctx)]
    assert entries == [
        ("bundle.trust.remove", _key_id(first)),
        ("bundle.trust.add", _key_id(second)),
        ("bundle.trust.add", _key_id(first)),
    ]


def test_a_duplicate_is_409_and_a_removed_key_can_come_back(
    make_context: Callable[..., HubContext], key_dirs: list[Path]
) -> None:
    ctx = make_context()
    bundle_trust.add(ctx, _pub(key_dirs[0]), "admin")
    with pytest.raises(Conflict, match="trusted already"):
        bundle_trust.add(ctx, _pub(key_dirs[0]), "admin")
    bundle_trust.remove(ctx, _key_id(key_dirs[0]), "admin")
    with pytest.raises(NotFound, match="is not trusted"):
        bundle_trust.remove(ctx, _key_id(key_dirs[0]), "admin")
    bundle_trust.add(ctx, _pub(key_dirs[0]), "admin")
    assert [k["key_id"] for k in bundle_trust.list_keys(ctx)] == [_key_id(key_dirs[0])]


def test_text_that_is_no_public_key_is_named(make_context: Callable[..., HubContext]) -> None:
    ctx = make_context()
    with pytest.raises(InvalidInput, match="not a bundle public key"):
        bundle_trust.add(ctx, "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n", "a")
    assert bundle_trust.list_keys(ctx) == []


def test_the_last_key_goes_only_when_forced_while_content_is_imported(
    make_context: Callable[..., HubContext], key_dirs: list[Path]
) -> None:
    ctx = make_context()
    only = _key_id(key_dirs[0])
    bundle_trust.add(ctx, _pub(key_dirs[0]), "admin")

    def imported(db):  # what an import leaves behind (tests/test_bundle_import.py makes real ones)
        db.execute(
            "INSERT INTO bundle_imports (digest, name, version, key_id, expires, imported_by, "
            "imported_at, is_current) VALUES ('sha256:00', 'site', 1, ?, '2030-01-01', 'a', 0, 1)",
            [only],
        )

    ctx.store.write(imported)
    with pytest.raises(Conflict, match="last trusted bundle key"):
        bundle_trust.remove(ctx, only, "admin")
    assert [k["key_id"] for k in bundle_trust.list_keys(ctx)] == [only]
    bundle_trust.remove(ctx, only, "admin", force=True)
    assert bundle_trust.list_keys(ctx) == []
    [entry] = audit.list_entries(ctx, action="bundle.trust.remove")
    assert entry["detail"] == {"key_id": only, "forced_last": True}


@pytest.mark.e2e
def test_trust_over_the_api_and_cli_global_admin_only(
    shared_hub: HubProcess, admin: httpx.Client, key_dirs: list[Path]
) -> None:
    first, second = key_dirs
    shared_hub.cli("bundle", "trust", "add", str(first / keys.PUB_FILE))
    listed = shared_hub.cli_json("bundle", "trust", "list")
    assert [k["key_id"] for k in listed] == [_key_id(first)]
    again = admin.post("/bundles/trust", json={"public_key": _pub(first)})
    assert again.status_code == 409 and _key_id(first) in again.json()["detail"]
    bad = admin.post("/bundles/trust", json={"public_key": "hello"})
    assert bad.status_code == 422 and "not a bundle public key" in bad.json()["detail"]
    for role in ("viewer", "operator"):
        with shared_hub.client(make_token(admin, role)) as client:
            assert client.get("/bundles/trust").status_code == 200
            refused = client.post("/bundles/trust", json={"public_key": _pub(second)})
            assert refused.status_code == 403
            assert client.delete(f"/bundles/trust/{_key_id(first)}").status_code == 403
            assert client.post("/bundles/import", json={"path": "/x"}).status_code == 403
    wrong = shared_hub.cli("bundle", "trust", "add", str(first / keys.KEY_FILE), check=False)
    assert wrong.returncode == 1 and "not a bundle public key" in wrong.stderr
    shared_hub.cli("bundle", "trust", "remove", _key_id(first))
    assert shared_hub.cli_json("bundle", "trust", "list") == []
    gone = shared_hub.cli("bundle", "trust", "remove", _key_id(first), check=False)
    assert gone.returncode == 1 and "is not trusted" in gone.stderr
    entries = admin.get("/audit", params={"limit": 20}).json()
    actions = [e["action"] for e in entries if e["action"].startswith("bundle.")]
    assert actions == ["bundle.trust.remove", "bundle.trust.add"]
