"""The bundle key pair: one file pair with an Ed25519 and an OpenPGP half, never overwritten,
refused when others may read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiorch.bundle import keys
from aiorch.errors import UserError
from aiorch.repo import signing


def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_public_key(tmp_path: Path) -> None:
    public = keys.generate(tmp_path)
    assert (tmp_path / keys.KEY_FILE).stat().st_mode & 0o777 == 0o600
    loaded = keys.load_signing_key(tmp_path / keys.KEY_FILE)
    assert loaded.public.id == public.id == keys.load_public(tmp_path / keys.PUB_FILE).id
    signature = loaded.sign(b"manifest")
    assert public.verify(signature, b"manifest")
    assert not public.verify(signature, b"manifest!")


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    keys.generate(tmp_path)
    before = (tmp_path / keys.KEY_FILE).read_bytes()
    with pytest.raises(UserError, match="refusing to overwrite"):
        keys.generate(tmp_path)
    assert (tmp_path / keys.KEY_FILE).read_bytes() == before


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    keys.generate(tmp_path)
    (tmp_path / keys.KEY_FILE).chmod(0o644)
    with pytest.raises(UserError, match="must be 0600"):
        keys.load_signing_key(tmp_path / keys.KEY_FILE)


def test_the_openpgp_half_signs_what_gpgv_accepts_with_its_public_keyring(tmp_path: Path) -> None:
    public = keys.generate(tmp_path)
    secret = keys.load_signing_key(tmp_path / keys.KEY_FILE).apt_secret
    signed = signing.clearsign("Origin: aiorch\n", secret).encode()
    ring = signing.keyring(public.apt_public)
    assert signing.verify_clearsigned(signed, [ring])
    assert not signing.verify_clearsigned(signed.replace(b"aiorch", b"other"), [ring])
    other = keys.generate(tmp_path / "other")
    assert not signing.verify_clearsigned(signed, [signing.keyring(other.apt_public)])


def test_a_file_that_is_no_public_key_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bundle.pub"
    bad.write_text("hello\n")
    with pytest.raises(UserError, match="not a bundle public key"):
        keys.load_public(bad)
