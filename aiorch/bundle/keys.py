"""The bundle key: an Ed25519 key that signs bundle manifests, with an OpenPGP key beside it.

``aiorch bundle keygen --out DIR`` writes ``DIR/bundle.key`` (0600) and ``DIR/bundle.pub``.
Each file holds two blocks: the Ed25519 key (PEM), which signs the manifest that covers every
byte of a bundle, and an OpenPGP key (armored), which signs the apt repository's ``InRelease``
because apt reads nothing else. Hubs trust the Ed25519 half; the OpenPGP public key reaches
hosts inside the manifest it signs, so both trace back to one file pair.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from aiorch.errors import UserError
from aiorch.hub.pki.keyfiles import check_private, write_private
from aiorch.repo import signing

KEY_FILE = "bundle.key"
PUB_FILE = "bundle.pub"
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----\n?", re.S)


def key_id(public: ed25519.Ed25519PublicKey) -> str:
    """A short, stable name for a key: what manifests, trust lists and the audit log show."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """What a hub trusts: the Ed25519 key that signs manifests (and its OpenPGP partner)."""

    ed25519: ed25519.Ed25519PublicKey
    apt_public: str
    id: str

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.ed25519.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def to_text(self) -> str:
        pem = self.ed25519.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        return pem + self.apt_public


@dataclass(frozen=True)
class SigningKey:
    """A loaded ``bundle.key``: signs manifests and the apt repository."""

    ed25519: ed25519.Ed25519PrivateKey
    apt_secret: str
    public: PublicKey

    def sign(self, data: bytes) -> bytes:
        return self.ed25519.sign(data)


def _blocks(text: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in _PEM.finditer(text)}


def parse_public(text: str, source: str = "public key") -> PublicKey:
    """A ``bundle.pub``'s text, refused in one line when it is not one."""
    blocks = _blocks(text)
    try:
        key = serialization.load_pem_public_key(blocks["PUBLIC KEY"].encode())
    except (KeyError, ValueError):
        raise UserError(f"{source}: not a bundle public key (no Ed25519 PEM block)") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UserError(f"{source}: the key is not Ed25519")
    apt = blocks.get("PGP PUBLIC KEY BLOCK")
    if apt is None:
        raise UserError(f"{source}: no OpenPGP public key block")
    return PublicKey(key, apt, key_id(key))


def load_public(path: Path) -> PublicKey:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    return parse_public(text, str(path))


def load_signing_key(path: Path) -> SigningKey:
    """``bundle.key``, refused when others may read it or it is not one."""
    try:
        check_private(path)
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    blocks = _blocks(text)
    try:
        key = serialization.load_pem_private_key(blocks["PRIVATE KEY"].encode(), password=None)
        apt_secret = blocks["PGP PRIVATE KEY BLOCK"]
    except (KeyError, ValueError):
        raise UserError(f"{path}: not a bundle key (see `aiorch bundle keygen`)") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UserError(f"{path}: the key is not Ed25519")
    pub_path = path.with_name(PUB_FILE)
    public = load_public(pub_path) if pub_path.exists() else None
    if public is None or public.id != key_id(key.public_key()):
        raise UserError(f"{path}: {PUB_FILE} beside it is missing or belongs to another key")
    return SigningKey(key, apt_secret, public)


def generate(out_dir: Path) -> PublicKey:
    """Write a new key pair into ``out_dir``; an existing key is never overwritten."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / KEY_FILE, out_dir / PUB_FILE
    if key_path.exists() or pub_path.exists():
        raise UserError(f"{out_dir} already holds a bundle key; refusing to overwrite it")
    key = ed25519.Ed25519PrivateKey.generate()
    ident = key_id(key.public_key())
    apt_secret, apt_public = signing.new_apt_key(f"aiorch bundle key {ident}")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = PublicKey(key.public_key(), apt_public, ident)
    if not write_private(key_path, (pem + apt_secret).encode()):
        raise UserError(f"{key_path} appeared while it was being made; refusing to overwrite it")
    pub_path.write_text(public.to_text())
    return public
