"""The backup, rollback and scratch-rehearsal checks go red when the dump, the rollback or the migration is
broken, and are green when nothing is."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.checks import backups, rollback
from migration_gate.config import load_config
from migration_gate.db import catalog, migration
from migration_gate.rehearsal.scratch import ScratchDatabase, rehearse_on_copy
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import MIGRATION, ROLLBACK

GATE = load_config()
LEGACY = list(GATE.legacy_schema)


@pytest.fixture
def dump(legacy_db: str, tmp_path: Path) -> Path:
    return Path(backup.take_backup(legacy_db, tmp_path / "backups").path)


def test_a_good_backup_passes_every_check(dump: Path, legacy_db: str) -> None:
    for result in (backups.exists_and_not_empty(dump), backups.readable_by_pg_restore(dump),
                   backups.record_matches(dump), backups.owner_only(dump),
                   backups.restores_to_recorded_content(dump, legacy_db)):
        assert result.ok, result.problems


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_backup_taken_while_the_app_writes_records_exactly_what_the_dump_holds(legacy_db: str, tmp_path: Path,
                                                                                 jobs: int) -> None:
    """The record's checksums are read in the dump's own snapshot: a writer busy during the dump changes neither
    (a transaction opened before the snapshot's BEGIN would read later rows, and the change check go blind).
    With jobs 2 the checksums run on other connections that import the snapshot, beside pg_dump."""
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(legacy_db, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO audit_logs_hipaa (user_id, action, resource_type) VALUES (1, 'READ', 'X')")
    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.2)
        record = backup.take_backup(legacy_db, tmp_path / "backups", jobs=jobs, compress=jobs - 1)
    finally:
        stop.set()
        writer.join()
    assert (record.jobs, record.compress) == (jobs, jobs - 1)  # what was used, in the record
    result = backups.restores_to_recorded_content(Path(record.path), legacy_db, jobs=jobs)
    assert result.ok, result.problems
    assert f"restored and compared with {jobs} job(s)" in result.notes


def test_the_data_is_split_for_parallel_streams_biggest_first_each_in_archive_order() -> None:
    entries = ["10; 1 2 SCHEMA - app owner", "20; 0 3 TABLE DATA public small owner",
               "21; 0 4 TABLE DATA public big owner", "22; 0 5 SEQUENCE SET public small_id_seq owner",
               "23; 0 6 TABLE DATA public middle owner", "24; 0 7 TABLE DATA public tiny owner"]
    rows = {"public.small": 10, "public.big": 1000, "public.middle": 600, "public.tiny": 1}
    groups = backup.data_groups(entries, 2, rows)
    assert groups == [[entries[0], entries[2], entries[3]], [entries[1], entries[4], entries[5]]]
    assert backup.data_groups(entries, 1, rows) == [entries]
    assert backup.data_groups(entries[:1], 3, rows) == [entries[:1]]


def test_an_empty_or_missing_dump_is_caught(dump: Path) -> None:
    dump.write_bytes(b"")
    assert "is empty" in backups.exists_and_not_empty(dump).problems[0]
    dump.unlink()
    assert "does not exist" in backups.exists_and_not_empty(dump).problems[0]


def test_an_unreadable_dump_is_caught(dump: Path) -> None:
    dump.write_bytes(b"PGDMP but not really a dump")
    result = backups.readable_by_pg_restore(dump)
    assert not result.ok and "pg_restore cannot read" in result.problems[0]


def test_a_changed_dump_no_longer_matches_its_record(dump: Path) -> None:
    with open(dump, "ab") as handle:
        handle.write(b"\0")
    problems = backups.record_matches(dump).problems
    assert any("bytes, the record says" in p for p in problems)
    assert any("sha256 no longer matches" in p for p in problems)


def test_a_dump_others_can_read_is_caught(dump: Path) -> None:
    dump.chmod(0o644)
    assert "group or others can access it" in backups.owner_only(dump).problems[0]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_dump_that_is_not_the_live_data_is_caught(dump: Path, legacy_db: str, new_db, legacy_template,
                                                     tmp_path: Path, jobs: int) -> None:
    """A dump of other data under the right record (say, yesterday's file) restores to other content, whether
    the data is loaded in one stream or in several side by side."""
    other = new_db(legacy_template)
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("DELETE FROM audit_logs_hipaa WHERE id = 1")
    shutil.copyfile(backup.take_backup(other, tmp_path / "other").path, dump)
    result = backups.restores_to_recorded_content(dump, legacy_db, jobs=jobs)
    assert result.problems == ["public.audit_logs_hipaa: restored content differs from the live data at backup time "
                               "(5 rows restored, 6 live)"]


def test_a_rollback_that_restores_the_data_passes(legacy_db: str, dump: Path) -> None:
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    migration.run_file(legacy_db, ROLLBACK, SANDBOX_KEY)
    with psycopg.connect(legacy_db) as conn:
        assert rollback.data_as_at_backup(conn, dump, LEGACY).ok


def test_a_rollback_that_loses_or_changes_data_is_caught(legacy_db: str, dump: Path) -> None:
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("UPDATE patients SET deleted = false")  # lost in the migration, so lost after the rollback
    migration.run_file(legacy_db, ROLLBACK, SANDBOX_KEY)
    with psycopg.connect(legacy_db) as conn:
        result = rollback.data_as_at_backup(conn, dump, LEGACY)
    assert result.problems == ["public.clients_hipaa: content differs from backup time (120 rows now, 120 then)"]


def _careless_rollback(tmp_path: Path, *statements: str) -> Path:
    """The sandbox's rollback SQL with statements of a careless hand after it, in the same transaction."""
    careless = tmp_path / "careless_rollback.sql"
    careless.write_text(ROLLBACK.read_text() + "\n" + "\n".join(statements) + "\n")
    return careless


LEAVES_ONE_VALUE = "UPDATE clients_hipaa SET photo_filename = 'left-behind.png' WHERE id = 7;"


def test_a_rollback_that_leaves_one_value_changed_names_table_column_and_id(legacy_db: str, dump: Path, new_db,
                                                                           legacy_template, tmp_path: Path) -> None:
    """RB-02 drills into the table whose checksum differs, against the backup restored (here: a clone of what was
    dumped): the column and the row's id, never the value."""
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    migration.run_file(legacy_db, _careless_rollback(tmp_path, LEAVES_ONE_VALUE), SANDBOX_KEY)
    with psycopg.connect(legacy_db, autocommit=True) as conn, \
            psycopg.connect(new_db(legacy_template), autocommit=True) as restored:
        result = rollback.data_as_at_backup(conn, dump, LEGACY, baseline=lambda: restored)
    assert result.problems == ["public.clients_hipaa: content differs from backup time (120 rows now, 120 then)",
                               "public.clients_hipaa.photo_filename: 1 rows differ from the backup (first ids: 7)"]


def test_a_rollback_that_recreates_a_table_in_another_column_order_is_red(legacy_db: str, dump: Path,
                                                                         tmp_path: Path) -> None:
    """RB-01 holds the column order recorded at backup time: same columns, types and values, but one of them
    re-created last, and an INSERT or COPY without a column list breaks."""
    moved_last = ("ALTER TABLE clients_hipaa ADD COLUMN photo_filename__new text;",
                  "UPDATE clients_hipaa SET photo_filename__new = photo_filename;",
                  "ALTER TABLE clients_hipaa DROP COLUMN photo_filename;",
                  "ALTER TABLE clients_hipaa RENAME COLUMN photo_filename__new TO photo_filename;")
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    migration.run_file(legacy_db, _careless_rollback(tmp_path, *moved_last), SANDBOX_KEY)
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        problems = rollback.schema_as_at_backup(catalog.inspect(conn), dump, LEGACY).problems
        assert rollback.data_as_at_backup(conn, dump, LEGACY).ok  # the values are all there
    assert len(problems) == 1 and problems[0].startswith('"public"."clients_hipaa": column order differs from '
                                                         'column 41 on (at backup time: "photo_filename", '), problems


def test_the_column_order_is_kept_in_the_backups_catalog_and_absent_from_an_older_one() -> None:
    """The order round-trips through the JSON a backup records; a catalog recorded before it was kept compares
    by name alone (no finding it cannot support)."""
    columns = {n: catalog.Column(n, "text", False, None) for n in ("id", "a", "b")}
    then = catalog.Catalog(("public",), {"public.t": catalog.Table("public", "t", columns, order=("id", "a", "b"))}, {})
    now = catalog.Catalog(("public",), {"public.t": catalog.Table("public", "t", columns, order=("id", "b", "a"))}, {})
    kept = catalog.Catalog.from_json(json.loads(json.dumps(then.to_json())))
    assert kept.differences(now) == ['"public"."t": column order differs from column 2 on (before: "a", "b"; '
                                     'after: "b", "a")']
    older = then.to_json()
    del older["tables"]["public.t"]["order"]
    assert catalog.Catalog.from_json(older).differences(now) == []


def test_the_scratch_rehearsal_passes_on_clean_data(legacy_db: str) -> None:
    result = rehearse_on_copy(legacy_db, GATE, SANDBOX_KEY)
    assert result.ok, result.problems
    assert "copies cloned, cloned from the restored dump" in result.notes[-1]  # one restore, two file copies
    with psycopg.connect(legacy_db) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname ~ '^gate_(before|scratch|restore)_'"
                            ).fetchall()
    assert left == [], "a scratch copy was not dropped"


def test_a_scratch_copy_whose_template_stays_busy_is_restored_instead(legacy_db: str, dump: Path) -> None:
    """A clone needs its template free of sessions: one that never lets go costs a restore, not the rehearsal."""
    server = backup.database_dsn(legacy_db, "postgres")
    source = ScratchDatabase(server, "gate_busy_template", dump)
    with source, psycopg.connect(source.dsn), \
            ScratchDatabase(server, "gate_busy_clone", dump, template=source.name) as clone:  # a session stays on
        assert clone.how == "restored"                                                     # the template
        with psycopg.connect(clone.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM clients_hipaa").fetchone()[0] > 0


def test_the_scratch_rehearsal_fails_when_the_migration_fails_on_this_data(legacy_db: str) -> None:
    """Duplicated therapist_phi rows break the migration's UNIQUE(user_id): found before cut-over."""
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("INSERT INTO therapist_phi (user_id) VALUES (1)")
        before = conn.execute("SELECT count(*) FROM therapist_phi").fetchone()[0]
    result = rehearse_on_copy(legacy_db, GATE, SANDBOX_KEY)
    assert result.problems and "the migration failed on the copy (first run): UniqueViolation" in result.problems[0]
    with psycopg.connect(legacy_db) as conn:
        assert conn.execute("SELECT count(*) FROM therapist_phi").fetchone()[0] == before


def test_the_scratch_rehearsal_fails_when_the_migration_loses_rows(legacy_db: str, tmp_path: Path) -> None:
    lossy = tmp_path / "lossy.sql"
    lossy.write_text(MIGRATION.read_text().replace(
        "-- 7. sessions_hipaa becomes clinical_sessions",
        "DELETE FROM sessions_hipaa WHERE status = 'cancelled';\n-- 7. sessions_hipaa becomes clinical_sessions"))
    gate = load_config()
    object.__setattr__(gate, "migration_file", lossy)
    result = rehearse_on_copy(legacy_db, gate, SANDBOX_KEY)
    assert any("after migrating the copy: clinical_sessions: " in p and "rows, legacy sessions_hipaa had" in p
               for p in result.problems), result.problems


def test_the_scratch_rehearsal_compares_every_schema_after_each_rollback(legacy_db: str, tmp_path: Path) -> None:
    """A migration that also books itself into the ORM's drizzle.__drizzle_migrations, with a SQL rollback that
    forgets it: the SQL rollback leaves the other schema changed (red); the restore brings it back (not named)."""
    booked = tmp_path / "booked.sql"
    booked.write_text(MIGRATION.read_text() + "\nINSERT INTO drizzle.__drizzle_migrations (hash, created_at)"
                      " VALUES ('gate-test', 1);\n")
    gate = load_config()
    object.__setattr__(gate, "migration_file", booked)
    result = rehearse_on_copy(legacy_db, gate, SANDBOX_KEY)
    assert [p for p in result.problems if "drizzle" in p] == [
        "after the SQL rollback, drizzle.__drizzle_migrations differs from before the migration (1 rows before,"
        " 2 after)",
        "after the SQL rollback, drizzle.__drizzle_migrations: 1 rows not in the copy before the migration "
        "(first ids: 2)"], result.problems
    assert any("restore of the backup" in n for n in result.notes)


def test_the_scratch_rehearsal_names_the_row_and_column_a_rollback_left_changed(legacy_db: str,
                                                                               tmp_path: Path) -> None:
    """PRE-08's SQL rollback round trip drills into the table that differs from the copy before the migration, as
    integrity does: the column and the row's id, never the value; the restore of the backup stays green."""
    gate = load_config()
    object.__setattr__(gate, "rollback_file", _careless_rollback(tmp_path, LEAVES_ONE_VALUE))
    result = rehearse_on_copy(legacy_db, gate, SANDBOX_KEY)
    assert result.problems == [
        "after the SQL rollback, public.clients_hipaa differs from before the migration (120 rows before, 120 after)",
        "after the SQL rollback, public.clients_hipaa.photo_filename: 1 rows differ from the copy before the "
        "migration (first ids: 7)"], result.problems
    assert not any("left-behind" in p for p in result.problems)


def test_backup_with_a_pg_dump_older_than_the_server_is_refused(legacy_db: str, tmp_path: Path) -> None:
    from migration_gate.db.binaries import PgBinaries
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 11.22'\n")
    (fake / "pg_dump").chmod(0o755)
    with pytest.raises(backup.BackupError, match="pg_dump 11 is older than the server"):
        backup.take_backup(legacy_db, tmp_path / "out", PgBinaries(fake, 11))
    assert not list((tmp_path / "out").glob("*.dump"))


def test_backup_onto_a_full_disk_is_one_clear_line(legacy_db: str, tmp_path: Path) -> None:
    import os
    import subprocess
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tiny tmpfs as a full disk")
    try:
        with pytest.raises(backup.BackupError, match="the disk is full"):
            backup.take_backup(legacy_db, mount)
        assert not list(mount.glob("*.dump")) and not list(mount.glob("*.partial"))
    finally:
        subprocess.run(["umount", str(mount)], check=False)
