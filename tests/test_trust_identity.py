"""Agent identity at the service level, on a real store with a hand-moved clock: the CA made
once, enrollment with a CSR the hub does not obey, takeovers refused, and renewal by proof
after weeks offline, within the grace window and not past it."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aiorch.errors import Conflict, InvalidInput, Unauthorized, UserError
from aiorch.hub.context import HubContext
from aiorch.hub.pki.bootstrap import open_authority
from aiorch.hub.pki.keyfiles import init_lock
from aiorch.hub.services import agent_identity, enrollment
from aiorch.hub.store import Store
from edge_agent import identity
from edge_agent.contract.identity import AGENT_URI_PREFIX, split_token

DAY = 86400.0


def _token(ctx: HubContext, **extra: object) -> str:
    return str(enrollment.create_token(ctx, "edge1", 3600, 5, "user:t", **extra)["token"])  # type: ignore[arg-type]


def _enroll(ctx: HubContext, host: str = "box1", token: str | None = None) -> tuple[dict, Path]:
    key = identity.new_key()
    answer = enrollment.enroll(
        ctx, token or _token(ctx), identity.csr_pem(key), {"hostname": host}, "test"
    )
    path = ctx.settings.data_dir / f"{host}-{answer['agent_id']}.pem"
    identity.save(path, key, answer["certificate"])
    return answer, path


def _proof(ctx: HubContext, path: Path) -> dict:
    held = identity.load(path)
    assert held is not None
    nonce = agent_identity.issue_nonce(ctx)["nonce"]
    csr = identity.csr_pem(identity.new_key())
    return {
        "cert_pem": held.cert_pem,
        "csr_pem": csr,
        "nonce": nonce,
        "signature_b64": held.sign_proof(nonce, csr),
    }


def test_the_token_carries_the_pin_of_the_ca_the_hub_serves(make_context: Callable) -> None:
    ctx = make_context()
    secret, pin = split_token(_token(ctx))
    assert secret.startswith("aie_") and pin == ctx.authority.active.pin
    ca = x509.load_pem_x509_certificate((ctx.settings.data_dir / "ca.pem").read_bytes())
    assert identity.pinned(ca.public_bytes(serialization.Encoding.PEM).decode(), pin)


def test_the_certificate_names_the_agent_and_nothing_the_csr_asked_for(
    make_context: Callable,
) -> None:
    ctx = make_context()
    key = identity.new_key()
    greedy = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub\x1b[2J")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("hub.example"),
                    x509.UniformResourceIdentifier(AGENT_URI_PREFIX + "0" * 16),
                ]
            ),
            False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    answer = enrollment.enroll(ctx, _token(ctx), greedy, {"hostname": "box1"}, "test")
    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        AGENT_URI_PREFIX + answer["agent_id"]
    ]
    assert san.get_values_for_type(x509.DNSName) == []
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert "\x1b" not in cert.subject.rfc4514_string()
    # Backdated five minutes: an edge box a little behind still accepts it.
    assert cert.not_valid_before_utc.timestamp() == pytest.approx(ctx.clock() - 300, abs=1)


def test_a_csr_that_does_not_prove_its_key_is_refused(make_context: Callable) -> None:
    ctx = make_context()
    with pytest.raises(InvalidInput, match="csr"):
        enrollment.enroll(ctx, _token(ctx), "not a csr", {"hostname": "box1"}, "test")


def test_a_site_token_cannot_take_over_an_enrolled_host(make_context: Callable) -> None:
    ctx = make_context()
    first, _ = _enroll(ctx, "box1")
    with pytest.raises(Conflict, match=r"host box1 is enrolled.*--host box1 --replace"):
        _enroll(ctx, "box1")
    with pytest.raises(Exception, match="for host box1, not box2"):
        _enroll(ctx, "box2", _token(ctx, host="box1", replace=True))
    second, _ = _enroll(ctx, "box1", _token(ctx, host="box1", replace=True))
    db = ctx.store.read()
    revoked = db.execute(
        "SELECT revoked_at FROM agents WHERE id = ?", [first["agent_id"]]
    ).fetchone()
    assert revoked[0] is not None and second["agent_id"] != first["agent_id"]


def test_a_used_up_token_is_401(make_context: Callable) -> None:
    ctx = make_context()
    token = str(enrollment.create_token(ctx, "edge1", 3600, 1, "user:t")["token"])
    _enroll(ctx, "box1", token)
    with pytest.raises(Unauthorized, match="used up"):
        _enroll(ctx, "box2", token)


def test_renewal_by_proof_after_weeks_offline_works_within_the_grace_window(
    make_context: Callable,
) -> None:
    ctx = make_context()
    answer, path = _enroll(ctx)
    ctx.clock.now = answer["not_after"] + 60 * DAY  # two months past expiry, offline
    renewed = agent_identity.renew_by_proof(ctx, **_proof(ctx, path))
    cert = x509.load_pem_x509_certificate(renewed["certificate"].encode())
    assert cert.not_valid_after_utc.timestamp() == pytest.approx(ctx.clock.now + 30 * DAY, abs=2)


def test_past_the_grace_window_the_agent_must_enroll_again(make_context: Callable) -> None:
    ctx = make_context()
    answer, path = _enroll(ctx)
    ctx.clock.now = answer["not_after"] + 181 * DAY
    with pytest.raises(Unauthorized, match="past the site's 180-day grace window: re-enroll"):
        agent_identity.renew_by_proof(ctx, **_proof(ctx, path))


def test_a_site_sets_its_own_grace_window(make_context: Callable) -> None:
    ctx = make_context()
    answer, path = _enroll(ctx)
    ctx.store.write(lambda db: db.execute("UPDATE sites SET offline_grace_s = ?", [400 * DAY]))
    ctx.clock.now = answer["not_after"] + 300 * DAY
    assert agent_identity.renew_by_proof(ctx, **_proof(ctx, path))["certificate"]


def test_a_proof_replayed_signed_by_another_key_or_for_a_revoked_agent_fails(
    make_context: Callable,
) -> None:
    ctx = make_context()
    answer, path = _enroll(ctx)
    proof = _proof(ctx, path)
    agent_identity.renew_by_proof(ctx, **proof)
    with pytest.raises(Unauthorized, match="already used"):
        agent_identity.renew_by_proof(ctx, **proof)
    forged = _proof(ctx, path)
    other = identity.new_key()
    forged["signature_b64"] = identity.Identity(path, other, identity.load(path).cert).sign_proof(  # type: ignore[union-attr]
        forged["nonce"], forged["csr_pem"]
    )
    with pytest.raises(Unauthorized, match="not signed by the certificate's key"):
        agent_identity.renew_by_proof(ctx, **forged)
    agent_identity.revoke(ctx, answer["agent_id"], "user:t")
    with pytest.raises(Unauthorized, match="revoked"):
        agent_identity.renew_by_proof(ctx, **_proof(ctx, path))


def test_a_certificate_from_another_ca_cannot_renew(make_context: Callable, tmp_path: Path) -> None:
    ctx = make_context()
    answer, path = _enroll(ctx)
    foreign_dir = tmp_path / "foreign"
    foreign_dir.mkdir()
    store = Store(foreign_dir / "aiorch.db").open()
    try:
        foreign = open_authority(foreign_dir, store, ctx.clock())
        held = identity.load(path)
        assert held is not None
        csr = x509.load_pem_x509_csr(identity.csr_pem(held.key).encode())
        issued = foreign.issue_agent(answer["agent_id"], csr, ctx.clock(), DAY)
    finally:
        store.close()
    identity.save(path, held.key, issued.pem)
    with pytest.raises(Unauthorized, match="not issued by this hub"):
        agent_identity.renew_by_proof(ctx, **_proof(ctx, path))


def _open_ca(data_dir: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """What `hub serve` does first: migrate under the init lock, then open the authority."""
    with init_lock(Path(data_dir)):
        store = Store(Path(data_dir) / "aiorch.db").open()
    try:
        out.put(open_authority(Path(data_dir), store, 1_800_000_000.0).active.pin)
    finally:
        store.close()


def test_two_processes_starting_on_an_empty_data_dir_make_one_ca(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = spawn.Queue()  # type: ignore[type-arg]
    workers = [spawn.Process(target=_open_ca, args=(str(tmp_path), results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    pins = {results.get(timeout=5), results.get(timeout=5)}
    assert len(pins) == 1
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600


def test_a_ca_key_others_can_read_is_refused(make_context: Callable) -> None:
    ctx = make_context()
    assert ctx.authority.active.pin
    key = ctx.settings.data_dir / "ca.key"
    os.chmod(key, 0o644)
    ctx.__dict__.pop("authority")
    with pytest.raises(UserError, match=r"ca\.key has mode 0644: a private key must be 0600"):
        _ = ctx.authority
