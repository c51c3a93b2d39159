"""The suites check what the migration description says, on the app's own DDL: the sandbox is the real legacy
schema, every column is accounted for, a missing table or column is a finding (never a crash), the rollback
brings back the full fingerprint recorded at backup time, and the codec reads ciphertext as the app does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.checks import accounting, encryption, integrity, rollback, schema
from migration_gate.config import load_config
from migration_gate.core.phi import PhiCodec, is_v1
from migration_gate.core.result import Result
from migration_gate.db import catalog, migration
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import MIGRATION, ROLLBACK

GATE = load_config()
REAL_LEGACY = Path(__file__).parent / "fixtures" / "real_legacy_catalog.json"
LEGACY_TABLES = list(GATE.legacy_schema)


def _catalog(dsn: str) -> catalog.Catalog:
    with psycopg.connect(dsn) as conn:
        return catalog.inspect(conn)


def test_the_sandbox_legacy_schema_is_the_real_ddl(legacy_db):
    """tests/fixtures/real_legacy_catalog.json: the catalog of db/migrations-hipaa/0000_lonely_stingray.sql,
    loaded unchanged into PostgreSQL 15 (types, defaults, constraints, foreign keys, indexes, sequences)."""
    real = catalog.Catalog.load(REAL_LEGACY)
    assert _catalog(legacy_db).only(LEGACY_TABLES).differences(real.only(LEGACY_TABLES), grants=False) == []


def test_the_sandbox_keeps_drizzle_bookkeeping_beside_public(legacy_db):
    with psycopg.connect(legacy_db) as conn:
        assert conn.execute("SELECT count(*) FROM drizzle.__drizzle_migrations").fetchone()[0] >= 1
        assert "drizzle" in catalog.user_schemas(conn)


def test_migrate_then_rollback_returns_the_exact_legacy_catalog(legacy_db):
    before = _catalog(legacy_db)
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    migration.run_file(legacy_db, ROLLBACK, SANDBOX_KEY)
    assert before.differences(_catalog(legacy_db)) == []


def test_the_migration_runs_where_the_apps_0009_already_added_mfa_enforced_at(legacy_db):
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE users_auth ADD COLUMN IF NOT EXISTS mfa_enforced_at timestamp")
    before = _catalog(legacy_db)
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    assert schema.matches(_catalog(legacy_db), GATE.new_schema, GATE.new_objects).ok
    migration.run_file(legacy_db, ROLLBACK, SANDBOX_KEY)
    assert before.differences(_catalog(legacy_db)) == []  # the column it did not add stays


def test_the_migrated_sandbox_has_every_described_object(migrated_db):
    found = _catalog(migrated_db)
    assert schema.matches(found, GATE.new_schema, GATE.new_objects).problems == []


@pytest.mark.parametrize("statement, fragment", [
    ("CREATE INDEX stray ON patients (name)", 'index (name) is in the database but not in the description'),
    ("ALTER TABLE patients ADD CONSTRAINT positive CHECK (session_cost >= -100000)", "check CHECK"),
    ("ALTER TABLE patients ENABLE ROW LEVEL SECURITY", "row-level security is on, expected off"),
    ("ALTER TABLE patients ALTER COLUMN place_of_service SET DEFAULT '02'", '"place_of_service" is text default'),
    ("CREATE FUNCTION t() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$; "
     "CREATE TRIGGER stray_trigger BEFORE INSERT ON patients FOR EACH ROW EXECUTE FUNCTION t()", "trigger stray"),
])
def test_anything_the_description_does_not_list_is_a_finding(migrated_db, statement, fragment):
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(statement)
    result = schema.matches(_catalog(migrated_db), GATE.new_schema, GATE.new_objects)
    assert any(fragment in p for p in result.problems), result.problems


def test_a_column_the_description_does_not_account_for_is_a_red_precheck():
    assert accounting.columns_accounted_for(GATE).ok
    users = GATE.table("users_auth")
    quiet = dataclasses.replace(users, columns={k: v for k, v in users.columns.items() if k != "last_login"},
                                new_columns={})
    broken = dataclasses.replace(GATE, tables=tuple(quiet if t is users else t for t in GATE.tables))
    problems = accounting.columns_accounted_for(broken).problems
    assert 'legacy column "public"."users_auth"."last_login" is neither mapped nor dropped' in problems
    assert any('"users_auth"."mfa_enforced_at" has neither a source nor a rule' in p for p in problems)


def test_integrity_compares_every_audit_log_column_and_the_ein_moved_into_organizations(legacy_template, pg,
                                                                                       migrated_db):
    audit, orgs = GATE.table("audit_logs_hipaa"), GATE.table("organizations")
    assert set(audit.columns) == set(GATE.legacy_schema["audit_logs_hipaa"]) - {"id"}
    with psycopg.connect(pg.dsn(legacy_template)) as base, psycopg.connect(migrated_db, autocommit=True) as new:
        codec = PhiCodec(SANDBOX_KEY)
        assert integrity.phi_equal(base, new, orgs, codec).ok
        assert integrity.columns_equal(base, new, audit).ok
        new.execute("UPDATE audit_logs_hipaa SET user_agent = 'changed' WHERE id = 1")
        new.execute("UPDATE organizations SET organization_business_ein_encrypted = %s WHERE id = "
                    "(SELECT min(id) FROM organizations WHERE organization_business_ein_encrypted IS NOT NULL)",
                    (codec.encrypt("00-0000000"),))
        assert "audit_logs_hipaa.user_agent: 1 rows differ" in "\n".join(
            integrity.columns_equal(base, new, audit).problems)
        assert "organization_business_ein_encrypted: 1 values differ" in "\n".join(
            integrity.phi_equal(base, new, orgs, codec).problems)


def test_new_column_rules_are_verified(migrated_db):
    mapping = GATE.table("therapist_profiles")
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        assert integrity.new_column_rules(conn, mapping).ok
        conn.execute("UPDATE therapist_profiles SET stripe_connect_charges_enabled = true WHERE id = 1")
        assert "stripe_connect_charges_enabled: 1 rows are not the rule's value" in "\n".join(
            integrity.new_column_rules(conn, mapping).problems)


def test_a_configured_table_or_column_missing_from_the_database_is_a_finding_not_a_crash(legacy_template, pg,
                                                                                          migrated_db):
    with psycopg.connect(pg.dsn(legacy_template)) as base, psycopg.connect(migrated_db, autocommit=True) as new:
        new.execute("ALTER TABLE patients DROP COLUMN patient_hometown_encrypted")
        new.execute("DROP TABLE patient_treatment_plans")
        codec = PhiCodec(SANDBOX_KEY)
        found = [
            integrity.phi_equal(base, new, GATE.table("patients"), codec),
            integrity.counts(base, new, GATE.table("patient_treatment_plans")),
            encryption.decrypts(new, codec, GATE.new_encrypted_columns()),
            encryption.well_formed(new, GATE.new_encrypted_columns()),
            schema.orphans(new, GATE.new_foreign_keys),
        ]
    for result in found:
        text = "\n".join(result.problems)
        assert '"patients"."patient_hometown_encrypted" is missing' in text or \
            'table "public"."patient_treatment_plans" is missing' in text, (result.check, text)


def test_an_error_inside_one_part_of_a_check_names_the_part_and_the_rest_still_runs():
    result = Result("two parts")
    with result.guard("patients", "name"):
        raise psycopg.errors.UndefinedColumn('column "name" does not exist: \'Jane Doe\'')
    with result.guard("sessions"):
        result.add("sessions: a real finding")
    assert result.problems[0].startswith("patients.name: could not be checked: UndefinedColumn")
    assert "Jane Doe" not in result.problems[0]
    assert result.problems[1] == "sessions: a real finding"


def test_rollback_is_verified_against_the_full_fingerprint_recorded_at_backup_time(migrated_db, legacy_db,
                                                                                    tmp_path):
    record = backup.take_backup(legacy_db, tmp_path)
    dump = Path(record.path)
    assert rollback.schema_as_at_backup(_catalog(legacy_db), dump, LEGACY_TABLES).ok
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE clients_hipaa ALTER COLUMN status SET DEFAULT 'inactive'")
        conn.execute("CREATE INDEX left_behind ON sessions_hipaa (date)")
    text = "\n".join(rollback.schema_as_at_backup(_catalog(legacy_db), dump, LEGACY_TABLES).problems)
    assert '"clients_hipaa": column "status" differs' in text
    assert '"sessions_hipaa": index "left_behind" only now' in text


def test_the_codec_reads_ciphertext_as_the_app_does():
    codec = PhiCodec(SANDBOX_KEY)
    value = codec.encrypt("jane@example.com")
    assert is_v1(value) and not is_v1(value + "\n")
    with pytest.raises(ValueError):
        codec.decrypt(value + "\n")
    assert codec.decrypt("   ") is None  # the app reads whitespace-only as null: not a fault


def test_the_legacy_schema_check_speaks_of_the_legacy_schema(legacy_db):
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE clients_hipaa ADD COLUMN surprise text")
    result = schema.matches(_catalog(legacy_db), GATE.legacy_schema, GATE.legacy_objects,
                            check="legacy schema (no drift)")
    assert result.check == "legacy schema (no drift)"
    assert not any("new schema" in p for p in result.problems)
    assert any('"clients_hipaa"."surprise" is in the database but not in the description' in p
               for p in result.problems)
