"""Models to the edge: the contract, the spec field, the hub's model store and its agent
route (Range), the agent's resumable downloader and model cache, facts and status."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiorch.deploy.spec import SpecError, load_spec
from aiorch.hub.context import HubContext
from aiorch.hub.services import enrollment, models, status
from edge_agent.client import DigestMismatch, HubClient, HubUnavailable
from edge_agent.contract.facts import parse_facts
from edge_agent.contract.fields import ContractError
from edge_agent.contract.model import ModelFile, ModelRef, model_digest, model_entry, parse_model
from edge_agent.contract.workload import parse_workload
from edge_agent.facts import collect_facts
from edge_agent.gpu.simulated import SimulatedBackend
from edge_agent.workloads.container import run_argv
from edge_agent.workloads.download import download
from edge_agent.workloads.models import ModelCache
from tests.fixtures_desired import a_workload
from tests.fixtures_hub import (
    AgentCert,
    HubProcess,
    enroll_agent,
    fresh_csr,
    make_enroll_token,
    tls_context,
)

SPEC = """apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {name: chat, project: nlp}
spec:
  image: localhost/aiorch-model:v1
  volumes: [{hostPath: /data, mountPath: /models}]
  models:
%s
"""
HEX = "a" * 64


def _weights(directory: Path, size: int = 3 << 20) -> Path:
    """A model directory: a large file (random, so no two tests share content) and a small one."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "weights.bin").write_bytes(os.urandom(size))
    (directory / "conf").mkdir(exist_ok=True)
    (directory / "conf" / "weights.json").write_text('{"weights": [1, 2, 3, 4], "bias": 0.5}')
    return directory


def _ref(files: tuple[ModelFile, ...], mount: str = "/models/w") -> ModelRef:
    return ModelRef("w", model_digest(files), files, mount)


# ---- contract and spec -------------------------------------------------------------------------


def test_spec_names_each_wrong_model_field():
    models_yaml = (
        "    - {name: w, digest: sha256:abc}\n"
        f"    - {{name: w, digest: 'sha256:{HEX}', mountPath: /models}}\n"
        f"    - {{name: '', digest: 'sha256:{HEX}', mountPath: relative}}"
    )
    with pytest.raises(SpecError) as caught:
        load_spec(SPEC % models_yaml)
    problems = "\n".join(caught.value.problems)
    assert "spec.models[0].digest: must be sha256:<64 lowercase hex digits>" in problems
    assert "spec.models[0].mountPath: required" in problems
    assert "spec.models[2].name" in problems and "spec.models[2].mountPath" in problems
    with pytest.raises(SpecError, match="mountPath /models is used more than once"):
        load_spec(SPEC % f"    - {{name: w, digest: 'sha256:{HEX}', mountPath: /models/}}")
    good = load_spec(SPEC % f"    - {{name: w, digest: 'sha256:{HEX}', mountPath: /weights}}")
    assert good.spec.models[0].mount_path == "/weights"


def test_a_model_reference_reads_back_and_its_digest_covers_its_files():
    files = (ModelFile("b/w.bin", "1" * 64, 10), ModelFile("a.json", "2" * 64, 3))
    ref = _ref(files)
    assert parse_model(model_entry(ref)) == ref
    assert model_digest(tuple(reversed(files))) == ref.digest, "the order of files is not content"
    entry = model_entry(ref)
    entry["files"][0]["size"] = 11
    with pytest.raises(ContractError, match="not the digest of its file list"):
        parse_model(entry)
    for bad in ("../etc/passwd", "/abs", "a//b", "a/./b", "x:y"):
        escaped = ModelFile(bad, "1" * 64, 1)
        with pytest.raises(ContractError, match="path"):
            parse_model(model_entry(_ref((escaped,))))
    workload = parse_workload(a_workload(models=[model_entry(ref)]))
    assert workload.models == (ref,)
    clash = a_workload(
        models=[model_entry(ref)],
        volumes=[{"host_path": "/data", "mount_path": "/models/w", "read_only": True}],
    )
    with pytest.raises(ContractError, match="mounted more than once"):
        parse_workload(clash)


def test_models_are_mounted_read_only_from_the_cache(tmp_path: Path):
    ref = _ref((ModelFile("w.bin", "1" * 64, 1),))
    workload = parse_workload(a_workload(models=[model_entry(ref)]))
    argv = run_argv(workload, "img", "owner", [], None, tmp_path)
    assert f"{tmp_path / ref.hex}:/models/w:ro" in argv


# ---- the hub's store ---------------------------------------------------------------------------


