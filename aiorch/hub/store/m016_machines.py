"""m016: machines, the record that exists before a host does (issue 15): where its BMC is,
its boot MAC, its lifecycle state and deadline, what its ramdisk measured, and its history.
BMC credentials and the boot token are sealed (AES-SIV, bound to the machine); only a hash of
the boot token is searchable."""

from __future__ import annotations

import sqlite_utils


def m016_machines(db: sqlite_utils.Database) -> None:
    script = """
        CREATE TABLE machines (
            name TEXT PRIMARY KEY,
            bmc TEXT NOT NULL,
            bmc_credentials TEXT NOT NULL,
            mac TEXT NOT NULL UNIQUE,
            hardware_class TEXT NOT NULL,
            state TEXT NOT NULL,
            state_since REAL NOT NULL,
            deadline REAL,
            reason TEXT,
            simulated TEXT,
            inventory TEXT,
            burn_in TEXT,
            wipe TEXT,
            image TEXT,
            boot_token TEXT,
            boot_token_hash TEXT UNIQUE,
            host TEXT,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX machines_deadline ON machines(deadline);
        CREATE TABLE machine_classes (
            name TEXT PRIMARY KEY,
            profile TEXT NOT NULL,
            updated_by TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE machine_events (
            id INTEGER PRIMARY KEY,
            machine TEXT NOT NULL,
            ts REAL NOT NULL,
            event TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            reason TEXT,
            actor TEXT NOT NULL
        );
        CREATE INDEX machine_events_machine ON machine_events(machine, id)
    """
    for statement in script.split(";"):
        db.execute(statement)
