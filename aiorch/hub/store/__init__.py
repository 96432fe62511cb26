"""SQLite store: one writer thread, concurrent readers, versioned migrations."""

from aiorch.hub.store.db import Store

__all__ = ["Store"]
