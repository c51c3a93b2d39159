"""After a rollback: the legacy schema and every legacy table's content are what the backup recorded at its
snapshot."""

from __future__ import annotations

from pathlib import Path

import psycopg

from migration_gate import backup
from migration_gate.catalog import Catalog
from migration_gate.checks import Result
from migration_gate.checks.backups import load_record
from migration_gate.checksums import table_checksum


def _record(result: Result, dump: Path | None) -> backup.BackupRecord | None:
    """The backup's record, or None with the reason added (the rollback is compared with what it recorded)."""
    if dump is None:
        result.add("BACKUP_FILE is not set: the rollback is compared with the backup's record")
        return None
    return load_record(dump, result)


def data_as_at_backup(conn: psycopg.Connection, dump: Path | None, tables: list[str], schema: str = "public"
                      ) -> Result:
    result = Result("every legacy table equals its state at backup time")
    record = _record(result, dump)
    if record is None:
        return result
    for table in tables:
        result.checked += 1
        key = f"{schema}.{table}"
        if key not in record.checksums:
            result.add(f"{key}: not in the backup record")
            continue
        try:
            found = table_checksum(conn, table, schema=schema)
        except LookupError:
            result.add(f"{key}: missing after the rollback")
            continue
        rows, digest = record.checksums[key]
        if (found.rows, found.digest) != (rows, digest):
            result.add(f"{key}: content differs from backup time ({found.rows} rows now, {rows} then)")
    return result


def schema_as_at_backup(now: Catalog, dump: Path | None, tables: list[str], schema: str = "public") -> Result:
    """The full fingerprint of the legacy tables (columns, types, defaults, constraints, indexes, sequences,
    triggers, policies, grants) equals the catalog recorded at the backup's snapshot."""
    result = Result("legacy schema equals its fingerprint at backup time")
    record = _record(result, dump)
    if record is None:
        return result
    try:
        then = record.catalog()
    except backup.BackupError as exc:
        result.add(str(exc))
        return result
    result.checked = len(tables)
    for line in then.only(tables, schema).differences(now.only(tables, schema)):
        result.add(line.replace("only before", "only at backup time").replace("only after", "only now"))
    return result
