"""Open the hub's authority, creating its first CA on first start, exactly once."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from aiorch.errors import UserError
from aiorch.hub.pki.authority import (
    CA_KEY_FILE,
    NEXT_KEY_FILE,
    Authority,
    create_first_ca,
    load_authority,
    write_bundle,
)
from aiorch.hub.pki.keyfiles import check_private, init_lock
from aiorch.hub.store import Store


def _operator_ca(path: Path | None) -> x509.Certificate | None:
    if path is None:
        return None
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the CA certificate {path} (--tls-ca): {exc}") from None


def open_authority(
    data_dir: Path, store: Store, now: float, operator_ca: Path | None = None
) -> Authority:
    """The authority in force; on an empty data dir, a new CA whose pin the caller prints.
    Under the data dir's init lock, so a second hub starting at the same moment loads the CA
    the first one made instead of making its own."""
    issuer = _operator_ca(operator_ca)
    with init_lock(data_dir):
        authority = load_authority(data_dir, store.read(), issuer)
        if authority is None:
            if (data_dir / CA_KEY_FILE).exists():
                raise UserError(
                    f"{data_dir / CA_KEY_FILE} exists but the database has no CA: restore the "
                    "database it belongs to, or move the key away to start a new CA"
                )
            store.write(lambda db: create_first_ca(data_dir, db, now))
            authority = load_authority(data_dir, store.read(), issuer)
            assert authority is not None
        check_private(data_dir / CA_KEY_FILE)
        if (data_dir / NEXT_KEY_FILE).exists():
            check_private(data_dir / NEXT_KEY_FILE)
        write_bundle(authority)
    return authority
