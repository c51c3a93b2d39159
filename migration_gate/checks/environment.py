"""The ground the migration stands on: server, tools, key, backup folder, and no long transactions."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from migration_gate.backup import free_bytes, server_major, tool_major
from migration_gate.checks import Result
from migration_gate.embedded import PgBinaries
from migration_gate.phi import PhiKeyError, parse_key

MIN_SERVER = 12


def server_reachable(conn: psycopg.Connection) -> Result:
    result = Result("database reachable, supported version")
    version = conn.execute("SHOW server_version").fetchone()[0]
    result.notes.append(f"PostgreSQL {version}")
    if server_major(conn) < MIN_SERVER:
        result.add(f"server version {version} is older than {MIN_SERVER}")
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
    result = Result("PHI_ENCRYPTION_KEY present and 64 hex characters")
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


def no_long_transactions(conn: psycopg.Connection, max_seconds: int = 60) -> Result:
    """Open transactions would block the migration's locks (or be blocked by them)."""
    result = Result(f"no transactions open longer than {max_seconds} s")
    rows = conn.execute(
        "SELECT pid, extract(epoch FROM now() - xact_start)::int FROM pg_stat_activity "
        "WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND datname = current_database() "
        "AND now() - xact_start > make_interval(secs => %s) ORDER BY 2 DESC", (max_seconds,)).fetchall()
    if rows:
        result.add(f"{len(rows)} transactions open too long (pids {', '.join(str(p) for p, _ in rows[:5])}; "
                   f"oldest {rows[0][1]} s)")
    return result
