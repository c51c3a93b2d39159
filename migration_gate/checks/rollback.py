"""After a rollback: the legacy schema and every legacy table's content are what the backup recorded at its
snapshot (but the rows written since the migration, where a SQL rollback carried them back)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from migration_gate.backup.record import BackupError, BackupRecord
from migration_gate.checks.backups import load_record
from migration_gate.core.result import Result
from migration_gate.db import writes
from migration_gate.db.catalog import Catalog
from migration_gate.db.checksums import table_checksum, table_columns
from migration_gate.scan import compare


def _record(result: Result, dump: Path | None) -> BackupRecord | None:
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
    except BackupError as exc:
        result.add(str(exc))
        return result
    result.checked = len(tables)
    for line in then.only(tables, schema).differences(now.only(tables, schema)):
        result.add(line.replace("only before", "only at backup time").replace("only after", "only now"))
    return result


def _first(keys: list, limit: int = 10) -> str:
    shown = ", ".join(str(k) for k in sorted(keys, key=str)[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def data_as_at_backup_but_carried(conn: psycopg.Connection, baseline: psycopg.Connection, dump: Path | None,
                                  carried: writes.Carried, tables: list[str], schema: str = "public") -> Result:
    """After a SQL rollback that carried the rows written since the migration back: every legacy row equals its
    version at backup time, except the rows written since (by key) and as many rows as were deleted since.
    Tables with nothing carried are held to the backup's checksum; the others are compared by key range with
    the backup restored (baseline), inside PostgreSQL."""
    result = Result("every legacy table equals its state at backup time, but the rows written since the migration")
    record = _record(result, dump)
    if record is None:
        return result
    for table in tables:
        entry = carried.table(table)
        if entry is None or (not entry.written and not entry.deleted):
            result.problems.extend(data_as_at_backup(conn, dump, [table], schema).problems)
            result.checked += 1
            continue
        result.checked += 1
        with result.guard(schema, table):
            columns = table_columns(conn, table, schema)
            diff = compare.compare(compare.Side(baseline, table, entry.legacy_key, columns, schema=schema),
                                   compare.Side(conn, table, entry.legacy_key, columns, schema=schema))
            written = {str(key) for key in entry.written}  # keys compared as text: UUIDs were stored as text
            changed = {str(key) for keys in diff.columns.values() for key in keys}
            unexplained = sorted((changed | {str(key) for key in diff.extra}) - written)
            if unexplained:
                result.add(f"{schema}.{table}: {len(unexplained)} rows differ from backup time but were not written "
                           f"since the migration (keys {_first(unexplained)})")
            if entry.deleted is not None and len(diff.missing) != entry.deleted:
                result.add(f"{schema}.{table}: {len(diff.missing)} rows of the backup are gone, {entry.deleted} were "
                           f"deleted since the migration (keys gone: {_first(diff.missing)})")
            if diff.duplicated or diff.unexplained:
                result.add(f"{schema}.{table}: duplicated keys {_first(diff.duplicated)}"
                           if diff.duplicated else f"{schema}.{table}: {len(diff.unexplained)} buckets differ")
            result.notes.append(f"{schema}.{table}: {len(written)} rows carried back, {len(diff.missing)} deleted "
                                "since the migration")
    return result
