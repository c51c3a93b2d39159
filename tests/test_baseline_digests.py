"""Integrity against the digests recorded in the backup's snapshot (migration_gate.backup.digests): green on a
clean migration without restoring anything; red, naming table, ids and columns, on every breakage the restored
copy catches (the restored copy is then used only for the key ranges that differ); and red when the shortcut's
assumption breaks: a write to the legacy data after the digests were taken."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.backup import digests as baseline_digests
from migration_gate.backup.digests import Baseline, BaselineDigests
from migration_gate.checks import integrity
from migration_gate.config import load_config
from migration_gate.core.phi import PhiCodec
from migration_gate.db import migration
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import MIGRATION, _create
from tests.support import check_bite
from tests.support.check_bite import INTEGRITY, red

GATE = load_config()
CODEC = PhiCodec(SANDBOX_KEY)
known_phi = check_bite.known_phi  # the fixture: the seeded PHI no message may carry


@pytest.fixture(scope="module")
def recorded(pg, legacy_template, tmp_path_factory) -> tuple[BaselineDigests, Path]:
    """The seeded legacy data backed up with its digests (what the gate's backup phase records)."""
    dsn = _create(pg, "digested_legacy", legacy_template)
    record = baseline_digests.record_backup(dsn, tmp_path_factory.mktemp("digests"), GATE, SANDBOX_KEY)
    digests = BaselineDigests.load(Path(record.path))
    assert digests is not None and not digests.skipped
    return digests, Path(record.path)


@pytest.fixture
def restored_copy(pg, legacy_template):
    """(connect, asked): the legacy data at backup time, counted when a check asks for it; closed after."""
    asked: list[psycopg.Connection] = []

    def connect() -> psycopg.Connection:
        asked.append(psycopg.connect(pg.dsn(legacy_template), autocommit=True))
        return asked[-1]
    yield connect, asked
    for conn in asked:
        conn.close()


def _all_checks(legacy, new: psycopg.Connection) -> list:
    results = []
    for mapping in GATE.tables:
        results += [integrity.counts(legacy, new, mapping), integrity.rows_correspond(legacy, new, mapping),
                    integrity.columns_equal(legacy, new, mapping), integrity.phi_equal(legacy, new, mapping, CODEC)]
        if GATE.relationships(mapping):
            results.append(integrity.columns_equal(legacy, new, mapping, only=GATE.relationships(mapping)))
    return results


def test_the_file_holds_no_value_and_is_owner_only(recorded, known_phi):
    digests, dump = recorded
    path = Path(str(dump) + baseline_digests.SUFFIX)
    assert path.stat().st_mode & 0o077 == 0
    text = path.read_text()
    assert not [p for p in known_phi if p in text]
    assert {"rows", "columns", "phi"} <= set(json.loads(text)["mappings"]["patients"]["sets"])


def test_a_clean_migration_is_green_without_restoring(recorded, restored_copy, migrated_db):
    connect, asked = restored_copy
    legacy = Baseline.from_backup(recorded[1], connect)
    with psycopg.connect(migrated_db, autocommit=True) as new:
        results = _all_checks(legacy, new)
    assert [r.problems for r in results if not r.ok] == []
    assert not asked, "the backup was restored although every digest agreed"
    assert all(integrity.RECORDED in " ".join(r.notes) for r in results if r.check.endswith(
        ("row counts", "one new row per legacy row", "non-PHI columns equal", "PHI equal after decryption"))
        and r.checked)


@pytest.mark.parametrize("label, breakage, table, check, fragment", INTEGRITY, ids=[p[0] for p in INTEGRITY])
def test_a_broken_migration_is_red_against_the_digests(recorded, restored_copy, migrated_db, known_phi,
                                                       label, breakage, table, check, fragment):
    connect, asked = restored_copy
    legacy = Baseline.from_backup(recorded[1], connect)
    mapping = GATE.table(table)
    with psycopg.connect(migrated_db, autocommit=True) as new:
        for statement in breakage:
            new.execute(statement)
        red(check(legacy, new, mapping), fragment, known_phi)
    assert asked, f"{label}: red without drilling into the restored backup"


def test_phi_differences_are_found_by_digest_and_named_after_decryption(recorded, restored_copy, migrated_db,
                                                                        known_phi):
    connect, _ = restored_copy
    mapping = GATE.table("patients")
    with psycopg.connect(migrated_db, autocommit=True) as new:
        new.execute("UPDATE patients p SET patient_contact_email_encrypted = q.patient_contact_email_encrypted "
                    "FROM patients q WHERE (p.id, q.id) IN ((1, 2), (2, 1))")
        red(integrity.phi_equal(Baseline.from_backup(recorded[1], connect), new, mapping, CODEC),
            "patient_contact_email_encrypted: 2 values differ from the legacy value after decryption (first ids: 1, 2)",
            known_phi)


def test_re_encrypted_values_differ_by_digest_but_are_equal_after_decryption(recorded, restored_copy, migrated_db):
    connect, asked = restored_copy
    with psycopg.connect(migrated_db, autocommit=True) as new:
        old = new.execute("SELECT patient_home_city_encrypted FROM patients WHERE id = 3").fetchone()[0]
        new.execute("UPDATE patients SET patient_home_city_encrypted = %s WHERE id = 3",
                    (CODEC.encrypt(CODEC.decrypt(old)),))
        result = integrity.phi_equal(Baseline.from_backup(recorded[1], connect), new, GATE.table("patients"), CODEC)
    assert result.ok, result.problems
    assert asked and "1 key ranges differed" in " ".join(result.notes)


def test_a_value_encrypted_on_the_way_is_compared_by_its_salted_digest(recorded, restored_copy, migrated_db,
                                                                       known_phi):
    """organizations.organization_business_ein_encrypted comes from plaintext legacy EINs: no ciphertext to match,
    so the decrypted new value is hashed as the backup hashed the plaintext, salted by the PHI key."""
    connect, asked = restored_copy
    mapping = GATE.table("organizations")
    with psycopg.connect(migrated_db, autocommit=True) as new:
        assert integrity.phi_equal(Baseline.from_backup(recorded[1], connect), new, mapping, CODEC).ok and not asked
        (victim,) = new.execute("SELECT id FROM organizations WHERE organization_business_ein_encrypted IS NOT NULL "
                                "ORDER BY id LIMIT 1").fetchone()
        new.execute("UPDATE organizations SET organization_business_ein_encrypted = %s WHERE id = %s",
                    (CODEC.encrypt("98-7654321"), victim))
        red(integrity.phi_equal(Baseline.from_backup(recorded[1], connect), new, mapping, CODEC),
            f"organization_business_ein_encrypted: 1 values differ from the legacy value after decryption "
            f"(first ids: {victim})", known_phi + ["98-7654321"])


def test_a_write_after_the_digests_were_taken_cannot_pass(pg, legacy_template, tmp_path, known_phi):
    """The shortcut assumes the data migrated is the data dumped. A write after the snapshot breaks it: the new
    side differs from the digests, the backup (without the write) is restored, and the row is named."""
    dsn = _create(pg, "written_after_backup", legacy_template)
    record = baseline_digests.record_backup(dsn, tmp_path, GATE, SANDBOX_KEY)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE sessions_hipaa SET status = CASE WHEN status = 'cancelled' THEN 'completed' "
                     "ELSE 'cancelled' END WHERE id = 7")
        conn.execute("UPDATE clients_hipaa SET session_cost = session_cost + 1 WHERE id = 5")
        conn.execute("UPDATE clients_hipaa SET email_encrypted = %s WHERE id = 6", (CODEC.encrypt("x@example.org"),))
    migration.run_file(dsn, MIGRATION, SANDBOX_KEY)
    restored = backup.restore(Path(record.path), pg.dsn(), "written_after_backup_restored")
    legacy = Baseline.from_backup(Path(record.path), lambda: psycopg.connect(restored, autocommit=True))
    with psycopg.connect(dsn, autocommit=True) as new:
        red(integrity.columns_equal(legacy, new, GATE.table("patients")),
            "patients.session_cost: 1 rows differ from the legacy value (first ids: 5)", known_phi)
        red(integrity.phi_equal(legacy, new, GATE.table("patients"), CODEC),
            "patient_contact_email_encrypted: 1 values differ from the legacy value after decryption (first ids: 6)",
            known_phi + ["x@example.org"])
        sessions = integrity.columns_equal(legacy, new, GATE.table("clinical_sessions"))
    assert "clinical_sessions.status: 1 rows differ from the legacy value (first ids: 7)" in "\n".join(
        sessions.problems)
    legacy.close()