def test_register_links_files_into_blobs_and_collects_garbage_after_the_grace(
    tmp_path: Path, make_context: Any
):
    ctx: HubContext = make_context(image_gc_grace_s=60)
    source = _weights(tmp_path / "src", size=1024)
    files = [
        ("weights.bin", source / "weights.bin"),
        ("conf/weights.json", source / "conf" / "weights.json"),
    ]
    digest = models.register(ctx, "w", files, "user:t", project="default")
    stored = models.files_of(ctx.store.read(), "w", digest, frozenset({"default"}))
    assert stored is not None and [f.path for f in stored] == ["conf/weights.json", "weights.bin"]
    assert model_digest(stored) == digest
    blobs = sorted(p.name for p in models.blobs_dir(ctx).iterdir())
    assert blobs == sorted(f.sha256 for f in stored)
    assert models.register(ctx, "w", files, "user:t") == digest, "registering again is a no-op"
    with pytest.raises(Exception, match="belongs to another project"):
        models.register(ctx, "w", files, "user:t", project="nlp")

    assert models.collect_garbage(ctx) == {}, "within the grace a model stays"
    ctx.clock.now += 61  # type: ignore[attr-defined]
    assert models.collect_garbage(ctx) == {"model_rows": 1, "model_files": 2}
    assert models.list_models(ctx) == [] and not list(models.blobs_dir(ctx).iterdir())


# ---- end to end: push, the agent route, resumable downloads -----------------------------------


class CutClient(HubClient):
    """The agent's client, whose next download the network cuts after `cut_at` bytes."""

    cut_at: int | None = None

    def open_get(self, path: str, headers: dict[str, str]) -> Any:
        conn, response = super().open_get(path, headers)
        limit, self.cut_at = self.cut_at, None
        if limit is None:
            return conn, response
        real, sent = response.read, 0

        def read(amount: int) -> bytes:
            nonlocal sent
            if sent >= limit:
                conn.close()
                raise ConnectionResetError("connection cut")
            data = real(min(amount, limit - sent))
            sent += len(data)
            return data

        response.read = read  # type: ignore[method-assign]
        return conn, response


def _pushed(hub: HubProcess, directory: Path) -> dict[str, Any]:
    pushed = hub.cli_json("model", "push", str(directory), "--name", "weights")
    listed = {m["digest"]: m for m in hub.cli_json("model", "list")}
    assert listed[pushed["digest"]]["files"] == 2
    return dict(pushed)


def _agent_with_model(hub: HubProcess, admin: httpx.Client, ref: ModelRef) -> AgentCert:
    agent = enroll_agent(hub, make_enroll_token(admin), "edge-a")
    document = {"workloads": [a_workload(models=[model_entry(ref)])]}
    answer = admin.put(f"/agents/{agent['agent_id']}/desired", json={"document": document})
    assert answer.status_code == 200, answer.text
    return agent["credential"]


def _files(hub: HubProcess, digest: str) -> tuple[ModelFile, ...]:
    from aiorch.hub.settings import HubSettings
    from aiorch.hub.store import Store

    settings = HubSettings(data_dir=hub.data_dir)
    store = Store(settings.db_path).open()
    try:
        found = models.files_of(store.read(), "weights", digest, frozenset({"default"}))
    finally:
        store.close()
    assert found
    return found


