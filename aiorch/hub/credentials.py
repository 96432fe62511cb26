"""Bearer secrets: minted as `<kind>_<id>_<secret>`, stored as a hash, checked in constant time.

The secret is 256 random bits, so a plain SHA-256 is enough to make a stolen
database useless (no dictionary to attack); the id part lets the hub fetch the
one row by primary key and compare hashes with `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

API_TOKEN = "aio"
ENROLLMENT_TOKEN = "aie"
KINDS = (API_TOKEN, ENROLLMENT_TOKEN)


@dataclass(frozen=True)
class Minted:
    id: str
    secret_hash: str
    token: str


@dataclass(frozen=True)
class Presented:
    kind: str
    id: str
    secret: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_id() -> str:
    """A row id: 64 random bits, hex (tokens, agents)."""
    return secrets.token_hex(8)


def mint(kind: str) -> Minted:
    ident = new_id()
    secret = secrets.token_urlsafe(32)
    return Minted(id=ident, secret_hash=hash_secret(secret), token=f"{kind}_{ident}_{secret}")


def parse(token: str) -> Presented | None:
    """Split a presented token; None when it cannot be one of ours."""
    kind, sep, rest = token.partition("_")
    ident, sep2, secret = rest.partition("_")
    if not (sep and sep2 and kind in KINDS and ident and secret) or len(token) > 200:
        return None
    return Presented(kind=kind, id=ident, secret=secret)


def matches(presented: Presented, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(presented.secret), secret_hash)
