"""Property tests (hypothesis) where examples miss things: the comparison engine, and the migration followed by
the checks on small generated legacy datasets full of edge cases."""

from __future__ import annotations

import itertools
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from migration_gate.checks import integrity
from migration_gate.config import load_config
from migration_gate.core.phi import PhiCodec, search_hash
from migration_gate.db import migration
from migration_gate.rehearsal.scratch import post_checks
from migration_gate.scan.compare import Side, compare
from sandbox.seed import sql_file
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import MIGRATION

GATE = load_config()
CODEC = PhiCodec(SANDBOX_KEY)
_names = itertools.count(1)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

labels = st.one_of(st.none(), st.text(max_size=8).filter(lambda s: "\0" not in s))
rows = st.lists(st.tuples(st.integers(-60, 60), labels, st.one_of(st.none(), st.integers(-5, 5))),
                unique_by=lambda r: r[0], max_size=25)


@pytest.fixture(scope="module")
def engine_db(pg) -> psycopg.Connection:
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE engine_props")
    with psycopg.connect(pg.dsn("engine_props"), autocommit=True) as conn:
        for table in ("a", "b"):
            conn.execute(sql.SQL("CREATE TABLE {} (id int, label text, amount int)").format(sql.Identifier(table)))
        yield conn


def _load(conn: psycopg.Connection, table: str, data: list[tuple]) -> None:
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as copy:
        for row in data:
            copy.write_row(row)


def _diff(conn: psycopg.Connection, chunk: int = 7):
    return compare(Side(conn, "a", "id", ["label", "amount"]), Side(conn, "b", "id", ["label", "amount"]), chunk)


@SETTINGS
@given(rows, st.randoms())
def test_row_order_never_matters(engine_db, data, rnd):
    shuffled = list(data)
    rnd.shuffle(shuffled)
    _load(engine_db, "a", data)
    _load(engine_db, "b", shuffled)
    assert _diff(engine_db).equal


@SETTINGS
@given(rows.filter(bool), st.data())
def test_any_single_changed_row_is_found(engine_db, data, draw):
    index = draw.draw(st.integers(0, len(data) - 1))
    key, label, amount = data[index]
    column = draw.draw(st.sampled_from(["label", "amount"]))
    changed = (key, (label or "") + "x", amount) if column == "label" else (key, label, (amount or 0) + 1)
    _load(engine_db, "a", data)
    _load(engine_db, "b", data[:index] + [changed] + data[index + 1:])
    diff = _diff(engine_db)
    assert diff.columns[column] == [key] and not diff.missing and not diff.extra


@SETTINGS
@given(rows.filter(bool), st.data())
def test_any_single_missing_row_is_found(engine_db, data, draw):
    index = draw.draw(st.integers(0, len(data) - 1))
    _load(engine_db, "a", data)
    _load(engine_db, "b", data[:index] + data[index + 1:])
    diff = _diff(engine_db)
    assert diff.missing == [data[index][0]] and not diff.extra and not any(diff.columns.values())


@SETTINGS
@given(rows, st.one_of(st.integers(61, 500), st.integers(-500, -61)), st.data())
def test_any_single_extra_or_duplicated_row_is_found(engine_db, data, new_key, draw):
    _load(engine_db, "a", data)
    _load(engine_db, "b", [*data, (new_key, "new", 1)])
    assert _diff(engine_db).extra == [new_key]
    if data:
        twin = draw.draw(st.sampled_from(data))
        _load(engine_db, "b", [*data, twin])
        assert _diff(engine_db).duplicated == [twin[0]]


# -- the migration, then the checks, on generated legacy datasets ---------------------------------------------

names = st.text(alphabet=st.characters(categories=["L", "Zs"], max_codepoint=0xFFFF) | st.sampled_from("'-. "),
                min_size=1, max_size=20).filter(lambda s: s.strip())
emails = st.builds(lambda local, pad_l, pad_r, upper: f"{' ' * pad_l}{local.upper() if upper else local}"
                   f"@Example.com{' ' * pad_r}", st.from_regex(r"[a-z0-9._]{1,12}", fullmatch=True),
                   st.integers(0, 2), st.integers(0, 2), st.booleans())
money = st.one_of(st.none(), st.decimals(min_value=Decimal("-99999999.99"), max_value=Decimal("99999999.99"),
                                         places=2, allow_nan=False, allow_infinity=False))
phi_text = st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=30).filter(
    lambda s: "\0" not in s and s.strip()))
patient = st.tuples(names, st.one_of(st.none(), emails), phi_text, money, money, st.booleans(),
                    st.integers(0, 3))
datasets = st.lists(patient, min_size=1, max_size=12)


@pytest.fixture(scope="module")
def empty_legacy(pg) -> str:
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE empty_legacy")
    with psycopg.connect(pg.dsn("empty_legacy"), autocommit=True) as conn:
        conn.execute(sql_file("legacy_schema.sql"))
        conn.execute(sql_file("legacy_foreign_keys.sql"))
        conn.execute("INSERT INTO users_auth (username, password, email) VALUES "
                     "('t1', '$2b$04$abcdefghijklmnopqrstuuSqo00bU6d8NRsHl.KxtU6qnDVRHjn2m', 'a@example.com'), "
                     "('t2', '$2b$04$abcdefghijklmnopqrstuuSqo00bU6d8NRsHl.KxtU6qnDVRHjn2m', 'b@example.com')")
        conn.execute("INSERT INTO therapist_profiles (user_id, name, ein_number) "
                     "VALUES (1, 'Zoë O''Brien', '12-3456789')")
    return "empty_legacy"


def _clone(pg, template: str) -> str:
    name = f"prop{next(_names)}"
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return name


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(datasets)
def test_migration_then_every_check_is_green_on_generated_data(pg, empty_legacy, dataset):
    legacy = _clone(pg, empty_legacy)
    with psycopg.connect(pg.dsn(legacy), autocommit=True) as conn:
        for i, (name, email, notes, cost, copay, deleted, sessions) in enumerate(dataset, start=1):
            conn.execute(
                "INSERT INTO clients_hipaa (id, therapist_id, name, email_encrypted, email_search_hash, "
                "notes_encrypted, session_cost, copay_amount, deleted) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (i, 1 + i % 2, name, CODEC.encrypt(email), search_hash(email),
                 notes if notes == "" else CODEC.encrypt(notes), cost, copay, deleted))
            for _ in range(sessions):
                conn.execute("INSERT INTO sessions_hipaa (therapist_id, client_id, date, notes_encrypted) "
                             "VALUES (%s, %s, now(), %s)", (1 + i % 2, i, CODEC.encrypt(notes)))
        conn.execute("SELECT setval('clients_hipaa_id_seq', %s)", (len(dataset),))
    baseline = _clone(pg, legacy)
    migration.run_file(pg.dsn(legacy), MIGRATION, SANDBOX_KEY)
    with psycopg.connect(pg.dsn(legacy), autocommit=True) as conn, psycopg.connect(pg.dsn(baseline)) as base:
        problems = [p for r in post_checks(conn, GATE, CODEC, baseline=base) for p in r.problems]
        assert problems == []
        assert integrity.counts(base, conn, GATE.table("patients")).ok
