"""Writes since the migration, counted exactly from each row's xmin: what a rollback to the backup would discard,
the gate's own writes apart; and the rows a SQL rollback must carry back, proven by key."""

from __future__ import annotations

import psycopg
from psycopg import sql

from migration_gate.config import load_config
from migration_gate.db import migration, writes
from migration_gate.db.checksums import table_columns
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import ROLLBACK

GATE = load_config()


def _copy_rows(conn: psycopg.Connection, table: str, limit: int, **overrides: object) -> list[int]:
    """New rows copied from existing ones (a fresh id each), with some columns overridden; their ids."""
    columns = [c for c in table_columns(conn, table) if c != "id"]
    chosen = sql.SQL(", ").join(sql.Literal(overrides[c]) if c in overrides else sql.Identifier(c) for c in columns)
    rows = conn.execute(sql.SQL("INSERT INTO {t} ({cols}) SELECT {chosen} FROM {t} ORDER BY id LIMIT {n} "
                                "RETURNING id").format(t=sql.Identifier(table),
                                                       cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
                                                       chosen=chosen, n=sql.Literal(limit))).fetchall()
    return [r[0] for r in rows]


def _fixture_user(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT id FROM users_auth WHERE username = %s", (GATE.sandbox_username,)).fetchone()[0]


def _write_as_users(dsn: str) -> dict[str, int]:
    """What the app's users (and the gate's login once) write after go-live; returns the expected counts."""
    with psycopg.connect(dsn) as conn:
        me = _fixture_user(conn)
        other = conn.execute("SELECT id FROM users_auth WHERE id <> %s ORDER BY id LIMIT 1", (me,)).fetchone()[0]
        conn.execute("UPDATE clinical_sessions SET updated_at = now() WHERE id IN "
                     "(SELECT id FROM clinical_sessions ORDER BY id LIMIT 3)")
        conn.execute("DELETE FROM patient_treatment_plans WHERE id = (SELECT max(id) FROM patient_treatment_plans)")
        _copy_rows(conn, "audit_logs_hipaa", 1, user_id=me)
        _copy_rows(conn, "audit_logs_hipaa", 2, user_id=other)
    return {"public.clinical_sessions": 3, "public.patient_treatment_plans": 1, "public.audit_logs_hipaa": 2}


def test_rows_written_since_the_mark_are_counted_exactly_and_the_gates_own_apart(migrated_db: str) -> None:
    mark = writes.take_mark(migrated_db)
    assert mark.tables["public.patients"].key == "id" and mark.tables["public.patients"].rows > 0
    expected = _write_as_users(migrated_db)
    columns, me = writes.attribution(GATE, migrated_db, GATE.sandbox_username)
    assert columns["public.audit_logs_hipaa"] == "user_id" and me is not None

    since = writes.count_since(migrated_db, mark, columns, me)

    sessions, plans, audit = (since.of(t) for t in expected)
    assert (sessions.written, sessions.inserted, sessions.deleted, sessions.own) == (3, 0, 0, 0)
    assert (plans.written, plans.inserted, plans.deleted) == (0, 0, 1)
    assert (audit.written, audit.inserted, audit.deleted, audit.own) == (3, 3, 0, 1)
    assert {t.table for t in since.tables} == set(expected)  # nothing else counted: the mark is exact
    assert (since.others, since.own) == (3 + 1 + 2, 1)
    line = since.summary("others")
    assert "public.clinical_sessions: 0 inserted, 3 updated, 0 deleted" in line
    assert "public.audit_logs_hipaa: 3 inserted, 0 updated, 0 deleted (1 by the gate's own login)" in line


def test_nothing_written_counts_nothing_even_after_vacuum_freeze(migrated_db: str) -> None:
    """Freezing keeps the raw xmin (PostgreSQL 9.4+): a frozen row written since still counts, an old one not."""
    mark = writes.take_mark(migrated_db)
    assert writes.count_since(migrated_db, mark).tables == []
    _write_as_users(migrated_db)
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("VACUUM FREEZE")
        conn.execute("CREATE TABLE notes_since (id int PRIMARY KEY)")
        conn.execute("INSERT INTO notes_since VALUES (1), (2)")
    since = writes.count_since(migrated_db, mark)
    assert since.of("public.clinical_sessions").written == 3
    assert since.of("public.audit_logs_hipaa").inserted == 3
    assert since.of("public.notes_since").created and since.of("public.notes_since").written == 2


def test_a_sql_rollback_carries_every_row_back_and_a_lossy_one_is_caught(migrated_db: str, new_db,
                                                                          migrated_template: str) -> None:
    mark = writes.take_mark(migrated_db)
    with psycopg.connect(migrated_db) as conn:
        new_ids = _copy_rows(conn, "clinical_sessions", 2)
    _write_as_users(migrated_db)
    since = writes.count_since(migrated_db, mark)
    carried = writes.what_to_carry(migrated_db, GATE, mark, since)
    sessions = carried.table("sessions_hipaa")
    assert set(new_ids) <= set(sessions.written) and len(sessions.written) == 5 and carried.changed
    assert carried.table("treatment_plans_hipaa").deleted == 1

    migration.run_file(migrated_db, ROLLBACK, SANDBOX_KEY)
    assert writes.verify_carried(migrated_db, carried) == []
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT count(*) FROM sessions_hipaa WHERE id = ANY(%s)", (new_ids,)).fetchone()[0] == 2

    lossy = new_db(migrated_template)  # a rollback that forgets the sessions written since the migration
    mark = writes.take_mark(lossy)
    with psycopg.connect(lossy) as conn:
        _copy_rows(conn, "clinical_sessions", 2)
    carried = writes.what_to_carry(lossy, GATE, mark, writes.count_since(lossy, mark))
    migration.run_file(lossy, ROLLBACK, SANDBOX_KEY)
    with psycopg.connect(lossy) as conn:
        conn.execute("DELETE FROM sessions_hipaa WHERE id = (SELECT max(id) FROM sessions_hipaa)")
    problems = writes.verify_carried(lossy, carried)
    assert len(problems) == 1 and problems[0].startswith("public.sessions_hipaa: ")
    assert "rows lost or invented" in problems[0]
