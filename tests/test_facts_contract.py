"""The host-facts contract: the agent's real facts read as the hub reads them, and an agent
never sends a section the hub would refuse."""

from __future__ import annotations

import dataclasses
import os

import psutil
import pytest

from edge_agent.contract.facts import parse_facts
from edge_agent.contract.fields import ContractError
from edge_agent.facts import collect_facts
from edge_agent.gpu import GpuInfo, NullBackend, SimulatedBackend


class BrokenGpus(SimulatedBackend):
    """A simulated GPU whose driver reports a negative memory size."""

    def inventory(self) -> list[GpuInfo]:
        first = super().inventory()[0]
        return [dataclasses.replace(first, memory_total_bytes=-1)]


def test_hub_reads_the_facts_this_host_reports() -> None:
    facts = parse_facts(collect_facts(NullBackend()))
    assert facts.cpu_logical == os.cpu_count()
    assert facts.memory_total_bytes == psutil.virtual_memory().total
    assert facts.gpus == () and not facts.gpus_simulated


def test_hub_reads_simulated_gpus_as_simulated() -> None:
    backend = SimulatedBackend("8xH100-80GB")
    facts = parse_facts(collect_facts(backend))
    assert [g.index for g in facts.gpus] == list(range(8))
    assert facts.gpus_simulated and facts.gpus[0].memory_mib > 80_000


def test_agent_reports_a_refused_section_instead_of_sending_it() -> None:
    facts = collect_facts(BrokenGpus("8xH100-80GB"))
    assert facts["gpus"] is None
    assert "gpus[0].memory_total_bytes" in facts["collection_errors"]["gpus"]
    assert parse_facts(facts).gpus == ()  # what it sends passes the hub's door


def test_runtime_readiness_keeps_old_agents_placeable() -> None:
    assert parse_facts({}).can_run_workloads  # agents from before the runtime fact
    assert not parse_facts({"container_runtime": None}).can_run_workloads
    assert parse_facts({"container_runtime": "podman"}).can_run_workloads


def test_a_gpu_listed_twice_is_refused() -> None:
    gpu = {"index": 0, "name": "NVIDIA L4", "memory_total_bytes": 2**34}
    with pytest.raises(ContractError, match="list GPU index 0 more than once"):
        parse_facts({"gpus": [gpu, gpu]})


def test_facts_nested_without_end_are_refused() -> None:
    deep: dict[str, object] = {}
    for _ in range(100):
        deep = {"x": deep}
    with pytest.raises(ContractError, match="nests deeper than 32 levels"):
        parse_facts({"os": deep})


def test_the_host_keys_are_read_as_known_hosts_holds_them(tmp_path) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxiyTrfbVYW6bnFbkr1pYrRU2jVXJX3BUdnBcV2sJ+q"
    (tmp_path / "ssh_host_ed25519_key.pub").write_text(f"{key} root@pxe1\n")
    (tmp_path / "ssh_host_odd_key.pub").write_text("not a key\n")  # left out, not sent
    facts = collect_facts(NullBackend(), ssh_dir=tmp_path)
    assert facts["ssh_host_keys"] == [key] and parse_facts(facts).ssh_host_keys == (key,)


@pytest.mark.parametrize(
    "key",
    [
        "ssh-ed25519 AAAA\n@cert-authority * ssh-ed25519 AAAA",
        "ssh-dss AAAAB3NzaC1kc3M=",
        "ssh-ed25519 AAAA root@pxe1",
        "ssh-ed25519 AAAA\n",
    ],
    ids=["a-second-line", "unknown-type", "a-comment", "a-newline"],
)
def test_a_host_key_that_could_carry_more_than_a_key_is_refused(key: str) -> None:
    with pytest.raises(ContractError, match=r"ssh_host_keys\[0\]"):
        parse_facts({"ssh_host_keys": [key]})
