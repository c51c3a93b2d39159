"""Every database check goes red on a sandbox broken the way it guards against (target-app.md section 8), with
a message that names the table, column and rows, and carries no PHI. And each is green on a clean sandbox."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from migration_gate.checks import carried as carried_rows
from migration_gate.checks import data, encryption, environment, integrity, organizations, schema
from migration_gate.config import load_config
from migration_gate.core.phi import PhiCodec
from migration_gate.core.result import Result
from migration_gate.db.binaries import PgBinaries, find_binaries
from migration_gate.db.writes import Carried, CarriedTable
from sandbox.synthetic import SANDBOX_KEY
from tests.support import check_bite
from tests.support.check_bite import INTEGRITY, red

GATE = load_config()
TENANCY = GATE.tenancy
CODEC = PhiCodec(SANDBOX_KEY)
WRONG = PhiCodec("22" * 32)
DOUBLE = CODEC.encrypt(CODEC.encrypt("jane@example.com"))
known_phi = check_bite.known_phi  # the fixture: the seeded PHI no message may carry


def _break(dsn: str, statements: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _run(dsn: str, check: Callable[[psycopg.Connection], Result]) -> Result:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return check(conn)


LEGACY_PHI = GATE.legacy_phi_columns()
NEW_PHI = GATE.new_encrypted_columns()

# (label, breakage, check, fragment expected in the message)
PREMIGRATION = [
    ("plaintext PHI in a legacy column", ["UPDATE clients_hipaa SET email_encrypted = 'jane@example.com' WHERE id = 3"],
     lambda c: encryption.well_formed(c, LEGACY_PHI), "clients_hipaa.email_encrypted: 1 values are not v1"),
    ("v2 ciphertext in a legacy column",
     ["UPDATE clients_hipaa SET phone_encrypted = 'v2' || substr(phone_encrypted, 3) WHERE id = 5"],
     lambda c: encryption.well_formed(c, LEGACY_PHI), "1 of them v2:"),
    ("double encryption in a legacy column", [f"UPDATE sessions_hipaa SET notes_encrypted = '{DOUBLE}' WHERE id = 2"],
     lambda c: encryption.decrypts(c, CODEC, LEGACY_PHI), "sessions_hipaa.notes_encrypted: 1 values decrypt to"),
    ("a dropped legacy column", ["ALTER TABLE clients_hipaa DROP COLUMN pronouns_encrypted"],
     lambda c: schema.matches(c, GATE.legacy_schema), '"public"."clients_hipaa"."pronouns_encrypted" is missing'),
    ("a changed legacy type", ["ALTER TABLE clients_hipaa ALTER COLUMN session_cost TYPE text"],
     lambda c: schema.matches(c, GATE.legacy_schema), '"clients_hipaa"."session_cost" is text, expected numeric(10,2)'),
    ("orphaned sessions", ["ALTER TABLE sessions_hipaa DROP CONSTRAINT sessions_hipaa_client_id_clients_hipaa_id_fk",
                           "UPDATE sessions_hipaa SET client_id = 999999 WHERE id IN (1, 2)"],
     lambda c: schema.orphans(c, GATE.legacy_foreign_keys), "sessions_hipaa.client_id -> clients_hipaa: 2 orphan"),
    ("a missing legacy foreign key",
     ["ALTER TABLE sessions_hipaa DROP CONSTRAINT sessions_hipaa_client_id_clients_hipaa_id_fk"],
     lambda c: schema.foreign_keys(c, GATE.legacy_foreign_keys), "sessions_hipaa.client_id -> clients_hipaa: no"),
    ("a duplicated therapist profile",
     ["INSERT INTO therapist_profiles (user_id, name) SELECT user_id, name FROM therapist_profiles WHERE user_id = 1"],
     lambda c: data.duplicates(c, GATE.unique_keys), "therapist_profiles(user_id): 1 duplicated keys"),
    ("money the new type rejects", ["ALTER TABLE clients_hipaa ALTER COLUMN copay_amount TYPE text",
                                    "UPDATE clients_hipaa SET copay_amount = '$150' WHERE id = 7",
                                    "UPDATE clients_hipaa SET copay_amount = '1,200.50' WHERE id = 8"],
     lambda c: data.money_fits(c, GATE.money), "clients_hipaa.copay_amount: 2 values would not survive"),
]

POSTMIGRATION = [
    ("a missing column (500 on GET /api/patients)", ["ALTER TABLE patients DROP COLUMN patient_name_search_hash"],
     lambda c: schema.matches(c, GATE.new_schema), '"patients"."patient_name_search_hash" is missing'),
    ("a leftover legacy column", ["ALTER TABLE clinical_sessions ADD COLUMN notes_encrypted text"],
     lambda c: schema.matches(c, GATE.new_schema), '"clinical_sessions"."notes_encrypted" is in the database but not'),
    ("patient_age still present", ["ALTER TABLE patients ADD COLUMN patient_age integer"],
     lambda c: schema.matches(c, GATE.new_schema), '"patients"."patient_age" is in the database but not'),
    ("a boolean left as text", ["ALTER TABLE patients ALTER COLUMN authorization_required TYPE text"],
     lambda c: schema.matches(c, GATE.new_schema),
     '"patients"."authorization_required" is text default false, expected boolean default false'),
    ("nullable, unfilled organization_id",
     ["ALTER TABLE clinical_sessions ALTER COLUMN organization_id DROP NOT NULL",
      "UPDATE clinical_sessions SET organization_id = NULL WHERE id IN (3, 4, 5)"],
     lambda c: schema.not_null(c, "clinical_sessions", "organization_id"),
     "clinical_sessions.organization_id: 3 rows NULL"),
    ("ON DELETE CASCADE instead of RESTRICT",
     ["ALTER TABLE patients DROP CONSTRAINT patients_organization_id_organizations_id_fk",
      "ALTER TABLE patients ADD FOREIGN KEY (organization_id) REFERENCES organizations(id) ON DELETE CASCADE"],
     lambda c: schema.foreign_keys(c, GATE.new_foreign_keys), "ON DELETE CASCADE, expected RESTRICT"),
    ("patient_id still pointing at the legacy table (0009)",
     ["CREATE TABLE clients_hipaa (id integer PRIMARY KEY)", "INSERT INTO clients_hipaa SELECT id FROM patients",
      "ALTER TABLE clinical_sessions ADD FOREIGN KEY (patient_id) REFERENCES clients_hipaa(id)"],
     lambda c: schema.foreign_keys(c, GATE.new_foreign_keys),
     "clinical_sessions.patient_id references public.clients_hipaa"),
    ("an orphaned plan", ["ALTER TABLE patient_treatment_plans DROP CONSTRAINT "
                          "patient_treatment_plans_patient_id_patients_id_fk",
                          "UPDATE patient_treatment_plans SET patient_id = 999999 WHERE id = 1"],
     lambda c: schema.orphans(c, GATE.new_foreign_keys), "patient_treatment_plans.patient_id -> patients: 1 orphan"),
    ("a foreign key without an index", ["DROP INDEX idx_clinical_sessions_patient_id"],
     lambda c: schema.index_coverage(c, GATE.new_foreign_keys), "clinical_sessions.patient_id: no index"),
    ("a sequence behind max(id)", ["SELECT setval('patients_id_seq', 1)"],
     lambda c: schema.sequences(c, list(GATE.new_schema)), '"patients"."id": sequence would hand out 2'),
    ("an id without its default (0010)", ["ALTER TABLE audit_logs_hipaa ALTER COLUMN id DROP DEFAULT"],
     lambda c: schema.sequences(c, list(GATE.new_schema)), '"audit_logs_hipaa"."id": no nextval default'),
    ("v2 ciphertext carried over", ["UPDATE patients SET patient_dob_encrypted = 'v2' || "
                                    "substr(patient_dob_encrypted, 3) WHERE id = 9"],
     lambda c: encryption.well_formed(c, NEW_PHI), "patients.patient_dob_encrypted: 1 values are not v1"),
    ("plaintext left behind", ["UPDATE patients SET patient_contact_email_encrypted = 'jane@example.com' WHERE id = 4"],
     lambda c: encryption.no_plaintext(c, NEW_PHI), "patients.patient_contact_email_encrypted: 1 values look like an"),
    ("double encryption", [f"UPDATE clinical_sessions SET session_progress_notes_encrypted = '{DOUBLE}' WHERE id = 6"],
     lambda c: encryption.decrypts(c, CODEC, NEW_PHI), "clinical_sessions.session_progress_notes_encrypted: 1 values "
                                                       "decrypt to ciphertext again"),
    ("corrupted ciphertext", ["UPDATE therapist_phi SET therapist_ssn_encrypted = overlay(therapist_ssn_encrypted "
                              "placing (CASE WHEN substr(therapist_ssn_encrypted, 40, 1) = 'a' THEN 'b' ELSE 'a' END) "
                              "from 40 for 1) WHERE id = 1"],
     lambda c: encryption.decrypts(c, CODEC, NEW_PHI), "therapist_phi.therapist_ssn_encrypted: 1 values do not"),
    ("a reused IV", ["UPDATE patients SET patient_gender_encrypted = (SELECT patient_gender_encrypted FROM patients "
                     "WHERE patient_gender_encrypted LIKE 'v1:%' ORDER BY id LIMIT 1) WHERE id = 120"],
     lambda c: encryption.unique_ivs(c, NEW_PHI), "1 IVs are used by more than one value"),
    ("hash of the ciphertext", ["UPDATE patients SET patient_contact_email_search_hash = encode(sha256(convert_to("
                                "patient_contact_email_encrypted, 'UTF8')), 'hex') WHERE id IN (1, 2, 3)"],
     lambda c: encryption.search_hashes(c, CODEC, GATE.search_hashes),
     "patients.patient_contact_email_search_hash: 3 hashes differ"),
    ("missing search hashes", ["UPDATE patients SET patient_name_search_hash = NULL"],
     lambda c: encryption.search_hashes(c, CODEC, GATE.search_hashes), "patients.patient_name_search_hash: 120 "
                                                                       "hashes missing"),
    ("two primary owners", ["INSERT INTO organization_memberships (organization_id, user_id, role, is_primary_owner) "
                            "VALUES (1, 2, 'business_owner', true)"],
     lambda c: organizations.one_primary_owner(c, TENANCY), "organizations: 1 with more than one primary owner"),
    ("no primary owner", ["UPDATE organization_memberships SET is_primary_owner = false WHERE organization_id = 2"],
     lambda c: organizations.one_primary_owner(c, TENANCY),
     "organizations: 1 without an active primary business_owner"),
    ("a duplicated membership", ["INSERT INTO organization_memberships (organization_id, user_id, role) "
                                 "VALUES (1, 1, 'therapist')"],
     lambda c: organizations.no_duplicate_memberships(c, TENANCY), "organization_memberships: 2 rows repeat"),
    ("an inactive owner (403 on the API)", ["UPDATE organization_memberships SET is_active = false WHERE user_id = 2"],
     lambda c: organizations.owners_have_full_rights(c, TENANCY), "users_auth: 1 owners of patients rows lack"),
    ("a cross-tenant patient", ["UPDATE patients SET organization_id = 1 WHERE primary_therapist_id = 2 AND id < 30"],
     lambda c: organizations.rows_in_their_organization(c, TENANCY), "patients: "),
    ("duplicated organizations (a re-run derivation)",
     ["INSERT INTO organizations (name, type) SELECT name, type FROM organizations WHERE id = 1"],
     lambda c: organizations.derived_per_user(c, TENANCY), "organizations: 7 rows for 6 users"),
]


@pytest.mark.parametrize("label, breakage, check, fragment", PREMIGRATION, ids=[p[0] for p in PREMIGRATION])
def test_premigration_check_goes_red(legacy_db, known_phi, label, breakage, check, fragment):
    assert _run(legacy_db, check).ok, f"{label}: red before the sandbox was broken"
    _break(legacy_db, breakage)
    red(_run(legacy_db, check), fragment, known_phi)


@pytest.mark.parametrize("label, breakage, check, fragment", POSTMIGRATION, ids=[p[0] for p in POSTMIGRATION])
def test_postmigration_check_goes_red(migrated_db, known_phi, label, breakage, check, fragment):
    assert _run(migrated_db, check).ok, f"{label}: red before the sandbox was broken"
    _break(migrated_db, breakage)
    red(_run(migrated_db, check), fragment, known_phi)




@pytest.mark.parametrize("label, breakage, table, check, fragment", INTEGRITY, ids=[p[0] for p in INTEGRITY])
def test_integrity_check_goes_red(legacy_template, pg, migrated_db, known_phi, label, breakage, table, check,
                                  fragment):
    mapping = GATE.table(table)
    with psycopg.connect(pg.dsn(legacy_template)) as baseline, psycopg.connect(migrated_db, autocommit=True) as new:
        assert check(baseline, new, mapping).ok, f"{label}: red before the sandbox was broken"
        for statement in breakage:
            new.execute(statement)
        red(check(baseline, new, mapping), fragment, known_phi)


def test_swapped_ciphertexts_are_caught_after_decryption(legacy_template, pg, migrated_db, known_phi):
    """No AAD: a value moved to another row still decrypts; only comparing plaintexts per row finds it."""
    mapping = GATE.table("patients")
    with psycopg.connect(pg.dsn(legacy_template)) as baseline, psycopg.connect(migrated_db, autocommit=True) as new:
        assert integrity.phi_equal(baseline, new, mapping, CODEC).ok
        new.execute("UPDATE patients p SET patient_contact_email_encrypted = q.patient_contact_email_encrypted "
                    "FROM patients q WHERE (p.id, q.id) IN ((1, 2), (2, 1))")
        red(integrity.phi_equal(baseline, new, mapping, CODEC), "patient_contact_email_encrypted: 2 values differ",
            known_phi)


def test_re_encrypted_values_still_compare_equal(legacy_template, pg, migrated_db):
    """A migration may re-encrypt with fresh IVs: equal plaintexts are equal."""
    with psycopg.connect(migrated_db, autocommit=True) as new:
        old = new.execute("SELECT patient_home_city_encrypted FROM patients WHERE id = 3").fetchone()[0]
        new.execute("UPDATE patients SET patient_home_city_encrypted = %s WHERE id = 3",
                    (CODEC.encrypt(CODEC.decrypt(old)),))
        with psycopg.connect(pg.dsn(legacy_template)) as baseline:
            assert integrity.phi_equal(baseline, new, GATE.table("patients"), CODEC).ok


def test_a_key_that_does_not_match_the_data_is_caught(legacy_db, known_phi):
    assert _run(legacy_db, lambda c: encryption.decrypts(c, CODEC, LEGACY_PHI, sample=20)).ok
    red(_run(legacy_db, lambda c: encryption.decrypts(c, WRONG, LEGACY_PHI, sample=20)),
        "do not decrypt with this key", known_phi)


def test_pg_dump_older_than_the_server_is_caught(pg, tmp_path: Path, known_phi):
    real = find_binaries()
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        script = fake / tool
        script.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 11.22'\n")
        script.chmod(0o755)
    with psycopg.connect(pg.dsn()) as conn:
        assert environment.pg_dump_compatible(conn, real).ok
        red(environment.pg_dump_compatible(conn, PgBinaries(fake, 11)), "pg_dump 11 is older than the server",
            known_phi)


def test_a_long_open_transaction_is_caught(legacy_db, known_phi):
    with psycopg.connect(legacy_db) as idle, psycopg.connect(legacy_db) as conn:
        idle.execute("SELECT 1")  # psycopg opened a transaction and leaves it open
        conn.execute("SELECT pg_sleep(0.05)")
        red(environment.no_long_transactions(conn, max_seconds=0), "1 transactions open too long", known_phi)


def test_an_unwritable_backup_folder_is_caught(legacy_db, tmp_path: Path, known_phi):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with psycopg.connect(legacy_db) as conn:
        assert environment.backup_folder_ready(tmp_path / "backups", conn).ok
        red(environment.backup_folder_ready(blocker / "backups", conn), "is not writable", known_phi)


@pytest.mark.parametrize("key, fragment", [(None, "not set"), ("ab" * 31, "got 62"), ("xy" * 32, "hexadecimal")])
def test_a_bad_key_is_caught(key, fragment, known_phi):
    assert environment.key_configured(SANDBOX_KEY).ok
    red(environment.key_configured(key), fragment, known_phi)


def test_the_rows_a_sql_rollback_carried_back_are_checked_and_only_they(legacy_db, known_phi):
    """RB-04: a corrupt PHI value among the rows carried back is red, named by table and id; one outside them is
    not this check's (RB-02 compares those with the backup)."""
    carried = Carried("public", [CarriedTable("clients_hipaa", "id", "patients", "id", 0, "", written=[2, 3, 4, 5])])
    assert _run(legacy_db, lambda c: carried_rows.check(c, CODEC, carried, LEGACY_PHI).result).ok
    value = CODEC.encrypt("a note about nothing")
    _break(legacy_db, [f"UPDATE clients_hipaa SET email_encrypted = '{value[:-2]}' WHERE id = 2",
                       "UPDATE clients_hipaa SET email_encrypted = 'jane@example.com' WHERE id = 3",
                       f"UPDATE clients_hipaa SET email_encrypted = '{value[:-1]}' WHERE id = 4",
                       "UPDATE clients_hipaa SET email_encrypted = 'john@example.com' WHERE id = 7"])
    found = _run(legacy_db, lambda c: carried_rows.check(c, CODEC, carried, LEGACY_PHI))
    red(found.result, "public.clients_hipaa.email_encrypted: 2 values are not v1 ciphertext (first ids: 3, 4)",
        known_phi)
    problems = "\n".join(found.result.problems)
    assert "look like an email in the clear (first ids: 3)" in problems
    assert "public.clients_hipaa.email_encrypted: 1 values do not decrypt" in problems and "ids: 2)" in problems
    assert found.failing == {"public.clients_hipaa": 3} and found.ids["public.clients_hipaa"] == [2, 3, 4]
    assert found.line().startswith("3 of 4 fail the PHI checks (format, plaintext, decryption): public.clients_hipaa")
    nothing = _run(legacy_db, lambda c: carried_rows.check(c, CODEC, None, LEGACY_PHI).result)
    assert nothing.ok and "nothing to check" in nothing.notes[0]