def test_digests_of_other_columns_are_not_trusted(recorded, restored_copy, migrated_db):
    """A description changed since the backup (other columns compared) falls back to the restored copy."""
    connect, asked = restored_copy
    mapping = GATE.table("patients")
    fewer = type(mapping)(**{**mapping.__dict__, "columns": dict(list(mapping.columns.items())[:3])})
    with psycopg.connect(migrated_db, autocommit=True) as new:
        assert integrity.columns_equal(Baseline.from_backup(recorded[1], connect), new, fewer).ok
    assert asked


def test_digests_of_another_dump_are_not_trusted(recorded, pg, legacy_template, tmp_path):
    """Digests bind to the dump they were taken with (its sha256): beside another dump they are ignored."""
    digests, dump = recorded
    other = backup.take_backup(pg.dsn(legacy_template), tmp_path)
    Path(other.path + baseline_digests.SUFFIX).write_text(Path(str(dump) + baseline_digests.SUFFIX).read_text())
    assert Baseline.from_backup(Path(other.path), lambda: None).digests is None
    assert Baseline.from_backup(dump, lambda: None).digests is not None


def test_relationships_and_rows_are_read_off_the_columns_digests_until_those_differ(recorded, restored_copy,
                                                                                  migrated_db, known_phi):
    """INT-02's and INT-05's sets are subsets of INT-03's: one Baseline, the columns scanned first, then a
    re-pointed link is still found by the relationship check, and a lost row by the row check."""
    connect, _ = restored_copy
    legacy = Baseline.from_backup(recorded[1], connect)
    mapping = GATE.table("clinical_sessions")
    links = GATE.relationships(mapping)
    with psycopg.connect(migrated_db, autocommit=True) as new:
        new.execute("UPDATE clinical_sessions SET patient_id = 1 WHERE id = 20 AND patient_id <> 1")
        new.execute("DELETE FROM clinical_sessions WHERE id = 31")
        red(integrity.columns_equal(legacy, new, mapping), "clinical_sessions.patient_id: 1 rows differ", known_phi)
        red(integrity.columns_equal(legacy, new, mapping, only=links),
            "clinical_sessions.patient_id: 1 rows differ from the legacy value (first ids: 20)", known_phi)
        red(integrity.rows_correspond(legacy, new, mapping),
            "clinical_sessions: 1 legacy rows have no new row (first ids: 31)", known_phi)
        assert integrity.rows_correspond(legacy, new, GATE.table("patients")).ok


def test_the_plaintext_salt_is_bound_to_the_session_never_written_into_a_statement(pg, legacy_template):
    """A statement's text reaches the server log with any error; the salt (derived from the PHI key) must not."""
    salted = baseline_digests.salt(CODEC)
    with psycopg.connect(pg.dsn(legacy_template)) as conn:
        text = baseline_digests.plain_hash(["first_name"])(psycopg.sql.SQL("k")).as_string(conn)
        assert salted not in text and baseline_digests.SALT_SETTING in text
        baseline_digests.set_salt(conn, salted)
        assert conn.execute(psycopg.sql.SQL("SELECT {}").format(
            baseline_digests.plain_hash([])(psycopg.sql.Literal("1")))).fetchone()[0] == f"{salted}|1"
        conn.rollback()
