"""The rehearsal on a scratch copy of the target: restore, migrate, post-check, roll back (both ways), compare.

Proves before cut-over that this migration and its rollbacks work on *this* database's data. One dump of the
target is restored once, into "before", the copy's own state (the app keeps writing to the live database while
the pre-checks run, so the live database is no baseline). The copies that are migrated and rolled back are
cloned from it (CREATE DATABASE ... TEMPLATE: a file copy on the server, several times faster than a restore;
where the role may not clone, they are restored from the dump instead). The SQL rollback and the restore of the
dump (what a cut-over does by default) are both rehearsed, side by side on two clones of the migrated copy, and
each compared with "before". Which copy (scratch databases on the target's server, a throwaway local cluster,
or a team's hooks) is [rehearsal]'s choice (migration_gate.rehearsal.copies); the scratch databases live on the copy's
server and a janitor always drops them, and the copy with them.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from migration_gate.backup import digests as baseline_digests
from migration_gate.backup.digests import Baseline
from migration_gate.backup.inplace import restore_in_place
from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.record import BackupError
from migration_gate.checks import accounting, encryption, integrity, organizations, rollback, schema
from migration_gate.config import GateConfig
from migration_gate.core.errors import GateError
from migration_gate.core.phi import PhiCodec
from migration_gate.core.redact import error_line, safe_message
from migration_gate.core.result import Result, error_text
from migration_gate.db import catalog, migration
from migration_gate.db import connection as db
from migration_gate.db.binaries import PgBinaries
from migration_gate.db.checksums import database_checksums
from migration_gate.rehearsal import copies
from migration_gate.rehearsal.copies import ScratchDatabase


def post_checks(conn: psycopg.Connection, gate: GateConfig, codec: PhiCodec,
                baseline: integrity.Legacy | None = None) -> list[Result]:
    """The database-side post-migration checks (and integrity against a baseline, when given)."""
    s = gate.schema
    found = catalog.inspect(conn, [s])
    results = [
        schema.matches(found, gate.new_schema, gate.new_objects, check="new schema", schema=s),
        schema.foreign_keys(found, gate.new_foreign_keys, schema=s),
        schema.index_coverage(found, gate.new_foreign_keys, schema=s),
        schema.orphans(conn, gate.new_foreign_keys, schema=s, catalog=found),
        schema.sequences(conn, list(gate.new_schema), schema=s, catalog=found),
        encryption.well_formed(conn, gate.new_encrypted_columns(), schema=s),
        encryption.decrypts(conn, codec, gate.new_encrypted_columns(), schema=s),
        encryption.search_hashes(conn, codec, gate.search_hashes, schema=s),
    ]
    if gate.tenancy:
        results += [organizations.one_primary_owner(conn, gate.tenancy, s),
                    organizations.rows_in_their_organization(conn, gate.tenancy, s)]
    if baseline is not None:
        for mapping in gate.tables:
            results += [integrity.counts(baseline, conn, mapping, s),
                        integrity.rows_correspond(baseline, conn, mapping, s),
                        integrity.columns_equal(baseline, conn, mapping, schema=s),
                        integrity.phi_equal(baseline, conn, mapping, codec, s),
                        integrity.new_column_rules(conn, mapping, s)]
    return results


def _state(dsn: str) -> tuple[dict, catalog.Catalog]:
    """Every table of every user schema (the ORM's bookkeeping beside the app's tables): checksums and catalog.
    A rollback must return all of it, not only the schema the migration works in."""
    with db.connect(dsn) as conn:
        found = catalog.inspect(conn)
        sums = {}
        for schema_name in found.schemas:
            sums |= {f"{schema_name}.{t}": c for t, c in
                     database_checksums(conn, sorted(found.names(schema_name)), schema=schema_name).items()}
        return sums, found


def _compare_with_before(result: Result, label: str, before: tuple[dict, catalog.Catalog],
                         after: tuple[dict, catalog.Catalog], before_dsn: str, after_dsn: str) -> None:
    """Schema and content against "before"; a table whose content differs is drilled into (rollback.differences:
    which rows by key, which columns, how many), comparing the two copies inside PostgreSQL."""
    for line in before[1].differences(after[1])[:10]:
        result.add(f"after {label}, schema differs from before the migration: {line}")
    differing = [t for t in sorted(set(before[0]) | set(after[0])) if before[0].get(t) != after[0].get(t)]
    for table in differing:
        was, now = before[0].get(table), after[0].get(table)
        result.add(f"after {label}, {table} differs from before the migration "
                   f"({was.rows if was else 0} rows before, {now.rows if now else 0} after)")
    if not differing:
        return
    with db.connect(before_dsn, autocommit=True) as then, db.connect(after_dsn, autocommit=True) as conn:
        for table in differing:
            schema_name, name = table.split(".", 1)
            with result.guard(schema_name, name):
                result.problems.extend(f"after {label}, {line}" for line in rollback.differences(
                    then, conn, name, schema_name, then="the copy before the migration"))


def _migrate(result: Result, dsn: str, gate: GateConfig, key: str, what: str, record_to: Path | None = None,
             sha256: str | None = None) -> bool:
    try:
        done = migration.run_file(dsn, gate.migration_file, key, lock_timeout=gate.lock_timeout,
                                  statement_timeout=gate.statement_timeout, sha256=sha256)
        if record_to is not None:  # each statement's time, for the lint (PRE-13)
            migration.save_times(done, record_to)
        return True
    except (psycopg.Error, migration.MigrationFileError, ValueError) as exc:
        result.add(f"the migration failed on the copy ({what}): {error_text(exc)}")
        return False


def _rehearse_sql_rollback(gate: GateConfig, key: str, dsn: str, before: tuple[dict, catalog.Catalog],
                           before_dsn: str) -> Result:
    result = Result("the SQL rollback")
    try:
        migration.run_file(dsn, gate.rollback_file, key, lock_timeout=gate.lock_timeout)
        _compare_with_before(result, "the SQL rollback", before, _state(dsn), before_dsn, dsn)
    except (psycopg.Error, migration.MigrationFileError, ValueError) as exc:
        result.add(f"the SQL rollback failed on the copy: {error_text(exc)}")
    return result


def _rehearse_restore(dump: Path, keys: BackupKeys, binaries: PgBinaries | None, dsn: str,
                      before: tuple[dict, catalog.Catalog], before_dsn: str) -> Result:
    result = Result("the restore of the backup")
    try:
        restore_in_place(dump, dsn, binaries, keys=keys)
        _compare_with_before(result, "restoring the backup", before, _state(dsn), before_dsn, dsn)
    except BackupError as exc:
        result.add(f"restoring the backup failed on the copy: {exc}")
    return result


def rehearse_on_copy(target_dsn: str, gate: GateConfig, key: str, binaries: PgBinaries | None = None,
                     record_to: Path | None = None, sha256: str | None = None) -> Result:
    """Migrate a copy, post-check it against the copy's own state before, then rehearse each rollback. The copy is
    the one [rehearsal] names (migration_gate.rehearsal.copies); every check runs the same way on each kind. With
    record_to (the run folder), each statement's time on the copy is kept there (migration.TIMES_FILE). With
    sha256 (the run's record of the migration file), other bytes are refused: what is rehearsed is what runs."""
    result = Result("migration and rollback rehearsed on a scratch copy")
    described = accounting.columns_accounted_for(gate)
    result.problems.extend(f"description: {p}" for p in described.problems)
    try:
        with copies.copy_of(target_dsn, gate, binaries) as copy:
            result.notes.append(copy.note())
            _rehearse(result, copy, gate, key, record_to, sha256)
    except (copies.CopyError, GateError, BackupError, psycopg.Error, OSError) as exc:  # the copy, a restore
        result.add(f"rehearsal copy ({gate.rehearsal.kind}): "
                   f"{error_line(exc) if isinstance(exc, copies.CopyError) else safe_message(exc)}")
    return result


def _rehearse(result: Result, copy: copies.Copy, gate: GateConfig, key: str, record_to: Path | None,
              sha256: str | None = None) -> None:
    codec = PhiCodec(key)
    stamp = f"{os.getpid()}_{int(time.time())}"
    binaries = copy.binaries
    assert copy.dump is not None and copy.keys is not None
    dump, keys = copy.dump, copy.keys
    with contextlib.ExitStack() as scratch:

        def database(name: str, template: str | None = None) -> ScratchDatabase:
            return scratch.enter_context(ScratchDatabase(copy.server_dsn, name, dump, binaries, keys, template,
                                                         gate.backup.workers))

        copy_db = database(f"gate_scratch_{stamp}", template=copy.before_name)
        before = _state(copy.before_dsn)
        # the integrity checks' legacy side: digests of "before", taken while the copy migrates; "before" itself
        # is read only where a bucket differs (as the cut-over's integrity reads the restored backup)
        with ThreadPoolExecutor(max_workers=1) as beside:
            digests = beside.submit(baseline_digests.take, copy.before_dsn, None, gate, key)
            started = time.perf_counter()
            migrated = _migrate(result, copy_db.dsn, gate, key, "first run", record_to, sha256)
            took = time.perf_counter() - started
            try:
                recorded = digests.result() if migrated else None
            except (psycopg.Error, OSError):  # the checks read "before" itself instead
                recorded = None
        if not migrated:
            return
        result.notes.append(f"migration on the copy took {took:.1f} s")
        legacy = Baseline(recorded, lambda: db.connect(copy.before_dsn, autocommit=True))
        try:
            with db.connect(copy_db.dsn, autocommit=True) as conn:
                for check in post_checks(conn, gate, codec, baseline=legacy):
                    result.checked += 1
                    result.problems.extend(f"after migrating the copy: {p}" for p in check.problems)
        finally:
            legacy.close()
        # Both rollbacks start from the migrated copy: a clone of it is restored while the copy is rolled back by
        # SQL, at the same time (each is mostly the server's work).
        restored = database(f"gate_restore_{stamp}", template=copy_db.name)
        with ThreadPoolExecutor(max_workers=2) as pool:
            rehearsals = {}
            if gate.rollback_file is not None:
                rehearsals[f"SQL rollback ({gate.rollback_file.name})"] = pool.submit(
                    _rehearse_sql_rollback, gate, key, copy_db.dsn, before, copy.before_dsn)
            rehearsals["restore of the backup"] = pool.submit(_rehearse_restore, dump, keys, binaries,
                                                              restored.dsn, before, copy.before_dsn)
            outcomes = {label: future.result() for label, future in rehearsals.items()}
        for outcome in outcomes.values():
            result.problems.extend(outcome.problems)
        rehearsed = [label for label, outcome in outcomes.items() if outcome.ok]
        source = "the copy" if copy.kind == "hooks" else "the restored dump"
        result.notes.append(f"rehearsed: {', '.join(rehearsed) or 'no rollback'} (cut-over default: "
                            f"{gate.rollback_method}); copies {', '.join(d.how for d in (copy_db, restored))} from "
                            f"{source}")
