"""The one snapshot session: a REPEATABLE READ, READ ONLY transaction that sees one moment of the database.

Every reader that must see the same data as another (pg_dump and the checksums beside it, the baseline digests,
the writes counted since a mark, the keys a rollback must carry) opens its transaction here: ``export=True``
publishes the moment (pg_export_snapshot) for other sessions and pg_dump --snapshot; ``snapshot=NAME`` imports
one (SET TRANSACTION SNAPSHOT), so the session sees exactly what the exporter sees, as long as the exporting
transaction is still open when it imports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import sql


@contextlib.contextmanager
def session(conn: psycopg.Connection, *, snapshot: str | None = None, export: bool = False) -> Iterator[str | None]:
    """One read-only REPEATABLE READ transaction on `conn` (committed at the end, rolled back on an error);
    yields the snapshot's name: the one exported (export=True), else the one imported (or None)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if snapshot:  # before the transaction's first query: it then reads the exporter's moment
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        if export:
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        yield snapshot
