"""The rehearsal on a scratch copy of the target: restore, migrate, post-check, roll back (both ways), compare.

Proves before cut-over that this migration and its rollbacks work on *this* database's data. One dump of the
target is restored once, into "before", the copy's own state (the app keeps writing to the live database while
the pre-checks run, so the live database is no baseline). The copies that are migrated and rolled back are
cloned from it (CREATE DATABASE ... TEMPLATE: a file copy on the server, several times faster than a restore;
where the role may not clone, they are restored from the dump instead). The SQL rollback and the restore of the
dump (what a cut-over does by default) are both rehearsed, side by side on two clones of the migrated copy, and
each compared with "before". The scratch databases live on the same server (the role needs CREATEDB) and a
janitor always drops them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate import backup, baseline_digests, catalog, migration
from migration_gate.baseline_digests import Baseline
from migration_gate.checks import Result, accounting, encryption, error_text, integrity, organizations, schema
from migration_gate.checksums import database_checksums
from migration_gate.config import GateConfig
from migration_gate.embedded import PgBinaries
from migration_gate.phi import PhiCodec

CLONE_TRIES = 5  # a clone needs its source free of other sessions; a late one gets this many chances


class ScratchDatabase:
    """Owns one scratch database on the target's server: created on entry (cloned from `template` when given
    and the role may, else restored from the dump), dropped on exit, whatever happened in between."""

    def __init__(self, server_dsn: str, name: str, dump: Path, binaries: PgBinaries | None = None,
                 keys: backup.BackupKeys | None = None, template: str | None = None, jobs: int = 1) -> None:
        self.server_dsn, self.name, self.dump, self.binaries, self.keys = server_dsn, name, dump, binaries, keys
        self.template, self.jobs = template, jobs
        self.dsn = ""
        self.how = "restored"

    def __enter__(self) -> ScratchDatabase:
        if self.template is not None and self._clone():
            self.how = "cloned"
            return self
        self.dsn = backup.restore(self.dump, self.server_dsn, self.name, self.binaries, replace=True, keys=self.keys,
                                  jobs=self.jobs)
        return self

    def _clone(self) -> bool:
        """CREATE DATABASE ... TEMPLATE, the template's owner may (a managed server's role owns what it created).
        False when it may not, or the template stays busy: the caller restores instead."""
        admin = backup.database_dsn(self.server_dsn, "postgres")
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(self.name),
                                                                     sql.Identifier(self.template))
        backup.drop_database(self.server_dsn, self.name)
        with psycopg.connect(admin, autocommit=True) as conn:
            for attempt in range(CLONE_TRIES):
                try:
                    conn.execute(statement)
                except psycopg.errors.ObjectInUse:  # "source database is being accessed by other users"
                    time.sleep(0.5 * (attempt + 1))
                    continue
                except (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported):
                    return False
                self.dsn = backup.database_dsn(self.server_dsn, self.name)
                return True
        return False

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(psycopg.Error):
            backup.drop_database(self.server_dsn, self.name)


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
    with psycopg.connect(dsn) as conn:
        found = catalog.inspect(conn)
        sums = {}
        for schema_name in found.schemas:
            sums |= {f"{schema_name}.{t}": c for t, c in
                     database_checksums(conn, sorted(found.names(schema_name)), schema=schema_name).items()}
        return sums, found


def _compare_with_before(result: Result, label: str, before: tuple[dict, catalog.Catalog],
                         after: tuple[dict, catalog.Catalog]) -> None:
    for line in before[1].differences(after[1])[:10]:
        result.add(f"after {label}, schema differs from before the migration: {line}")
    for table in sorted(set(before[0]) | set(after[0])):
        was, now = before[0].get(table), after[0].get(table)
        if was != now:
            result.add(f"after {label}, {table} differs from before the migration "
                       f"({was.rows if was else 0} rows before, {now.rows if now else 0} after)")


def _migrate(result: Result, dsn: str, gate: GateConfig, key: str, what: str, record_to: Path | None = None) -> bool:
    try:
        done = migration.run_file(dsn, gate.migration_file, key, lock_timeout=gate.lock_timeout,
                                  statement_timeout=gate.statement_timeout)
        if record_to is not None:  # each statement's time, for the lint (PRE-13)
            migration.save_times(done, record_to)
        return True
    except (psycopg.Error, migration.MigrationFileError, ValueError) as exc:
        result.add(f"the migration failed on the copy ({what}): {error_text(exc)}")
        return False


@contextlib.contextmanager
def _dump_of(target_dsn: str, binaries: PgBinaries | None, lock_wait_timeout: str | None = None,
             compress: int = 0, jobs: int = 1) -> Iterator[tuple[Path, backup.BackupKeys]]:
    """A dump of the target for the rehearsal, encrypted to a key pair that lives only in this process's memory
    (the plaintext never touches the disk), deleted with its folder afterwards, and proven gone. The target is
    live: pg_dump waits no longer than lock_wait_timeout for a table's lock ([precheck] lock_timeout)."""
    keys = backup.BackupKeys.generate()
    with tempfile.TemporaryDirectory(prefix="gate-scratch-") as folder:
        yield Path(backup.take_backup(target_dsn, Path(folder), binaries, keys=keys,
                                      lock_wait_timeout=lock_wait_timeout, compress=compress, jobs=jobs).path), keys
    if Path(folder).exists():
        raise backup.BackupError(f"the rehearsal's temporary dump folder {folder} was not removed")


