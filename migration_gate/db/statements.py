"""Which statements a few of the app's requests ran, from pg_stat_statements, when the target has it.

A latency check that only says "p95 over the limit" leaves the engineer to guess which query regressed (a plan
that lost its index, say). Where the target database has the pg_stat_statements extension and the gate's role can
read the app's entries (superuser, or the privileges of pg_read_all_stats), the gate snapshots the view, sends the
requests, snapshots it again, and names the statements whose counters moved, most blocks read first (the view has
no "rows read" counter; shared blocks hit + read is what a scan costs). It is never required: without the
extension, or without the privilege, the caller gets a note saying why, and nothing else changes.

No data leaves the database: pg_stat_statements replaces the constants of SELECT/INSERT/UPDATE/DELETE statements
with $n, and only such statements are named; comments are stripped, a text that still holds a quoted string is
withheld, and every text is cut short.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql

from migration_gate.db import connection as db

T = TypeVar("T")
EXTENSION = "pg_stat_statements"
TEXT_CHARS = 160
NAMED = re.compile(r"^\s*\(?\s*(SELECT|WITH|INSERT|UPDATE|DELETE|MERGE|VALUES|TABLE)\b", re.I)
COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)
QUOTED = re.compile(r"'|\$[A-Za-z_]*\$")  # a string literal or dollar quoting survived normalization
WITHHELD = "(text withheld: not a normalized statement)"


@dataclass(frozen=True)
class Statement:
    """One statement's share of a window: counters are differences between the two snapshots."""

    queryid: int
    calls: int
    blocks: int  # shared blocks hit + read
    rows: int  # rows returned or affected
    total_ms: float
    text: str  # normalized, comment-free, cut short (or WITHHELD)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0

    def line(self) -> str:
        return (f"{self.blocks:,} blocks read in {self.calls} calls ({self.mean_ms:.1f} ms each, {self.rows:,} rows "
                f"returned): {self.text}")

    def to_json(self) -> dict:
        return {"queryid": self.queryid, "calls": self.calls, "blocks": self.blocks, "rows": self.rows,
                "total_ms": round(self.total_ms, 2), "query": self.text}


def safe_text(query: str | None) -> str:
    """The statement's text fit for a report: only normalized statements, comments stripped, whitespace collapsed,
    cut to TEXT_CHARS; anything else is WITHHELD."""
    if not query:
        return WITHHELD
    text = " ".join(COMMENTS.sub(" ", query).split())
    if not NAMED.match(text) or QUOTED.search(text):
        return WITHHELD
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 3] + "..."


def unavailable(conn: psycopg.Connection) -> str | None:
    """Why the app's statements cannot be read here (a note), or None when they can."""
    row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
                       " WHERE e.extname = %s", (EXTENSION,)).fetchone()
    if row is None:
        return f"{EXTENSION} is not installed in this database: no per-statement figures"
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(row[0], EXTENSION)))
    except psycopg.Error as exc:
        return (f"{EXTENSION} is installed but cannot be read ({type(exc).__name__}; it must be in "
                "shared_preload_libraries): no per-statement figures")
    allowed = conn.execute("SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')").fetchone()[0]
    if not allowed:
        return (f"{EXTENSION} is readable, but only this role's own statements: the app's need superuser or "
                "pg_read_all_stats for the gate's role; no per-statement figures")
    return None


def availability(dsn: str) -> str | None:
    """unavailable() on a connection of its own; a database that does not answer is a note too."""
    try:
        with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            return unavailable(conn)
    except psycopg.Error as exc:
        return f"{EXTENSION} not consulted: the database did not answer ({type(exc).__name__})"


Snapshot = dict[tuple[int, int, int], tuple[int, int, int, float, str]]


def _snapshot(conn: psycopg.Connection) -> Snapshot:
    schema = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
                          " WHERE e.extname = %s", (EXTENSION,)).fetchone()[0]
    rows = conn.execute(sql.SQL(
        "SELECT userid::bigint, dbid::bigint, queryid, calls, shared_blks_hit + shared_blks_read, rows,"
        " total_exec_time, query FROM {} WHERE dbid = (SELECT oid FROM pg_database WHERE datname ="
        " current_database()) AND queryid IS NOT NULL").format(sql.Identifier(schema, EXTENSION))).fetchall()
    return {(r[0], r[1], r[2]): (r[3], r[4], r[5], r[6], r[7]) for r in rows}


def _moved(before: Snapshot, after: Snapshot, limit: int) -> list[Statement]:
    moved = []
    for key, (calls, blocks, rows, total_ms, query) in after.items():
        was = before.get(key, (0, 0, 0, 0.0, ""))
        if calls > was[0] and EXTENSION not in (query or ""):
            moved.append(Statement(queryid=key[2], calls=calls - was[0], blocks=blocks - was[1], rows=rows - was[2],
                                   total_ms=total_ms - was[3], text=safe_text(query)))
    moved.sort(key=lambda s: (-s.blocks, -s.total_ms))
    return moved[:limit]


def ran_during(dsn: str, work: Callable[[], T], limit: int = 3) -> tuple[T, list[Statement], str | None]:
    """Run work() between two snapshots of pg_stat_statements: (its result, the statements run meanwhile in this
    database that read the most blocks, None) or, when the view cannot serve, (its result, [], the note why).
    Other sessions' statements in the same window are counted too: run it while the app is otherwise quiet."""
    try:
        with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            note = unavailable(conn)
            before = _snapshot(conn) if note is None else {}
    except psycopg.Error as exc:
        return work(), [], f"{EXTENSION} not consulted: the database did not answer ({type(exc).__name__})"
    result = work()
    if note is not None:
        return result, [], note
    try:
        with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            after = _snapshot(conn)
    except psycopg.Error as exc:
        return result, [], f"{EXTENSION} not consulted: the database did not answer ({type(exc).__name__})"
    return result, _moved(before, after, limit), None
