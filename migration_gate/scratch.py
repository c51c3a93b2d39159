"""The rehearsal on a scratch copy of the target: restore, migrate, post-check, roll back, compare.

Proves before cut-over that this migration and its rollback work on *this* database's data. The copy lives in
a scratch database on the same server (the connecting role needs CREATEDB) and is always dropped afterwards.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import psycopg

from migration_gate import backup, catalog, migration
from migration_gate.checks import Result, encryption, integrity, organizations, schema
from migration_gate.checksums import database_checksums
from migration_gate.config import GateConfig
from migration_gate.embedded import PgBinaries
from migration_gate.phi import PhiCodec


def post_checks(conn: psycopg.Connection, gate: GateConfig, codec: PhiCodec,
                baseline: psycopg.Connection | None = None) -> list[Result]:
    """The database-side post-migration checks (and integrity against a baseline, when given)."""
    results = [
        schema.matches(conn, gate.new_schema, check="new schema"),
        schema.foreign_keys(conn, gate.new_foreign_keys),
        schema.index_coverage(conn, gate.new_foreign_keys),
        schema.orphans(conn, gate.new_foreign_keys),
        schema.sequences(conn, list(gate.new_schema)),
        encryption.well_formed(conn, gate.new_encrypted_columns()),
        encryption.decrypts(conn, codec, gate.new_encrypted_columns()),
        encryption.search_hashes(conn, codec, gate.search_hashes),
        organizations.one_primary_owner(conn),
        organizations.rows_in_their_therapists_practice(conn),
    ]
    if baseline is not None:
        for mapping in gate.tables:
            results += [integrity.counts(baseline, conn, mapping),
                        integrity.rows_correspond(baseline, conn, mapping),
                        integrity.columns_equal(baseline, conn, mapping),
                        integrity.phi_equal(baseline, conn, mapping, codec)]
    return results


def rehearse_on_copy(target_dsn: str, gate: GateConfig, key: str, binaries: PgBinaries | None = None
                     ) -> Result:
    """Restore a fresh dump of the target into a scratch database, migrate, post-check, roll back, compare."""
    result = Result("migration and rollback rehearsed on a scratch copy")
    codec = PhiCodec(key)
    scratch = f"gate_scratch_{os.getpid()}_{int(time.time())}"
    legacy_tables = list(gate.legacy_schema)
    with tempfile.TemporaryDirectory(prefix="gate-scratch-") as folder:
        record = backup.take_backup(target_dsn, Path(folder), binaries)
        copy_dsn = backup.restore(Path(record.path), target_dsn, scratch, binaries)
    try:
        with psycopg.connect(copy_dsn) as conn:
            before = database_checksums(conn, legacy_tables)
            schema_before = catalog.fingerprint(conn, legacy_tables)
        started = time.perf_counter()
        try:
            migration.run_file(copy_dsn, gate.migration_file, key, lock_timeout=gate.lock_timeout,
                               statement_timeout=gate.statement_timeout)
        except (psycopg.Error, migration.MigrationFileError, ValueError) as exc:
            result.add(f"the migration failed on the copy: {exc.__class__.__name__} "
                       f"({str(exc).splitlines()[0][:120] if str(exc) else ''})")
            return result
        result.notes.append(f"migration on the copy took {time.perf_counter() - started:.1f} s")
        with psycopg.connect(copy_dsn, autocommit=True) as conn, psycopg.connect(target_dsn, autocommit=True) as base:
            for check in post_checks(conn, gate, codec, baseline=base):
                result.checked += 1
                result.problems.extend(f"after migrating the copy: {p}" for p in check.problems)
        if gate.rollback_file is None:
            result.notes.append("no rollback file configured: rollback is restore-from-backup only")
            return result
        try:
            migration.run_file(copy_dsn, gate.rollback_file, key, lock_timeout=gate.lock_timeout)
        except (psycopg.Error, migration.MigrationFileError, ValueError) as exc:
            result.add(f"the rollback failed on the copy: {exc.__class__.__name__}")
            return result
        with psycopg.connect(copy_dsn) as conn:
            after = database_checksums(conn, legacy_tables)
            for line in catalog.fingerprint(conn, legacy_tables).differences(schema_before)[:10]:
                result.add(f"after rollback, schema differs: {line}")
        for table in legacy_tables:
            if before[table] != after[table]:
                result.add(f"after rollback, {table} differs from before the migration "
                           f"({before[table].rows} rows before, {after[table].rows} after)")
    finally:
        backup.drop_database(target_dsn, scratch)
    return result
