"""The baseline of bench_tls in its own process: the bare endpoint behind the hub's own TLS
settings (its listener's SSL context, certificate and CAs). Args: DATA_DIR PORT."""

import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiorch.hub.pki.authority import load_authority
from aiorch.hub.pki.listener import Listener, listen_names
from aiorch.hub.store import Store
from benchmarks._bare_app import app


def main(data_dir: Path, port: int) -> None:
    store = Store(data_dir / "aiorch.db").open()
    authority = load_authority(data_dir, store.read())
    store.close()
    assert authority is not None
    tls = Listener(data_dir, listen_names(["127.0.0.1"], [])).context(authority)
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="error", ssl_context_factory=lambda *_: tls
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
