"""The hub imports signed content bundles fail-closed and atomically: a refused bundle, or one
whose blob turns out corrupt while it is copied, leaves the current content, /repo and every
registry as they were; a good one swaps them in one step and is audited with its digest, key
and version; a downgrade needs --allow-downgrade and is audited as one."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiorch.bundle import keys
from aiorch.bundle.verify import BundleRefused, VerifiedBundle, verify_bundle
from aiorch.endpoint import hub_tls
from aiorch.errors import Conflict, InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, bundle_trust, bundles, images, runs
from tests.bundle_builder import make_bundle
from tests.fixtures_hub import HubProcess
from tests.test_runs_units import add_host


@dataclass(frozen=True)
class Keys:
    trusted: Path
    other: Path


@pytest.fixture(scope="module")
def key_dirs(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    made = Keys(tmp_path_factory.mktemp("trusted"), tmp_path_factory.mktemp("other"))
    keys.generate(made.trusted)
    keys.generate(made.other)
    return made


@pytest.fixture
def ctx(make_context: Callable[..., HubContext], key_dirs: Keys) -> HubContext:
    """A hub that trusts `key_dirs.trusted`."""
    made = make_context()
    bundle_trust.add(made, (key_dirs.trusted / keys.PUB_FILE).read_text(), "admin")
    return made


def _site(packages: str) -> dict[str, bytes]:
    """A tiny site repository: what the hub serves at /repo."""
    return {
        "debs/Packages": packages.encode(),
        "debs/aiorch-archive-keyring.gpg": b"keyring bytes",
        "wheels/index.html": b"<html></html>",
    }


def _bundle(tmp: Path, key: Path, version: int, packages: str, **extra: Any) -> Path:
    out = tmp / f"b{version}-{hashlib.sha256(f'{key}{packages}'.encode()).hexdigest()[:8]}"
    return make_bundle(out, key, version, _site(packages), **extra)


def _served(ctx: HubContext, rel: str = "debs/Packages") -> str | None:
    repo = bundles.served_repo(ctx)
    return None if repo is None else (repo / rel).read_text()


def _imports(ctx: HubContext) -> list[tuple[int, bool]]:
    return [(r["version"], r["current"]) for r in bundles.list_imports(ctx)]


def test_a_good_import_becomes_current_and_is_audited(
    ctx: HubContext, key_dirs: Keys, tmp_path: Path
) -> None:
    assert bundles.served_repo(ctx) is None and bundles.run_vars(ctx) == {}
    made = _bundle(tmp_path, key_dirs.trusted, 5, "Package: chrony\n")
    shown = bundles.import_bundle(ctx, str(made), "admin")
    key_id = keys.load_public(key_dirs.trusted / keys.PUB_FILE).id
    assert shown["version"] == 5 and shown["current"] and shown["key_id"] == key_id
    assert _served(ctx) == "Package: chrony\n"
    [entry] = audit.list_entries(ctx, action="bundle.import")
    assert entry["detail"] == {
        "digest": shown["digest"],
        "key_id": key_id,
        "version": 5,
        "name": shown["name"],
    }
    release = bundles.content_store(ctx).current_release()
    assert release is not None and release.name == shown["digest"].removeprefix("sha256:")
    assert bundles.run_vars(ctx) == {
        "aiorch_site_repo_keyring_file": str(release / bundles.KEYRING),
        "aiorch_site_repo_release_version": 5,
        "aiorch_site_repo_release_digest": shown["digest"],
    }
    with pytest.raises(Conflict, match="current content already"):
        bundles.import_bundle(ctx, str(made), "admin")


def test_every_run_is_given_the_current_release(
    make_context: Callable[..., HubContext], key_dirs: Keys, tmp_path: Path
) -> None:
    """The keyring path, version and digest reach each run's playbook; a run's own extra
    vars cannot point the keyring var at another file of the hub; `--repo` hubs give only
    their repository's keyring."""
    ctx = make_context(playbooks_dir=Path(__file__).parent / "playbooks", preflight_timeout_s=1)
    bundle_trust.add(ctx, (key_dirs.trusted / keys.PUB_FILE).read_text(), "admin")
    shown = bundles.import_bundle(
        ctx, str(_bundle(tmp_path, key_dirs.trusted, 4, "Package: x\n")), "admin"
    )
    target = tmp_path / "host"
    target.mkdir()
    hostvars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "target_dir": str(target),
    }
    add_host(ctx, "local1", vars=hostvars)
    sneaky = {"aiorch_site_repo_keyring_file": str(ctx.settings.data_dir / "ca.key")}
    with pytest.raises(InvalidInput, match="aiorch_site_repo_keyring_file"):
        runs.start_run(ctx, runs.RunRequest("site_release.yml", extravars=sneaky), "user:t")
    run = runs.start_run(ctx, runs.RunRequest("site_release.yml"), "user:test")
    runs.wait(run["id"], 120)
    done = runs.get_run(ctx, run["id"])
    assert done["status"] == "successful", done["message"]
    assert (target / "aiorch-site.gpg").read_bytes() == b"keyring bytes"
    written = json.loads((target / "site-release.json").read_text())
    assert written == {"version": 4, "digest": shown["digest"]}
    ctx.repo_dir = tmp_path  # as `hub serve --repo DIR` sets it: no release, its own keyring
    assert bundles.run_vars(ctx) == {}
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / "aiorch-archive-keyring.gpg").write_bytes(b"ring")
    keyring = str(tmp_path / "debs" / "aiorch-archive-keyring.gpg")
    assert bundles.run_vars(ctx) == {"aiorch_site_repo_keyring_file": keyring}


