"""A scratch copy that could not be dropped is red with its name: PRE-08's rehearsal drops the scratch databases it
made on the target's server (copies of production's data); a drop that fails is a problem naming the database and
the server (never a DSN or a password), never swallowed.

The fault is real: while the rehearsal runs, the server's superuser takes the scratch copy over (as a provider's
console or a colleague might), so the gate's role no longer has the right to drop it."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import psycopg
from psycopg import sql

from migration_gate.config import RehearsalConfig
from migration_gate.db.embedded import EmbeddedPostgres
from migration_gate.rehearsal.scratch import rehearse_on_copy
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import GATE


def _scratch_copies(conn: psycopg.Connection) -> set[str]:
    return {n for (n,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'gate\\_scratch\\_%'")}


def _take_over_the_first_scratch_copy(admin_dsn: str, done: threading.Event, taken: list[str]) -> None:
    """As the superuser: the first scratch copy that appears is given to the superuser (the gate's role loses
    the right to drop it)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        while not done.is_set() and not taken:
            for name in sorted(_scratch_copies(conn)):
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO postgres").format(sql.Identifier(name)))
                taken.append(name)
                break
            time.sleep(0.02)


def test_a_scratch_copy_that_cannot_be_dropped_is_red_with_its_name(legacy_db: str, pg: EmbeddedPostgres) -> None:
    gate = replace(GATE, rehearsal=RehearsalConfig(kind="scratch"))
    done, taken = threading.Event(), []
    thief = threading.Thread(target=_take_over_the_first_scratch_copy, args=(pg.admin_dsn(), done, taken))
    thief.start()
    try:
        result = rehearse_on_copy(legacy_db, gate, SANDBOX_KEY)
    finally:
        done.set()
        thief.join()
    try:
        assert len(taken) == 1, "the rehearsal made no scratch copy"
        assert not result.ok
        line = next((p for p in result.problems if "could NOT be dropped" in p), None)
        assert line is not None, result.problems
        assert line.startswith(f"rehearsal copy (scratch): BackupError: scratch database {taken[0]} on "
                               "127.0.0.1:"), line
        assert "InsufficientPrivilege" in line and "drop it by hand" in line, line
        assert "password" not in line and "postgresql://" not in line, line
    finally:
        with psycopg.connect(pg.admin_dsn(), autocommit=True) as conn:
            for name in _scratch_copies(conn):
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
