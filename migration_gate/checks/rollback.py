"""After a rollback: the legacy schema and every legacy table's content are what the backup recorded at its
snapshot (but the rows written since the migration, where a SQL rollback carried them back)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from migration_gate.backup.record import BackupError, BackupRecord
from migration_gate.checks.backups import load_record
from migration_gate.core.result import Result, first_ids
from migration_gate.db import writes
from migration_gate.db.catalog import Catalog, inspect
from migration_gate.db.checksums import table_checksum, table_columns
from migration_gate.scan import compare


def _record(result: Result, dump: Path | None) -> BackupRecord | None:
    """The backup's record, or None with the reason added (the rollback is compared with what it recorded)."""
    if dump is None:
        result.add("BACKUP_FILE is not set: the rollback is compared with the backup's record")
        return None
    return load_record(dump, result)


def differences(before: psycopg.Connection, after: psycopg.Connection, table: str, schema: str = "public",
                then: str = "the backup") -> list[str]:
    """Where a table differs between two moments, as integrity says it (compare's engine, inside PostgreSQL): the
    rows gone and the rows added by key, per column the rows whose value changed, first keys and counts, never a
    value. The rows are paired by the table's primary key (after the rollback); without one, nothing is named."""
    now, was = (inspect(conn, [schema]).table(table, schema) for conn in (after, before))
    where = f"{schema}.{table}"
    if now is None or was is None:
        return []
    key = next((c.columns for c in now.constraints.values() if c.kind == "p"), None)
    if not key or not set(key) <= set(was.columns):
        return [f"{where}: no primary key to pair the rows by: the rows that differ are not named"]
    columns = sorted(set(now.columns) & set(was.columns))  # a column only on one side is the schema's finding
    diff = compare.compare(compare.Side(before, table, list(key), columns, schema=schema),
                           compare.Side(after, table, list(key), columns, schema=schema))
    lines = [f"{where}.{column}: {len(keys)} rows differ from {then} ({first_ids(keys)})"
             for column, keys in diff.columns.items() if keys]
    if diff.missing:
        lines.append(f"{where}: {len(diff.missing)} rows of {then} are gone ({first_ids(diff.missing)})")
    if diff.extra:
        lines.append(f"{where}: {len(diff.extra)} rows not in {then} ({first_ids(diff.extra)})")
    if diff.duplicated:
        lines.append(f"{where}: {len(diff.duplicated)} keys appear more than once ({first_ids(diff.duplicated)})")
    if diff.unexplained:
        lines.append(f"{where}: digests differ in {len(diff.unexplained)} key ranges, rows not found")
    return lines


def data_as_at_backup(conn: psycopg.Connection, dump: Path | None, tables: list[str], schema: str = "public",
                      baseline: Callable[[], psycopg.Connection] | None = None) -> Result:
    """Each legacy table's checksum against the one the backup recorded. One that differs is drilled into against
    the backup restored (baseline, asked for only then): which rows by key, which columns, how many."""
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
            if baseline is not None:
                with result.guard(schema, table):
                    result.problems.extend(differences(baseline(), conn, table, schema))
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
        result.add(line.replace("only before", "only at backup time").replace("only after", "only now")
                   .replace("(before: ", "(at backup time: ").replace("; after: ", "; now: "))
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
            result.problems.extend(data_as_at_backup(conn, dump, [table], schema, lambda: baseline).problems)
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
                columns = [c for c, keys in diff.columns.items() if {str(k) for k in keys} - written]
                result.add(f"{schema}.{table}: {len(unexplained)} rows differ from backup time but were not written "
                           f"since the migration (keys {_first(unexplained)}"
                           + (f"; columns {', '.join(columns)})" if columns else ")"))
            if entry.deleted is not None and len(diff.missing) != entry.deleted:
                result.add(f"{schema}.{table}: {len(diff.missing)} rows of the backup are gone, {entry.deleted} were "
                           f"deleted since the migration (keys gone: {_first(diff.missing)})")
            if diff.duplicated or diff.unexplained:
                result.add(f"{schema}.{table}: duplicated keys {_first(diff.duplicated)}"
                           if diff.duplicated else f"{schema}.{table}: {len(diff.unexplained)} buckets differ")
            result.notes.append(f"{schema}.{table}: {len(written)} rows carried back, {len(diff.missing)} deleted "
                                "since the migration")
    return result