def _untrusted(tmp: Path, keys_: Keys, _: Path) -> tuple[Path, str]:
    return _bundle(tmp, keys_.other, 9, "Package: evil\n"), "not trusted"


def _expired(tmp: Path, keys_: Keys, _: Path) -> tuple[Path, str]:
    # The context's clock stands in 2027; a bundle made now for one day expired long before.
    return _bundle(tmp, keys_.trusted, 9, "Package: old\n", expires_in_days=1), "expired"


def _replay(tmp: Path, keys_: Keys, _: Path) -> tuple[Path, str]:
    return _bundle(tmp, keys_.trusted, 1, "Package: older\n"), "older than 5"


def _delta_without_base(tmp: Path, keys_: Keys, _: Path) -> tuple[Path, str]:
    # The base's unique file, which the delta leaves out, is nowhere on this hub.
    unique = {"installer.sh": b"only the base ships this"}
    base = _bundle(tmp, keys_.trusted, 7, "Package: never imported\n", extra_files=unique)
    delta = _bundle(tmp, keys_.trusted, 8, "Package: delta\n", since=base, extra_files=unique)
    return delta, "base is not present"


def _tampered(tmp: Path, keys_: Keys, _: Path) -> tuple[Path, str]:
    made = _bundle(tmp, keys_.trusted, 9, "Package: tampered\n")
    blob = next(p for p in (made / "blobs" / "sha256").iterdir() if p.read_bytes() != b"")
    data = bytearray(blob.read_bytes())
    data[0] ^= 1
    blob.write_bytes(bytes(data))
    return made, "sha256 mismatch"


@pytest.mark.parametrize(
    "refused",
    [_untrusted, _expired, _replay, _delta_without_base, _tampered],
    ids=lambda f: f.__name__,
)
def test_a_refused_bundle_changes_nothing(
    ctx: HubContext,
    key_dirs: Keys,
    tmp_path: Path,
    refused: Callable[[Path, Keys, Path], tuple[Path, str]],
) -> None:
    good = bundles.import_bundle(
        ctx, str(_bundle(tmp_path, key_dirs.trusted, 5, "Package: good\n")), "admin"
    )
    before = (audit.list_entries(ctx), _imports(ctx), sorted(_tree(ctx)))
    made, problem = refused(tmp_path, key_dirs, tmp_path)
    with pytest.raises(BundleRefused, match=problem):
        bundles.import_bundle(ctx, str(made), "admin")
    assert _served(ctx) == "Package: good\n"
    assert (audit.list_entries(ctx), _imports(ctx), sorted(_tree(ctx))) == before
    assert bundles.current(ctx)["digest"] == good["digest"]  # type: ignore[index]


def _tree(ctx: HubContext) -> Iterator[str]:
    """Every path under the content store but its lock: what a refusal must not change."""
    root = bundles.content_store(ctx).root
    return (str(p.relative_to(root)) for p in root.rglob("*") if p.name != ".lock")


