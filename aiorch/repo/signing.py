"""OpenPGP signatures for the site's apt repository, made with gpg in a throwaway home.

apt verifies ``InRelease`` only with OpenPGP, so the bundle key carries an OpenPGP signing key
beside its Ed25519 one (aiorch.bundle.keys). Each call here runs gpg in a fresh private
``GNUPGHOME`` that is removed afterwards: the build machine's own keyrings are never read or
changed, and no agent outlives the call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from aiorch.errors import UserError

SECRET_BEGIN = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
PUBLIC_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"


def _gpg_binary() -> str:
    gpg = shutil.which("gpg")
    if gpg is None:
        raise UserError("gpg is missing: apt-get install gnupg (it signs the apt repository)")
    return gpg


@contextmanager
def _gpg_home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="aiorch-gpg-") as tmp:
        home = Path(tmp)
        os.chmod(home, 0o700)
        try:
            yield home
        finally:
            subprocess.run(
                ["gpgconf", "--homedir", str(home), "--kill", "all"],
                capture_output=True,
                check=False,
            )


def _gpg(home: Path, *args: str, stdin: bytes = b"") -> bytes:
    argv = [_gpg_binary(), "--homedir", str(home), "--batch", "--quiet", "--no-tty", *args]
    proc = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise UserError(f"gpg {args[0]} failed: {' '.join(detail) or proc.returncode}")
    return proc.stdout


def new_apt_key(uid: str) -> tuple[str, str]:
    """A new Ed25519 OpenPGP signing key: (armored secret key, armored public key)."""
    with _gpg_home() as home:
        _gpg(
            home, "--pinentry-mode", "loopback", "--passphrase", "",
            "--quick-generate-key", uid, "ed25519", "sign", "never",
        )  # fmt: skip
        secret = _gpg(
            home, "--pinentry-mode", "loopback", "--passphrase", "", "--armor",
            "--export-secret-keys",
        )  # fmt: skip
        public = _gpg(home, "--armor", "--export")
    return secret.decode(), public.decode()


def clearsign(text: str, secret_armor: str) -> str:
    """``text`` (a Release file) signed inline: what apt reads as ``InRelease``."""
    with _gpg_home() as home:
        _gpg(home, "--import", stdin=secret_armor.encode())
        signed = _gpg(
            home, "--pinentry-mode", "loopback", "--passphrase", "", "--digest-algo",
            "SHA256", "--clearsign", stdin=text.encode(),
        )  # fmt: skip
    return signed.decode()


def keyring(public_armor: str) -> bytes:
    """The binary keyring apt's ``Signed-By`` reads (``gpg --dearmor`` of the public key)."""
    with _gpg_home() as home:
        return _gpg(home, "--dearmor", stdin=public_armor.encode())


def verify_clearsigned(signed: bytes, keyrings: Sequence[bytes]) -> bool:
    """True when ``signed`` carries a good signature by a key in ``keyrings`` (gpgv, as apt)."""
    with _gpg_home() as home:
        paths = []
        for i, ring in enumerate(keyrings):
            path = home / f"ring{i}.gpg"
            path.write_bytes(ring)
            paths.append(path)
        argv = ["gpgv", *(arg for p in paths for arg in ("--keyring", str(p))), "-"]
        proc = subprocess.run(argv, input=signed, capture_output=True, check=False)
        return proc.returncode == 0
