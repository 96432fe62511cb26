"""Downloads from the hub that survive a cut: image archives and model files.

A file comes down into `<dest>.partial`; after a cut (network gone, hub restarted, agent
killed) the next try asks for the rest with `Range: bytes=N-` and appends to what is there.
`If-Range` carries the validator (ETag) of the first answer, so a file the hub changed
meanwhile comes whole (200), never as a splice of two versions. Whatever came, the whole file
is checked against its sha256 at the end: a file that does not match is discarded, never
kept, and the next try starts from zero. `<dest>.partial.json` keeps the validator and the
bytes received over the wire by every try, which is what `Transfer.received` reports.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from edge_agent.client import DigestMismatch, HubClient, HubUnavailable
from edge_agent.state import read_json, write_private

log = logging.getLogger("aiorch.agent.workloads")

PARTIAL = ".partial"
CHUNK = 1 << 20
_CUT = (http.client.HTTPException, OSError, socket.gaierror, ssl.SSLError)


@dataclass(frozen=True)
class Transfer:
    size: int  # the file's size
    received: int  # body bytes over the wire, over every try of this file
    resumed: bool  # some try went on from a partial file


def download(
    hub: HubClient, path: str, dest: Path, sha256: str, size: int | None = None
) -> Transfer:
    """GET `path` (under the hub's API prefix) into `dest`, resuming a partial file; `dest`
    appears, by rename, only once its sha256 is `sha256` (hex). A cut raises HubUnavailable
    with the partial file kept; a wrong file raises DigestMismatch with it discarded."""
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = dest.with_name(dest.name + PARTIAL)
    meta_path = dest.with_name(dest.name + PARTIAL + ".json")
    meta = (read_json(meta_path) or {}) if partial.exists() else {}
    offset = partial.stat().st_size if partial.exists() else 0
    received = int(meta.get("received", 0))
    if offset and offset == size:  # all there already: cut between the last write and rename
        return _finish(partial, meta_path, dest, _hash_of(partial), sha256, received, True)
    etag = meta.get("etag")
    headers = {}
    if offset and etag:  # without a validator, a range could splice two versions
        headers = {"Range": f"bytes={offset}-", "If-Range": str(etag)}
    conn, response = hub.open_get(path, headers)
    resumed = False
    try:
        if response.status == 206 and _starts_at(response, offset):
            mode, resumed = "ab", True
        elif response.status == 200:
            mode, offset = "wb", 0
        else:  # 416 or a range the hub made up: start again from zero, next try
            partial.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            raise HubUnavailable(f"hub answered {response.status} to a resumed download")
        etag = response.headers.get("ETag") or None
        sha = _hash_of(partial) if mode == "ab" else hashlib.sha256()
        try:
            with partial.open(mode) as fh:
                while chunk := response.read(CHUNK):
                    fh.write(chunk)
                    sha.update(chunk)
                    received += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except _CUT as exc:
            raise HubUnavailable(f"download cut at {partial.stat().st_size} bytes: {exc}") from None
        finally:
            write_private(meta_path, {"etag": etag, "received": received})
    finally:
        conn.close()
    return _finish(partial, meta_path, dest, sha, sha256, received, resumed)


def _finish(
    partial: Path,
    meta_path: Path,
    dest: Path,
    sha: hashlib._Hash,
    sha256: str,
    received: int,
    resumed: bool,
) -> Transfer:
    """Keep the file under its name if it is the one asked for; discard it if not."""
    if sha.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise DigestMismatch(f"{dest.name} from the hub has sha256 {sha.hexdigest()}, not {sha256}")
    size = partial.stat().st_size
    os.replace(partial, dest)
    meta_path.unlink(missing_ok=True)
    if resumed:
        log.info("%s: %d bytes verified, %d received over the wire", dest.name, size, received)
    return Transfer(size, received, resumed)


def _starts_at(response: http.client.HTTPResponse, offset: int) -> bool:
    """Whether a 206 holds the bytes from `offset` on (Content-Range: bytes N-M/T)."""
    unit, _, spec = (response.headers.get("Content-Range") or "").partition(" ")
    return unit == "bytes" and spec.split("-", 1)[0] == str(offset)


def _hash_of(partial: Path) -> hashlib._Hash:
    """sha256 state after the bytes already on disk: the sum then covers the whole file."""
    sha = hashlib.sha256()
    with partial.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
    return sha
