"""Our 001 migration and its rollback on a seeded legacy database: the migration does what the new schema
needs, fails as a whole, and the rollback gives back exactly the legacy schema and data."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from migration_gate.core.phi import PhiCodec, search_hash
from migration_gate.db import catalog, migration
from migration_gate.db.checksums import database_checksums
from migration_gate.db.migration import MigrationFileError, parse
from sandbox.seed import LEGACY_TABLES
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import MIGRATION, ROLLBACK

codec = PhiCodec(SANDBOX_KEY)
NEW_TABLES = ("organizations", "organization_memberships", "patients", "clinical_sessions",
              "patient_treatment_plans", "users_auth", "therapist_profiles", "therapist_phi", "audit_logs_hipaa")


def _state(dsn: str, tables: tuple[str, ...] = LEGACY_TABLES) -> tuple[dict, catalog.SchemaFingerprint, set[str]]:
    with psycopg.connect(dsn) as conn:
        return (database_checksums(conn, list(tables)), catalog.inspect(conn).only(tables),
                catalog.inspect(conn).names())


def test_migrate_then_rollback_gives_back_every_legacy_table_exactly(legacy_db: str) -> None:
    before = _state(legacy_db)
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    with psycopg.connect(legacy_db) as conn:
        assert {"patients", "organizations"} <= catalog.inspect(conn).names()
        assert "clients_hipaa" not in catalog.inspect(conn).names()
    migration.run_file(legacy_db, ROLLBACK, SANDBOX_KEY)
    checksums, schema, tables = _state(legacy_db)
    assert checksums == before[0]
    assert schema.differences(before[1]) == []
    assert tables == before[2]


def test_a_failing_migration_changes_nothing(legacy_db: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.sql"
    broken.write_text(MIGRATION.read_text() + "\nSELECT 1 / 0;\n")
    before = _state(legacy_db)
    with pytest.raises(psycopg.errors.DivisionByZero):
        migration.run_file(legacy_db, broken, SANDBOX_KEY)
    after = _state(legacy_db)
    assert after[0] == before[0] and after[1].differences(before[1]) == [] and after[2] == before[2]


def test_a_wrong_key_fails_the_data_step_and_changes_nothing(migrated_db: str) -> None:
    before = _state(migrated_db, NEW_TABLES)
    with pytest.raises(ValueError, match="Wrong encryption key"):
        migration.run_file(migrated_db, ROLLBACK, "22" * 32)
    after = _state(migrated_db, NEW_TABLES)
    assert after[0] == before[0] and after[1].differences(before[1]) == [] and after[2] == before[2]


def test_rows_written_after_the_migration_survive_the_rollback(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        new_id = conn.execute(
            "INSERT INTO patients (organization_id, primary_therapist_id, name) VALUES (1, 1, 'Late Arrival') "
            "RETURNING id").fetchone()[0]
    migration.run_file(migrated_db, ROLLBACK, SANDBOX_KEY)
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT therapist_id FROM clients_hipaa WHERE id = %s", (new_id,)).fetchone() == (1,)


def _scalar(dsn: str, query: str):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchone()[0]


@pytest.mark.parametrize("label, query, expected", [
    ("one solo organization per user", "SELECT count(*) = (SELECT count(*) FROM users_auth) AND bool_and(type = "
                                       "'solo') FROM organizations", True),
    ("one active primary business owner per org",
     "SELECT count(*) FROM organizations o WHERE (SELECT count(*) FROM organization_memberships m WHERE "
     "m.organization_id = o.id AND m.is_primary_owner AND m.is_active AND m.role = 'business_owner' "
     "AND m.can_view_all_patients) <> 1", 0),
    ("organization_id set on every patient", "SELECT count(*) FROM patients WHERE organization_id IS NULL", 0),
    ("a patient's org is its therapist's", "SELECT count(*) FROM patients p JOIN organization_memberships m ON "
                                          "m.user_id = p.primary_therapist_id WHERE m.organization_id <> "
                                          "p.organization_id", 0),
    ("a session's org is its patient's", "SELECT count(*) FROM clinical_sessions s JOIN patients p ON "
                                        "p.id = s.patient_id WHERE s.organization_id <> p.organization_id", 0),
    ("a plan's org is its patient's", "SELECT count(*) FROM patient_treatment_plans t JOIN patients p ON "
                                     "p.id = t.patient_id WHERE t.organization_id <> p.organization_id", 0),
    ("no plaintext EIN column left", "SELECT count(*) FROM information_schema.columns WHERE column_name = "
                                    "'ein_number'", 0),
    ("practice names fall back to the username",
     "SELECT count(*) FROM organizations o JOIN users_auth u ON u.id = o.id WHERE o.name = u.username || '''s "
     "Practice'", 2),
    ("sequences ahead of max(id)", "SELECT bool_and(ok) FROM (SELECT nextval('patients_id_seq') > "
                                  "(SELECT max(id) FROM patients) AS ok UNION ALL SELECT nextval("
                                  "'clinical_sessions_id_seq') > (SELECT max(id) FROM clinical_sessions)) x", True),
])
def test_migration_builds_the_new_schema(migrated_db: str, label: str, query: str, expected) -> None:
    assert _scalar(migrated_db, query) == expected, label


def test_name_search_hash_in_sql_equals_the_apps_hash(migrated_db: str) -> None:
    """The migration hashes names in SQL (ICU lower, JS trim); the app hashes in JavaScript: they must agree
    for padded and non-ASCII names too."""
    with psycopg.connect(migrated_db) as conn:
        rows = conn.execute("SELECT name, patient_name_search_hash FROM patients").fetchall()
    assert any(name != name.strip() or not name.isascii() for name, _ in rows)
    assert [h for _, h in rows] == [search_hash(name) for name, _ in rows]


def test_ein_moves_encrypted_to_the_organization(legacy_db: str) -> None:
    with psycopg.connect(legacy_db) as conn:
        eins = dict(conn.execute("SELECT user_id, ein_number FROM therapist_profiles "
                                 "WHERE ein_number IS NOT NULL").fetchall())
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    with psycopg.connect(legacy_db) as conn:
        moved = {user: codec.decrypt(ct) for user, ct in conn.execute(
            "SELECT m.user_id, o.organization_business_ein_encrypted FROM organizations o JOIN "
            "organization_memberships m ON m.organization_id = o.id WHERE o.organization_business_ein_encrypted "
            "IS NOT NULL")}
    assert moved == eins and eins


def test_session_phi_columns_are_all_carried(legacy_db: str) -> None:
    pairs = {"notes_encrypted": "session_clinical_notes_encrypted",
             "assessments_encrypted": "session_assessment_notes_encrypted",
             "treatment_goals_encrypted": "session_treatment_goals_encrypted",
             "progress_notes_encrypted": "session_progress_notes_encrypted"}
    with psycopg.connect(legacy_db) as conn:
        before = {old: _count(conn, "sessions_hipaa", old) for old in pairs}
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    with psycopg.connect(legacy_db) as conn:
        after = {old: _count(conn, "clinical_sessions", new) for old, new in pairs.items()}
    assert after == before and all(before.values())


def _count(conn: psycopg.Connection, table: str, column: str) -> int:
    query = sql.SQL("SELECT count({}) FROM {}").format(sql.Identifier(column), sql.Identifier(table))
    return conn.execute(query).fetchone()[0]


def test_parse_splits_statements_and_data_steps_with_line_numbers() -> None:
    steps = parse("SELECT 1;\n-- a comment\nSELECT 'a;b';\n-- migration-gate: data-step pkg.mod:fn\n"
                  "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n")
    assert [(s.kind, s.line) for s in steps] == [("sql", 1), ("sql", 2), ("data", 4), ("sql", 5)]
    assert steps[2].text == "pkg.mod:fn"
    assert "$$ SELECT 1; $$" in steps[3].text


def test_a_missing_data_step_is_refused_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "m.sql"
    path.write_text("SELECT 1;\n-- migration-gate: data-step sandbox.data_steps:no_such_step\n")
    with pytest.raises(MigrationFileError, match="no_such_step not found"):
        migration.load(path)


@pytest.mark.parametrize("name", ["Vivian Lev", "v", "\u00a0Olav\u3000", "\tIvan\x0b"])
def test_name_hash_trims_whitespace_not_letters(legacy_db: str, name: str) -> None:
    """Found by hypothesis: PostgreSQL has no \\v escape, so E'\\v' in the trim set stripped the letter v."""
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("UPDATE clients_hipaa SET name = %s WHERE id = 1", (name,))
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    with psycopg.connect(legacy_db) as conn:
        stored = conn.execute("SELECT patient_name_search_hash FROM patients WHERE id = 1").fetchone()[0]
    assert stored == search_hash(name)


def test_other_bytes_than_the_recorded_sha256_are_refused_before_anything_runs(legacy_db: str,
                                                                               tmp_path: Path) -> None:
    """A run passes the sha256 it recorded at its start: a file edited since never reaches the database."""
    edited = tmp_path / "m.sql"
    edited.write_text("CREATE TABLE gate_tampered (id int);\n")
    with pytest.raises(MigrationFileError, match=r"sha256 0{16}\.\.\. recorded, [0-9a-f]{16}\.\.\. now\): "
                                                 "nothing was run"):
        migration.run_file(legacy_db, edited, SANDBOX_KEY, sha256="0" * 64)
    with psycopg.connect(legacy_db) as conn:
        assert conn.execute("SELECT to_regclass('gate_tampered')").fetchone()[0] is None
    assert len(migration.run_file(legacy_db, edited, SANDBOX_KEY,
                                  sha256=migration.file_sha256(edited)).timings) == 1
