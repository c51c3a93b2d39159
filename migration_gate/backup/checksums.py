"""The content checksums of every table in the dump's snapshot, and what changed since.

The dump and the checksums come from the same snapshot (migration_gate.db.snapshot): pg_dump dumps it, and the
checksums are read beside it on connections that import it, so "the restored backup holds exactly the data of
the live database at backup time" can be checked by content; the write counters are read in it too.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import psycopg
from psycopg import sql

from migration_gate.backup.record import BackupRecord
from migration_gate.db import catalog, sizes
from migration_gate.db import connection as db
from migration_gate.db import snapshot as snapshots
from migration_gate.db.checksums import table_checksum


def table_counters(conn: psycopg.Connection) -> dict[str, list]:
    """pg_stat_user_tables' insert, update and delete counters per table (the cheap change signal)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute("SELECT schemaname, relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables")
    return {f"{schema}.{table}": [ins, upd, dele] for schema, table, ins, upd, dele in rows}


def table_checksums(dsn: str, tables: Mapping[str, catalog.Table], jobs: int = 1, snapshot: str | None = None,
                    lock_timeout: str | None = None) -> dict[str, list]:
    """"schema.table" -> [rows, digest] over `jobs` connections, biggest tables first; with `snapshot` each
    connection imports it (SET TRANSACTION SNAPSHOT), so every digest is of exactly the data pg_dump dumps.
    Why in parallel: the digests cost about as much as the dump or the restore they prove (100,000 patients:
    14 s), and each table's is one statement the server runs on one core. lock_timeout: each connection gives
    up on a table's lock after it (a live database's pre-check copy, like pg_dump's --lock-wait-timeout)."""
    if not tables:
        return {}
    with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        on_disk = sizes.catalog_bytes(conn)
    queue = sorted(tables, key=lambda key: -on_disk.get(key, 0))
    found: dict[str, list] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                if lock_timeout:
                    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_timeout)))
                with snapshots.session(conn, snapshot=snapshot):
                    while True:
                        with lock:
                            if not queue or errors:
                                break
                            key = queue.pop(0)
                        table = tables[key]
                        found[key] = list(astuple(table_checksum(conn, table.name, schema=table.schema)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            with lock:
                errors.append(exc)
    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, min(jobs, len(tables))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return dict(sorted(found.items()))


def astuple(checksum) -> tuple[int, str]:
    return checksum.rows, checksum.digest


def changes_since(dsn: str, record: BackupRecord, method: str = "digest") -> list[str]:
    """Tables whose content is no longer what the backup holds, one line each (names and counts, no values).

    "digest": every table's content checksum again, compared with the one taken in the dump's snapshot (exact:
    any insert, update or delete shows). "counters": pg_stat_user_tables' insert/update/delete counters against
    those read in the snapshot (one catalog query; a write shows once its session flushed its statistics, up to
    a second later; an aborted write counts too). Tables created or dropped since show either way."""
    with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        found = catalog.inspect(conn).tables
        lines = [f"{name}: created since the backup" for name in sorted(set(found) - set(record.checksums))]
        lines += [f"{name}: dropped since the backup" for name in sorted(set(record.checksums) - set(found))]
        if method == "counters" and record.counters:
            now = table_counters(conn)
            for name in sorted(set(record.counters) & set(now)):
                ins, upd, dele = (b - a for a, b in zip(record.counters[name], now[name], strict=True))
                if ins or upd or dele:
                    lines.append(f"{name}: {ins} inserted, {upd} updated, {dele} deleted since the backup")
            return lines
        with snapshots.session(conn):
            for name in sorted(set(record.checksums) & set(found)):
                rows, digest = record.checksums[name]
                now = table_checksum(conn, found[name].name, schema=found[name].schema)
                if (now.rows, now.digest) != (rows, digest):
                    lines.append(f"{name}: {rows} rows at the backup, {now.rows} now, content differs")
    return lines
