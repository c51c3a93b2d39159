"""The ground the migration stands on: server, tools, key, backup folder, and no long transactions."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate.backup.tools import free_bytes, server_major, tool_major
from migration_gate.core.phi import PhiKeyError, parse_key
from migration_gate.core.result import Result
from migration_gate.db.binaries import PgBinaries
from migration_gate.db.catalog import quote

# The oldest server the gate's SQL runs on: the content checksums aggregate with bit_xor(bigint), new in 14.
# (DROP DATABASE ... WITH (FORCE), new in 13, is used where the server has it; drop_database falls back
# to ending the database's sessions first.)
MIN_SERVER = 14


def server_reachable(conn: psycopg.Connection) -> Result:
    result = Result("database reachable, supported version")
    version = conn.execute("SHOW server_version").fetchone()[0]
    result.notes.append(f"PostgreSQL {version}")
    # what this session waits at most (the pre-checks' own, [precheck]): recorded with the run's results
    lock, statement = conn.execute("SELECT current_setting('lock_timeout'), "
                                   "current_setting('statement_timeout')").fetchone()
    result.notes.append(f"session lock_timeout {lock}, statement_timeout {statement}")
    if server_major(conn) < MIN_SERVER:
        result.add(f"server version {version} is older than {MIN_SERVER} (the content checksums need bit_xor)")
    return result


def pg_dump_compatible(conn: psycopg.Connection, binaries: PgBinaries) -> Result:
    """pg_dump must be the server's major version or newer."""
    result = Result("pg_dump present and not older than the server")
    for tool in ("pg_dump", "pg_restore"):
        if not Path(binaries.tool(tool)).is_file():
            result.add(f"{tool} not found in {binaries.bindir}")
    if result.ok:
        dump, server = tool_major(binaries, "pg_dump"), server_major(conn)
        result.notes.append(f"pg_dump {dump}, server {server}")
        if dump < server:
            result.add(f"pg_dump {dump} is older than the server ({server})")
    return result


def key_configured(key: str | None) -> Result:
    result = Result("PHI_ENCRYPTION_KEY present and 64 hex characters", checked=1, unit="keys")
    try:
        parse_key(key)
    except PhiKeyError as exc:
        result.add(str(exc))
    return result


def backup_folder_ready(folder: Path, conn: psycopg.Connection) -> Result:
    """Writable, with free space at least the database's size (a compressed dump is smaller: a safe margin)."""
    result = Result("backup folder writable with room for the dump")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        result.add(f"backup folder {folder} is not writable")
        return result
    needed = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    free = free_bytes(probe)
    result.notes.append(f"database {needed / 1e6:.1f} MB, free {free / 1e6:.1f} MB")
    if free < needed:
        result.add(f"backup folder {folder} has {free / 1e6:.1f} MB free, the database is {needed / 1e6:.1f} MB")
    return result


_SESSIONS = """
SELECT pid, now() - xact_start,
       usesysid IS NOT NULL AND NOT pg_has_role(usesysid, 'USAGE') AND NOT pg_has_role('pg_read_all_stats', 'USAGE'),
       usename
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()"""


def no_long_transactions(conn: psycopg.Connection, max_seconds: int = 60) -> Result:
    """Open transactions would block the migration's locks (or be blocked by them).

    Without pg_read_all_stats a role sees other roles' sessions with state, query and xact_start NULL (the
    server's rule: it sees the sessions of roles whose privileges it has). Those are counted and make the check
    red, naming whose they are: a transaction this role cannot see is not a transaction known not to exist."""
    result = Result(f"no transactions open longer than {max_seconds} s")
    too_long = sql.SQL("SELECT pid, extract(epoch FROM age)::int FROM ({sessions}) s(pid, age, hidden, role) "
                       "WHERE NOT hidden AND age > make_interval(secs => {limit}) ORDER BY age DESC, pid").format(
        sessions=sql.SQL(_SESSIONS), limit=sql.Literal(max_seconds))
    rows = conn.execute(too_long).fetchall()
    if rows:
        result.add(f"{len(rows)} transactions open too long (pids {', '.join(str(p) for p, _ in rows[:5])}; "
                   f"oldest {rows[0][1]} s)")
    hidden = conn.execute(sql.SQL("SELECT coalesce(role, '?'), count(*) FROM ({sessions}) s(pid, age, hidden, role) "
                                  "WHERE hidden GROUP BY 1 ORDER BY 1").format(sessions=sql.SQL(_SESSIONS))).fetchall()
    if hidden:
        me = conn.execute("SELECT current_user").fetchone()[0]
        total = sum(n for _, n in hidden)
        roles = ", ".join(f"{quote(role)}: {n}" for role, n in hidden)
        result.add(f"{total} sessions of other roles ({roles}): state not visible without pg_read_all_stats; "
                   f"grant it (GRANT pg_read_all_stats TO {quote(me)}), make {quote(me)} a member of those roles, "
                   "or run as a role that sees them")
    result.notes.append(f"sessions of other roles not visible: {sum(n for _, n in hidden)}")
    return result
