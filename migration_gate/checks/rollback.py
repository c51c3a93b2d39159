"""After a rollback: every legacy table's content equals what the backup recorded at its snapshot."""

from __future__ import annotations

from pathlib import Path

import psycopg

from migration_gate.checks import Result
from migration_gate.checks.backups import load_record
from migration_gate.checksums import table_checksum


def data_as_at_backup(conn: psycopg.Connection, dump: Path | None, tables: list[str]) -> Result:
    result = Result("every legacy table equals its state at backup time")
    if dump is None:
        result.add("BACKUP_FILE is not set: the rollback is compared with the backup's recorded checksums")
        return result
    record = load_record(dump, result)
    if record is None:
        return result
    for table in tables:
        result.checked += 1
        if table not in record.checksums:
            result.add(f"{table}: not in the backup record")
            continue
        try:
            found = table_checksum(conn, table)
        except LookupError:
            result.add(f"{table}: missing after the rollback")
            continue
        rows, digest = record.checksums[table]
        if (found.rows, found.digest) != (rows, digest):
            result.add(f"{table}: content differs from backup time ({found.rows} rows now, {rows} then)")
    return result