def test_a_blob_that_turns_corrupt_while_copied_fails_before_the_swap(
    ctx: HubContext, key_dirs: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The media fails after verification: the copy's own hash check catches it half-way
    (the first blob copied, the second not), and nothing becomes current."""
    bundles.import_bundle(
        ctx, str(_bundle(tmp_path, key_dirs.trusted, 5, "Package: good\n")), "admin"
    )
    made = _bundle(tmp_path, key_dirs.trusted, 6, "Package: new\n", extra_files={"x": b"x" * 9})
    victim: list[str] = []

    def verify_then_fail(*args: Any, **kwargs: Any) -> VerifiedBundle:
        verified = verify_bundle(*args, **kwargs)
        store = bundles.content_store(ctx)
        missing = sorted(sha for sha in verified.shipped() if not store.has_blob(sha))
        assert len(missing) >= 2, "the test wants a blob copied before the corrupt one"
        victim.extend((missing[0], missing[-1]))
        blob = made / "blobs" / "sha256" / missing[-1]
        data = bytearray(blob.read_bytes())
        data[-1] ^= 1
        blob.write_bytes(bytes(data))
        return verified

    monkeypatch.setattr(bundles, "verify_bundle", verify_then_fail)
    with pytest.raises(BundleRefused, match="changed while it was copied"):
        bundles.import_bundle(ctx, str(made), "admin")
    assert _served(ctx) == "Package: good\n" and _imports(ctx) == [(5, True)]
    store = bundles.content_store(ctx)
    copied, corrupt = victim
    assert store.has_blob(copied), "the copy got half-way: the blob before the corrupt one"
    assert not store.has_blob(corrupt) and list(store.tmp.iterdir()) == []
    assert [e["detail"]["version"] for e in audit.list_entries(ctx, action="bundle.import")] == [5]


def test_a_hook_that_refuses_registers_nothing(
    ctx: HubContext, key_dirs: Keys, tmp_path: Path
) -> None:
    """An image whose reference another project owns: the import is refused whole."""
    archive = tmp_path / "model.tar"
    archive.write_bytes(b"an OCI archive")

    def owned(db: Any) -> None:
        db.execute("INSERT INTO projects (name, created_by, created_at) VALUES ('bravo', 'a', 0)")
        db.execute(
            "INSERT INTO images (ref, digest, size, created_by, created_at, project) VALUES "
            "('docker.io/library/model:v1', 'sha256:00', 1, 'a', 0, 'bravo')"
        )

    ctx.store.write(owned)
    made = _bundle(tmp_path, key_dirs.trusted, 5, "Package: x\n", images={"model:v1": archive})
    with pytest.raises(Conflict, match="belongs to another project"):
        bundles.import_bundle(ctx, str(made), "admin")
    assert bundles.served_repo(ctx) is None and _imports(ctx) == []
    assert [i["digest"] for i in images.list_images(ctx)] == ["sha256:00"]


def test_images_in_a_bundle_reach_the_image_store(
    ctx: HubContext, key_dirs: Keys, tmp_path: Path
) -> None:
    archive = tmp_path / "model.tar"
    archive.write_bytes(b"an OCI archive")
    made = _bundle(tmp_path, key_dirs.trusted, 5, "Package: x\n", images={"model:v1": archive})
    bundles.import_bundle(ctx, str(made), "admin")
    [image] = images.list_images(ctx)
    assert image["ref"] == "docker.io/library/model:v1" and image["project"] == "default"
    assert images.blob_path(ctx, image["digest"]).read_bytes() == b"an OCI archive"
    [entry] = audit.list_entries(ctx, action="image.import")
    assert entry["detail"]["digest"] == image["digest"]


def test_a_downgrade_needs_the_flag_and_is_audited(
    ctx: HubContext, key_dirs: Keys, tmp_path: Path
) -> None:
    old = _bundle(tmp_path, key_dirs.trusted, 5, "Package: old\n")
    new = _bundle(tmp_path, key_dirs.trusted, 6, "Package: new\n")
    bundles.import_bundle(ctx, str(old), "admin")
    bundles.import_bundle(ctx, str(new), "admin")
    with pytest.raises(BundleRefused, match="older than 6"):
        bundles.import_bundle(ctx, str(old), "admin")
    shown = bundles.import_bundle(ctx, str(old), "admin", allow_downgrade=True)
    assert shown["downgrade"] and _served(ctx) == "Package: old\n"
    assert _imports(ctx) == [(5, True), (6, False)]
    [entry] = audit.list_entries(ctx, action="bundle.downgrade")
    assert entry["detail"]["version"] == 5 and entry["detail"]["highest_version"] == 6
    assert entry["detail"]["digest"] == shown["digest"]
    # Back up to the highest: the same digest at the same version is no replay.
    bundles.import_bundle(ctx, str(new), "admin")
    assert _served(ctx) == "Package: new\n" and _imports(ctx)[0] == (6, True)


def test_a_delta_on_an_imported_base_imports_and_old_releases_go(
    ctx: HubContext, key_dirs: Keys, tmp_path: Path
) -> None:
    first = _bundle(tmp_path, key_dirs.trusted, 1, "Package: one\n")
    second = _bundle(tmp_path, key_dirs.trusted, 2, "Package: two\n")
    delta = _bundle(tmp_path, key_dirs.trusted, 3, "Package: three\n", since=second)
    for made in (first, second, delta):
        bundles.import_bundle(ctx, str(made), "admin")
    assert _served(ctx) == "Package: three\n" and _served(ctx, "wheels/index.html")
    store = bundles.content_store(ctx)
    kept = {p.name for p in store.releases.iterdir()}
    assert kept == {r["digest"].removeprefix("sha256:") for r in bundles.list_imports(ctx)[:2]}
    assert all(blob.stat().st_nlink > 1 for blob in store.blobs.iterdir())
    assert not any(blob.read_bytes() == b"Package: one\n" for blob in store.blobs.iterdir())


def test_a_relative_or_missing_path_is_named(ctx: HubContext) -> None:
    with pytest.raises(Exception, match="must be absolute"):
        bundles.import_bundle(ctx, "bundle", "admin")
    with pytest.raises(Exception, match="no such directory on the hub"):
        bundles.import_bundle(ctx, "/nonexistent/bundle", "admin")


# ---- against a real hub --------------------------------------------------------------------


@pytest.mark.e2e
def test_import_over_the_cli_swaps_repo_live(hub: HubProcess, key_dirs: Keys, tmp_path: Path):
    repo = httpx.Client(base_url=hub.url, verify=hub_tls(hub.ca_path), timeout=30)
    assert repo.get("/repo/debs/Packages").status_code == 404  # nothing imported yet
    hub.cli("bundle", "trust", "add", str(key_dirs.trusted / keys.PUB_FILE))
    first = _bundle(tmp_path, key_dirs.trusted, 3, "Package: first\n")  # below the refused 9s
    shown = hub.cli_json("bundle", "import", str(first))
    assert shown["version"] == 3 and shown["current"]
    assert repo.get("/repo/debs/Packages").text == "Package: first\n"
    assert repo.get("/repo/debs/").status_code == 404  # no listings
    for target in (b"/repo/../../../aiorch.db", b"/repo/%2e%2e/%2e%2e/%2e%2e/aiorch.db"):
        assert repo.get("/", extensions={"target": target}).status_code == 404  # no escape

    tampered, _ = _tampered(tmp_path, key_dirs, tmp_path)
    refused = hub.cli("bundle", "import", str(tampered), check=False)
    assert refused.returncode == 1 and "sha256 mismatch" in refused.stderr
    assert "Traceback" not in refused.stderr
    untrusted, _ = _untrusted(tmp_path, key_dirs, tmp_path)
    with hub.client(hub.admin_token) as api:
        answer = api.post("/bundles/import", json={"path": str(untrusted)})
        assert 400 <= answer.status_code < 500 and "not trusted" in answer.json()["detail"]
        relative = api.post("/bundles/import", json={"path": "bundle"})
        assert relative.status_code == 422 and "absolute" in relative.json()["detail"]
    assert repo.get("/repo/debs/Packages").text == "Package: first\n"

    second = _bundle(tmp_path, key_dirs.trusted, 11, "Package: second\n")
    hub.cli("bundle", "import", str(second))
    assert repo.get("/repo/debs/Packages").text == "Package: second\n"  # no restart
    listed = hub.cli_json("bundle", "list")
    assert [(b["version"], b["current"]) for b in listed] == [(11, True), (3, False)]
    status = hub.cli_json("status")
    assert status["bundle"]["version"] == 11 and status["bundle"]["digest"] == listed[0]["digest"]
    entries = json.loads(hub.cli("audit", "--output", "json").stdout)
    imported = [e["detail"] for e in entries if e["action"] == "bundle.import"]
    assert [d["version"] for d in imported] == [11, 3]
