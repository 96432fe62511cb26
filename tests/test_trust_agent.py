"""The agent's side of trust without a hub: when it renews, what it says about its clock, and
that http:// hubs are refused."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from cryptography import x509

from aiorch.hub.pki.authority import Authority, HubCA, new_ca
from aiorch.hub.pki.keyfiles import key_pem, write_private
from edge_agent import identity
from edge_agent.client import TrustNews
from edge_agent.config import ConfigError
from edge_agent.trust import NotEnrolled, Trust, enroll_with_pin

DAY = 86400.0


def _issued(tmp_path: Path, now: float, life: float) -> Path:
    """An agent identity from a throwaway hub CA, valid from `now` for `life` seconds."""
    key, cert = new_ca(now, "t")
    write_private(tmp_path / "ca.key", key_pem(key))
    authority = Authority(tmp_path, [HubCA("ca1", cert, "active")], "standby", None)
    agent_key = identity.new_key()
    csr = x509.load_pem_x509_csr(identity.csr_pem(agent_key).encode())
    issued = authority.issue_agent("0123456789abcdef", csr, now, life)
    path = tmp_path / "state" / identity.IDENTITY_FILE
    identity.save(path, agent_key, issued.pem)
    identity.save_bundle(path.parent, authority.bundle_pem())
    return path


def test_an_agent_renews_at_about_two_thirds_of_its_certificates_life(tmp_path: Path) -> None:
    now = time.time()
    held = identity.load(_issued(tmp_path, now, 30 * DAY))
    assert held is not None
    start, life = held.not_before, held.not_after - held.not_before
    assert not held.renew_due(start + life * 0.55)
    assert held.renew_due(start + life * 0.78)


def test_a_clock_off_by_more_than_a_minute_is_said_once_and_its_end_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _issued(tmp_path, time.time(), 30 * DAY)
    trust = Trust(path.parent, "https://127.0.0.1:9", "0123456789abcdef", 1)
    caplog.set_level(logging.INFO, "aiorch.agent")
    for _ in range(3):
        trust.accepted(TrustNews(time.time() + 86400, None, False))
    lines = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert len(lines) == 1 and "86400 s behind the hub's" in lines[0]
    assert trust.now() == pytest.approx(time.time() + 86400, abs=5)
    trust.accepted(TrustNews(time.time() + 3, None, False))  # small skew: fine
    lines = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert len(lines) == 2 and "agrees with the hub again" in lines[1]
    trust.close()


def test_a_state_dir_without_a_certificate_is_not_enrolled(tmp_path: Path) -> None:
    with pytest.raises(NotEnrolled, match="aiorch-agent enroll"):
        Trust(tmp_path, "https://127.0.0.1:9", "0123456789abcdef", 1)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8700", "10.0.0.1:8700", "ftp://hub"])
def test_an_agent_refuses_a_hub_url_that_is_not_https(tmp_path: Path, url: str) -> None:
    token = "aie_0123456789abcdef_x:sha256:" + "0" * 64
    with pytest.raises(ConfigError, match="https://HOST:PORT"):
        enroll_with_pin(tmp_path, url, token, {}, 1)
