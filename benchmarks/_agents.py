"""Enrolled agents for the benchmarks: each with its own key and certificate, as real agents
have, and the TLS contexts that verify the hub by its CA and present an agent's certificate."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from aiorch.hub.context import HubContext
from aiorch.hub.process import HubProcess
from aiorch.hub.services import enrollment
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store
from edge_agent import identity


@dataclass(frozen=True)
class BenchAgent:
    agent_id: str
    pem: Path  # its key and certificate, as identity.pem holds them


def hub_tls(ca: Path, agent: BenchAgent | None = None) -> ssl.SSLContext:
    """Verify the hub by its CA (DATA_DIR/ca.pem); present `agent`'s certificate if given."""
    context = ssl.create_default_context(cafile=str(ca))
    if agent is not None:
        context.load_cert_chain(agent.pem)
    return context


def admin_client(hub: HubProcess, timeout: float = 30) -> httpx.Client:
    headers = {"Authorization": f"Bearer {hub.admin_token}"}
    verify = hub_tls(hub.ca_path)
    return httpx.Client(
        base_url=f"{hub.url}/api/v1", headers=headers, verify=verify, timeout=timeout
    )


def _save(where: Path, key: ec.EllipticCurvePrivateKey, answer: dict[str, str]) -> BenchAgent:
    saved = identity.save(where / f"{answer['agent_id']}.pem", key, answer["certificate"])
    return BenchAgent(answer["agent_id"], saved.path)


def enroll_agents(hub: HubProcess, count: int, where: Path, prefix: str) -> list[BenchAgent]:
    """`count` agents enrolled through the running hub's API, a CSR each."""
    where.mkdir(parents=True, exist_ok=True)
    agents = []
    with admin_client(hub) as admin:
        token = admin.post("/enroll-tokens", json={"site": "bench", "uses": count}).json()["token"]
        for n in range(count):
            key = identity.new_key()
            body = {"token": token, "csr": identity.csr_pem(key),
                    "facts": {"hostname": f"{prefix}-{n}"}}  # fmt: skip
            response = admin.post("/enroll", json=body)
            response.raise_for_status()
            agents.append(_save(where, key, response.json()))
    return agents


def enroll_offline(data_dir: Path, count: int, where: Path, prefix: str) -> list[BenchAgent]:
    """Enroll through the service layer before the hub runs (fast, and the same rows); the
    hub started on `data_dir` afterwards serves with the CA made here."""
    settings = HubSettings(data_dir=data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    where.mkdir(parents=True, exist_ok=True)
    ctx = HubContext(store=Store(settings.db_path).open(), settings=settings)
    try:
        token = enrollment.create_token(ctx, "bench", 3600, count, "bench")["token"]
        agents = []
        for n in range(count):
            key = identity.new_key()
            facts = {"hostname": f"{prefix}-{n}"}
            answer = enrollment.enroll(ctx, token, identity.csr_pem(key), facts, "bench")
            agents.append(_save(where, key, answer))
    finally:
        ctx.store.close()
    return agents