def test_an_agent_downloads_its_model_with_range_and_resumes_after_a_cut(
    hub: HubProcess, tmp_path: Path
):
    pushed = _pushed(hub, _weights(tmp_path / "model"))
    files = _files(hub, pushed["digest"])
    big = next(f for f in files if f.path == "weights.bin")
    with hub.client(hub.admin_token) as admin:
        ref = ModelRef("weights", pushed["digest"], files, "/models/w")
        cert = _agent_with_model(hub, admin, ref)
        other = enroll_agent(hub, make_enroll_token(admin), "edge-b")["credential"]
    route = f"/agents/{cert.agent_id}/models/{pushed['digest']}/files/weights.bin"
    with hub.client(cert) as agent:
        ranged = agent.get(route, headers={"Range": "bytes=1000-"})
        assert ranged.status_code == 206 and len(ranged.content) == big.size - 1000
        assert ranged.headers["content-range"] == f"bytes 1000-{big.size - 1}/{big.size}"
        unnamed = f"/agents/{cert.agent_id}/models/sha256:{HEX}/files/weights.bin"
        assert agent.get(unnamed).status_code == 403
        assert agent.get(route.replace("weights.bin", "other.bin")).status_code == 403
    with hub.client(other) as stranger:
        assert stranger.get(route).status_code == 403, "another host's agent gets nothing"

    client = CutClient(hub.url, tls_context(hub.ca_path, cert))
    dest = tmp_path / "cache" / "weights.bin"
    client.cut_at = big.size // 2
    with pytest.raises(HubUnavailable, match="cut"):
        download(client, route, dest, big.sha256, big.size)
    partial = dest.with_name("weights.bin.partial")
    assert not dest.exists() and partial.stat().st_size == big.size // 2
    transfer = download(client, route, dest, big.sha256, big.size)
    assert transfer.resumed and transfer.received < 1.3 * big.size
    assert transfer.received == big.size, "the rest came, not the whole file again"
    assert (tmp_path / "model" / "weights.bin").read_bytes() == dest.read_bytes()
    assert not partial.exists()

    # A file the hub changed meanwhile (another validator): If-Range gets it whole.
    dest.unlink()
    client.cut_at = 1 << 20
    with pytest.raises(HubUnavailable):
        download(client, route, dest, big.sha256, big.size)
    meta = dest.with_name("weights.bin.partial.json")
    meta.write_text(json.dumps({"etag": '"changed"', "received": 1 << 20}))
    again = download(client, route, dest, big.sha256, big.size)
    assert not again.resumed and again.received == (1 << 20) + big.size
    assert dest.read_bytes() == (tmp_path / "model" / "weights.bin").read_bytes()

    # A partial file that went bad on disk: the whole is discarded, the next try starts over.
    dest.unlink()
    client.cut_at = 1 << 20
    with pytest.raises(HubUnavailable):
        download(client, route, dest, big.sha256, big.size)
    partial.write_bytes(b"\0" * (1 << 20))
    with pytest.raises(DigestMismatch):
        download(client, route, dest, big.sha256, big.size)
    assert not partial.exists() and not dest.exists()
    assert download(client, route, dest, big.sha256, big.size).received == big.size
    client.close()


def test_the_model_cache_fetches_every_file_then_serves_it_and_forgets_it(
    hub: HubProcess, tmp_path: Path
):
    pushed = _pushed(hub, _weights(tmp_path / "model", size=1 << 20))
    files = _files(hub, pushed["digest"])
    ref = ModelRef("weights", pushed["digest"], files, "/models/w")
    with hub.client(hub.admin_token) as admin:
        cert = _agent_with_model(hub, admin, ref)
    client = HubClient(hub.url, tls_context(hub.ca_path, cert))

    def fetch(model: ModelRef, entry: ModelFile, dest: Path) -> Any:
        path = f"/agents/{cert.agent_id}/models/{model.digest}/files/{entry.path}"
        return download(client, path, dest, entry.sha256, entry.size)

    cache = ModelCache(tmp_path / "cache", fetch)
    ready = cache.resolve(ref, deadline=time.monotonic() + 60)
    assert ready.state == "ready", ready.reason
    held = cache.path(ref)
    assert (held / "conf" / "weights.json").read_text().startswith('{"weights"')
    assert (held / "weights.bin").stat().st_mode & 0o777 == 0o644
    assert cache.held() == [ref.digest]
    assert cache.transfers()[f"{ref.hex}/weights.bin"]["received"] == 1 << 20
    cache.prune({ref.digest})
    assert held.is_dir(), "a model a workload names stays"
    cache.prune(set())
    assert not held.exists() and cache.held() == []
    cache.close()
    client.close()


# ---- facts and status --------------------------------------------------------------------------


def test_facts_carry_the_site_release_and_the_cached_models(tmp_path: Path, make_context: Any):
    release = tmp_path / "site-release.json"
    release.write_text(json.dumps({"version": 7, "digest": f"sha256:{HEX}"}))
    digest = f"sha256:{'b' * 64}"
    facts = collect_facts(SimulatedBackend("none"), lambda: [digest], release)
    assert facts["site_release"] == {"version": 7, "digest": f"sha256:{HEX}"}
    parsed = parse_facts(facts)
    assert parsed.site_release is not None and parsed.site_release.version == 7
    assert parsed.models == (digest,)
    release.write_text(json.dumps({"version": "seven", "digest": "x"}))
    broken = collect_facts(SimulatedBackend("none"), list, release)
    assert broken["site_release"] is None and "site_release" in broken["collection_errors"]
    assert collect_facts(SimulatedBackend("none"), list, tmp_path / "none")["site_release"] is None

    ctx: HubContext = make_context()
    token = enrollment.create_token(ctx, "edge1", 3600, 10, "user:t")["token"]
    for name, version in (("a", 7), ("b", 7), ("c", 5)):
        host = {**facts, "hostname": name}
        host["site_release"] = {"version": version, "digest": f"sha256:{HEX}"}
        enrollment.enroll(ctx, token, fresh_csr(), host, "1")
    site = status.overview(ctx)["sites"][0]
    assert site["site"] == "edge1" and site["releases"] == {"5": 1, "7": 2}
    assert site["models"] == [digest]
