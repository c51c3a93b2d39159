"""The synthetic legacy data: deterministic from a seed, in the app's formats, with real data's edge cases."""

from __future__ import annotations

import re

import bcrypt
import psycopg
import pytest
from psycopg import sql

from migration_gate.core.phi import PhiCodec, is_v1, search_hash
from migration_gate.db.checksums import database_checksums
from sandbox.seed import LEGACY_TABLES, seed_legacy
from sandbox.synthetic import DEMO_USERS, SANDBOX_KEY, Plan, patient_chunk

codec = PhiCodec(SANDBOX_KEY)


def _one(dsn: str, query: str):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchone()[0]


def test_same_seed_same_database_different_seed_different(new_db, legacy_db: str) -> None:
    again, other = new_db(), new_db()
    seed_legacy(again, 120, seed=1, workers=2)  # another worker count: output must not depend on it
    seed_legacy(other, 120, seed=2, workers=1)
    with psycopg.connect(legacy_db) as a, psycopg.connect(again) as b, psycopg.connect(other) as c:
        first, second, third = (database_checksums(x, list(LEGACY_TABLES)) for x in (a, b, c))
    assert first == second
    assert first["clients_hipaa"] != third["clients_hipaa"]


def test_generation_is_deterministic_in_memory() -> None:
    plan = Plan(seed=7, patients=50)
    rows = lambda: list(patient_chunk(plan, plan.chunks[0], (1, 1), SANDBOX_KEY))  # noqa: E731
    assert rows() == rows()


def test_sizes_follow_the_patient_count(legacy_db: str) -> None:
    assert _one(legacy_db, "SELECT count(*) FROM clients_hipaa") == 120
    assert _one(legacy_db, "SELECT count(*) FROM sessions_hipaa") > 120
    assert _one(legacy_db, "SELECT count(*) FROM treatment_plans_hipaa") > 60


def test_every_phi_value_is_v1_and_decrypts_with_the_sandbox_key(legacy_db: str) -> None:
    with psycopg.connect(legacy_db) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name LIKE '%\\_encrypted'").fetchall()
        assert len(columns) > 30
        checked = 0
        for table, column in columns:
            query = sql.SQL("SELECT {c} FROM {t} WHERE {c} <> ''").format(c=sql.Identifier(column),
                                                                           t=sql.Identifier(table))
            for (value,) in conn.execute(query):
                assert is_v1(value), f"{table}.{column} holds a value that is not v1 ciphertext"
                codec.decrypt(value)
                checked += 1
    assert checked > 1000


def test_no_two_values_share_an_iv(legacy_db: str) -> None:
    with psycopg.connect(legacy_db) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name LIKE '%\\_encrypted'").fetchall()
        union = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT substr({c}, 4, 32) AS iv FROM {t} WHERE {c} LIKE 'v1:%'").format(
                c=sql.Identifier(c), t=sql.Identifier(t)) for t, c in columns)
        query = sql.SQL("SELECT count(*) - count(DISTINCT iv) FROM ({}) x").format(union)
        assert conn.execute(query).fetchone()[0] == 0


def test_search_hashes_are_of_the_decrypted_values(legacy_db: str) -> None:
    with psycopg.connect(legacy_db) as conn:
        rows = conn.execute("SELECT email_encrypted, email_search_hash, phone_encrypted, phone_search_hash "
                            "FROM clients_hipaa").fetchall()
    for email, email_hash, phone, phone_hash in rows:
        assert email_hash == search_hash(codec.decrypt(email))
        assert phone_hash == search_hash(codec.decrypt(phone))


@pytest.mark.parametrize("label, query", [
    ("soft-deleted patients", "SELECT count(*) FROM clients_hipaa WHERE deleted"),
    ("NULL PHI fields", "SELECT count(*) FROM clients_hipaa WHERE email_encrypted IS NULL"),
    ("empty PHI fields", "SELECT count(*) FROM clients_hipaa WHERE phone_encrypted = '' OR notes_encrypted = ''"),
    ("apostrophes in names", "SELECT count(*) FROM clients_hipaa WHERE name LIKE '%''%'"),
    ("non-ASCII names", "SELECT count(*) FROM clients_hipaa WHERE name ~ '[^\\x01-\\x7e]'"),
    ("names with padding", "SELECT count(*) FROM clients_hipaa WHERE name <> btrim(name)"),
    ("negative money", "SELECT count(*) FROM clients_hipaa WHERE session_cost < 0 OR copay_amount < 0"),
    ("NULL money", "SELECT count(*) FROM clients_hipaa WHERE session_cost IS NULL"),
    ("zero money", "SELECT count(*) FROM clients_hipaa WHERE no_show_fee = 0"),
    ("maximum money", "SELECT count(*) FROM clients_hipaa WHERE 99999999.99 IN (session_cost, no_show_fee, "
                      "copay_amount, deductible_amount)"),
    ("therapists without a profile", "SELECT count(*) FROM users_auth u WHERE NOT EXISTS "
                                     "(SELECT 1 FROM therapist_profiles p WHERE p.user_id = u.id)"),
    ("therapists with a blank profile name", "SELECT count(*) FROM therapist_profiles WHERE btrim(name) = ''"),
    ("patients with several plans", "SELECT count(*) FROM (SELECT client_id FROM treatment_plans_hipaa "
                                    "GROUP BY client_id HAVING count(*) >= 3) x"),
    ("patients with many sessions", "SELECT count(*) FROM (SELECT client_id FROM sessions_hipaa "
                                    "GROUP BY client_id HAVING count(*) >= 25) x"),
    ("therapists with no patients", "SELECT count(*) FROM users_auth u WHERE NOT EXISTS "
                                    "(SELECT 1 FROM clients_hipaa c WHERE c.therapist_id = u.id)"),
    ("EINs to encrypt", "SELECT count(*) FROM therapist_profiles WHERE ein_number IS NOT NULL"),
])
def test_edge_cases_are_present(legacy_db: str, label: str, query: str) -> None:
    assert _one(legacy_db, query) > 0, f"no {label} in the seeded data"


def test_emails_with_mixed_case_and_padding_are_present(legacy_db: str) -> None:
    with psycopg.connect(legacy_db) as conn:
        emails = [codec.decrypt(v) for (v,) in conn.execute(
            "SELECT email_encrypted FROM clients_hipaa WHERE email_encrypted <> ''")]
    assert any(e != e.strip() for e in emails)
    assert any(e != e.lower() for e in emails)


def test_passwords_are_bcrypt_and_demo_logins_work(legacy_db: str) -> None:
    with psycopg.connect(legacy_db) as conn:
        hashes = dict(conn.execute("SELECT username, password FROM users_auth").fetchall())
    assert all(re.match(r"^\$2[aby]\$\d\d\$", h) for h in hashes.values())
    for username, password in DEMO_USERS:
        assert bcrypt.checkpw(password.encode(), hashes[username].encode())