def _rehearse_sql_rollback(gate: GateConfig, key: str, dsn: str, before: tuple[dict, catalog.Catalog]) -> Result:
    result = Result("the SQL rollback")
    try:
        migration.run_file(dsn, gate.rollback_file, key, lock_timeout=gate.lock_timeout)
        _compare_with_before(result, "the SQL rollback", before, _state(dsn))
    except (psycopg.Error, migration.MigrationFileError, ValueError) as exc:
        result.add(f"the SQL rollback failed on the copy: {error_text(exc)}")
    return result


def _rehearse_restore(dump: Path, keys: backup.BackupKeys, binaries: PgBinaries | None, dsn: str,
                      before: tuple[dict, catalog.Catalog]) -> Result:
    result = Result("the restore of the backup")
    try:
        backup.restore_in_place(dump, dsn, binaries, keys=keys)
        _compare_with_before(result, "restoring the backup", before, _state(dsn))
    except backup.BackupError as exc:
        result.add(f"restoring the backup failed on the copy: {exc}")
    return result


def rehearse_on_copy(target_dsn: str, gate: GateConfig, key: str, binaries: PgBinaries | None = None,
                     record_to: Path | None = None) -> Result:
    """Migrate a copy, post-check it against the copy's own state before, then rehearse each rollback. With
    record_to (the run folder), each statement's time on the copy is kept there (migration.TIMES_FILE)."""
    result = Result("migration and rollback rehearsed on a scratch copy")
    described = accounting.columns_accounted_for(gate)
    result.problems.extend(f"description: {p}" for p in described.problems)
    codec = PhiCodec(key)
    stamp = f"{os.getpid()}_{int(time.time())}"
    with contextlib.ExitStack() as scratch:
        dump, keys = scratch.enter_context(_dump_of(target_dsn, binaries, gate.precheck.lock_timeout,
                                                    gate.backup.compress, gate.backup.workers))

        def database(name: str, template: str | None = None) -> ScratchDatabase:
            return scratch.enter_context(ScratchDatabase(target_dsn, name, dump, binaries, keys, template,
                                                         gate.backup.workers))

        before_db = database(f"gate_before_{stamp}")
        copy = database(f"gate_scratch_{stamp}", template=before_db.name)
        before = _state(before_db.dsn)
        # the integrity checks' legacy side: digests of "before", taken while the copy migrates; "before" itself
        # is read only where a bucket differs (as the cut-over's integrity reads the restored backup)
        with ThreadPoolExecutor(max_workers=1) as beside:
            digests = beside.submit(baseline_digests.take, before_db.dsn, None, gate, key)
            started = time.perf_counter()
            migrated = _migrate(result, copy.dsn, gate, key, "first run", record_to)
            took = time.perf_counter() - started
            try:
                recorded = digests.result() if migrated else None
            except (psycopg.Error, OSError):  # the checks read "before" itself instead
                recorded = None
        if not migrated:
            return result
        result.notes.append(f"migration on the copy took {took:.1f} s")
        legacy = Baseline(recorded, lambda: psycopg.connect(before_db.dsn, autocommit=True))
        try:
            with psycopg.connect(copy.dsn, autocommit=True) as conn:
                for check in post_checks(conn, gate, codec, baseline=legacy):
                    result.checked += 1
                    result.problems.extend(f"after migrating the copy: {p}" for p in check.problems)
        finally:
            legacy.close()
        # Both rollbacks start from the migrated copy: a clone of it is restored while the copy is rolled back by
        # SQL, at the same time (each is mostly the server's work).
        restored = database(f"gate_restore_{stamp}", template=copy.name)
        with ThreadPoolExecutor(max_workers=2) as pool:
            rehearsals = {}
            if gate.rollback_file is not None:
                rehearsals[f"SQL rollback ({gate.rollback_file.name})"] = pool.submit(
                    _rehearse_sql_rollback, gate, key, copy.dsn, before)
            rehearsals["restore of the backup"] = pool.submit(_rehearse_restore, dump, keys, binaries,
                                                              restored.dsn, before)
            outcomes = {label: future.result() for label, future in rehearsals.items()}
        for outcome in outcomes.values():
            result.problems.extend(outcome.problems)
        rehearsed = [label for label, outcome in outcomes.items() if outcome.ok]
        result.notes.append(f"rehearsed: {', '.join(rehearsed) or 'no rollback'} (cut-over default: "
                            f"{gate.rollback_method}); copies {', '.join(d.how for d in (copy, restored))} from "
                            "the restored dump")
    return result
