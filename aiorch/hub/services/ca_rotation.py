"""Rotating the hub's CA in phases, so that no agent is left behind, not even one offline
through the whole rotation (Teleport's phases, without its forced leave):

- `init`: a next CA is made, trusted beside the active one and cross-certified by it; agents
  fetch the two-CA bundle at their next check-in.
- `update_clients`: the next CA signs; every agent whose certificate is from the old one is
  told to renew, and does, with a fresh key.
- `update_servers`: the hub's own certificate comes from the next CA, served with the
  cross-certificate, so an agent that still trusts only the old CA verifies it too.
- `standby`: the next CA becomes the active one and the old is retired: it signs nothing and
  its key is gone. An agent that slept through it all still verifies the hub through the
  cross-certificate, is refused for its old certificate, and renews by proof of its key.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import sqlite_utils

from aiorch.errors import Conflict
from aiorch.hub.context import HubContext
from aiorch.hub.pki.authority import CA_KEY_FILE, NEXT_KEY_FILE, HubCA, ca_row, new_ca
from aiorch.hub.pki.keyfiles import key_pem, write_private
from aiorch.hub.services import audit

PHASES = ("standby", "init", "update_clients", "update_servers")


def next_phase(phase: str) -> str:
    return PHASES[(PHASES.index(phase) + 1) % len(PHASES)]


def show(ctx: HubContext) -> dict[str, Any]:
    authority = ctx.authority
    return {
        "phase": authority.phase,
        "next_phase": next_phase(authority.phase),
        "token_pin": authority.token_pin,
        "cas": [_ca(ca) for ca in authority.cas],
        "signing": authority.signing.id,
        "serving": authority.serving.id,
    }


def _ca(ca: HubCA) -> dict[str, Any]:
    expires = ca.cert.not_valid_after_utc.timestamp()
    return {"id": ca.id, "state": ca.state, "pin": ca.pin, "not_after": expires}


def _set_phase(db: sqlite_utils.Database, phase: str, now: float, cross: str | None = None) -> None:
    sets, params = "phase = ?, updated_at = ?", [phase, now]
    if cross is not None:
        sets, params = sets + ", cross_cert_pem = ?", [*params, cross]
    db.execute(f"UPDATE hub_trust SET {sets} WHERE id = 1", params)


def advance(ctx: HubContext, to: str, actor: str) -> dict[str, Any]:
    """Move the rotation one phase on, to `to` (named, so a repeated call cannot skip one)."""
    authority = ctx.authority
    expected = next_phase(authority.phase)
    if to != expected:
        raise Conflict(
            f"the CA rotation is in phase {authority.phase}: the next phase is {expected}, not {to}"
        )
    now = ctx.clock()
    data_dir = ctx.settings.data_dir
    if to == "init":
        key, cert = new_ca(now, str(len(authority.cas) + 1))
        write_private(data_dir / NEXT_KEY_FILE, key_pem(key))
        row = ca_row(secrets.token_hex(8), cert, "next", now)
        cross = authority.cross_sign(HubCA(str(row["id"]), cert, "next"), now)

        def op(db: sqlite_utils.Database) -> None:
            db.table("hub_cas").insert(row)
            _set_phase(db, to, now, cross)
            audit.record(db, actor, "ca.rotate", f"ca:{row['id']}", {"phase": to}, ts=now)

    elif to == "standby":
        old, new = authority.active, authority.next
        assert new is not None

        def op(db: sqlite_utils.Database) -> None:
            db.execute("UPDATE hub_cas SET state = 'retired' WHERE id = ?", [old.id])
            db.execute("UPDATE hub_cas SET state = 'active' WHERE id = ?", [new.id])
            _set_phase(db, to, now)
            detail = {"phase": to, "retired": old.id}
            audit.record(db, actor, "ca.rotate", f"ca:{new.id}", detail, ts=now)

    else:

        def op(db: sqlite_utils.Database) -> None:
            _set_phase(db, to, now)
            target = authority.next.id if authority.next else authority.active.id
            audit.record(db, actor, "ca.rotate", f"ca:{target}", {"phase": to}, ts=now)

    ctx.store.write(op)
    if to == "standby":
        # The retired CA's key goes: it will never sign again (the key file of the new active
        # CA is found by its public key until this rename is done).
        os.replace(data_dir / NEXT_KEY_FILE, data_dir / CA_KEY_FILE)
    ctx.trust_changed()  # reopening the authority rewrites DATA_DIR/ca.pem
    return show(ctx)
