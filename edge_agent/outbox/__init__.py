"""A durable outbox for telemetry (SQLite, WAL).

Every sample gets an (epoch, seq) when written and leaves only once the hub has acknowledged it,
a bound dropped it, or the hub refused its batch for good (`drop()`, counted like a bound's
drops). A batch's `dropped` is how many of its epoch's sequence numbers will never reach the hub
so far: a running total, so a batch sent twice never counts a drop twice, and the
hub can tell a quiet agent from a lossy one. An older epoch whose last samples were dropped
reports its final total in a batch without samples. The outbox never raises for the agent's
sake; it absorbs three kinds of trouble:

- bounds (count, bytes, age): the oldest samples are dropped and counted;
- an unwritable file (read-only state dir, full disk): samples are counted in memory and, once a
  write works again, their sequence numbers are skipped and reported as dropped;
- a damaged file: it is moved aside as `<name>.corrupt-<utc time>`, the samples still readable in
  it are copied into a fresh file under their old (epoch, seq), and new samples start a new epoch,
  because the damaged file's next sequence number can no longer be trusted.

One batch is in flight at a time: pending(), upload, ack(), with no append() in between.
"""

from edge_agent.outbox.sql import ROW_OVERHEAD, Pending, Sample
from edge_agent.outbox.store import Outbox, OutboxDamaged

__all__ = ["ROW_OVERHEAD", "Outbox", "OutboxDamaged", "Pending", "Sample"]
