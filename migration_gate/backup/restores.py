"""Restoring a backup into a new (scratch) database, and dropping one again.

A restore loads the tables' data in several pg_restore processes, each fed its own decrypted stream
(pg_restore --jobs would need a seekable plaintext file, which must not exist).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.reading import list_contents, pipe_into
from migration_gate.backup.record import BackupError, BackupRecord
from migration_gate.backup.tools import server_major, split_password, tool_error
from migration_gate.db import connection as db
from migration_gate.db.binaries import PgBinaries, find_binaries


def database_dsn(dsn: str, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)


def restore(path: Path, server_dsn: str, dbname: str, binaries: PgBinaries | None = None,
            replace: bool = False, keys: BackupKeys | None = None, timeout_s: float = 3600.0, jobs: int = 1) -> str:
    """Restore a dump into a new database on the server of server_dsn; returns that database's DSN.

    The dump is decrypted into pg_restore's stdin (never to a file). The restoring role owns what it restores
    (--no-owner: a non-superuser cannot give objects to other roles), and the grants come along (the roles are
    the server's), so a scratch copy is what the app's role sees. jobs > 1: the tables' data is loaded by that
    many pg_restore processes side by side, each fed its own decrypted stream (pg_restore --jobs needs a
    seekable plaintext file, which must not exist): the schema first, then the data, then indexes and
    constraints."""
    binaries = binaries or find_binaries()
    keys = keys if keys is not None else BackupKeys.from_environment()
    admin = database_dsn(server_dsn, "postgres")
    if replace:
        drop_database(server_dsn, dbname)
    with db.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    target = database_dsn(server_dsn, dbname)
    plain_dsn, env = split_password(target)
    command = [binaries.tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={plain_dsn}"]
    try:
        if jobs > 1:
            code, stderr = _restore_sections(Path(path), keys, command, env, timeout_s, jobs, binaries)
        else:
            code, stderr = pipe_into(Path(path), keys, command, env, timeout_s)
    except BackupError:
        drop_database(server_dsn, dbname)
        raise
    if code != 0:
        drop_database(server_dsn, dbname)
        raise tool_error("pg_restore failed", stderr)
    return target


def data_groups(entries: list[str], jobs: int, rows: Mapping[str, int] | None = None) -> list[list[str]]:
    """The data section's table of contents split for `jobs` pg_restore processes: each TABLE DATA entry to the
    group with the least weight so far (biggest tables first, by the record's bytes or rows where known); every
    other entry (sequence values, large objects) to the first group. Each group keeps the archive's order: a
    pg_restore reading a pipe cannot go back for an entry it has passed."""
    rows = rows or {}

    def size(entry: str) -> int:
        parts = entry.split()
        return rows.get(f"{parts[-3]}.{parts[-2]}", 0) if len(parts) >= 3 else 0
    tables = sorted((e for e in entries if " TABLE DATA " in e), key=lambda e: -size(e))
    groups: list[list[str]] = [[] for _ in range(max(1, jobs))]
    loads = [0] * len(groups)
    groups[0] += [e for e in entries if " TABLE DATA " not in e]
    for entry in tables:
        least = loads.index(min(loads))
        groups[least].append(entry)
        loads[least] += size(entry) or 1
    order = {entry: i for i, entry in enumerate(entries)}  # a stream is read once: each list in archive order
    return [sorted(g, key=order.__getitem__) for g in groups if g]


def _restore_sections(path: Path, keys: BackupKeys, command: list[str], env: dict[str, str], timeout_s: float,
                      jobs: int, binaries: PgBinaries) -> tuple[int, str]:
    """pre-data in one stream, data in `jobs` streams side by side (each pg_restore reads the whole decrypted
    archive and loads only its tables, chosen with --use-list: a list of table-of-contents lines, no data),
    post-data in one stream (a foreign key needs the index of another table built first)."""
    code, stderr = pipe_into(path, keys, [*command, "--section=pre-data"], env, timeout_s)
    if code != 0:
        return code, stderr
    try:  # the tables' bytes where recorded, else their rows: a weight to spread the data evenly
        record = BackupRecord.load(path)
        weights = record.table_bytes or {k: int(v[0]) for k, v in record.checksums.items()}
    except BackupError:
        weights = {}
    groups = data_groups(list_contents(path, binaries, keys), jobs, weights)
    results: list[tuple[int, str] | BaseException] = [(0, "")] * len(groups)
    with tempfile.TemporaryDirectory(prefix="gate-restore-") as lists:

        def load(i: int, group: list[str]) -> None:
            listing = Path(lists) / f"data-{i}.list"
            listing.write_text("\n".join(group) + "\n")
            try:
                results[i] = pipe_into(path, keys, [*command, "--section=data", f"--use-list={listing}"], env,
                                        timeout_s)
            except BaseException as exc:  # noqa: BLE001 - raised below, in the caller's thread
                results[i] = exc
        threads = [threading.Thread(target=load, args=(i, g), daemon=True) for i, g in enumerate(groups)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
        if result[0] != 0:
            return result
    return pipe_into(path, keys, [*command, "--section=post-data"], env, timeout_s)


FORCE_SINCE = 13  # DROP DATABASE ... WITH (FORCE)


def drop_database(server_dsn: str, dbname: str, force: bool | None = None, wait_s: float = 10.0) -> None:
    """Drop a (scratch) database even if sessions are still connected to it.

    WITH (FORCE) where the server has it (13+; force=None asks the server, False takes the other way). Otherwise
    no new connections are let in and the database's other sessions are ended first: pg_terminate_backend works
    on the own role's sessions without superuser (another role's need pg_signal_backend, and the error says so)."""
    name = sql.Identifier(dbname)
    with db.connect(database_dsn(server_dsn, "postgres"), autocommit=True) as conn:
        if force is None:
            force = server_major(conn) >= FORCE_SINCE
        deadline = time.monotonic() + wait_s
        if force:
            while True:
                try:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
                    return
                except psycopg.errors.InsufficientPrivilege:
                    # FORCE may not end an autovacuum worker (it has no role) busy in a freshly restored
                    # database; a plain DROP cancels those itself. A client of another role keeps it refused.
                    with contextlib.suppress(psycopg.errors.ObjectInUse):
                        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(name))
                        return
                    if time.monotonic() > deadline:
                        raise BackupError(f"database {dbname} has sessions of another role that this role may not "
                                          "end (it needs pg_signal_backend): cannot drop it") from None
                    time.sleep(0.2)
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None:
            return
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
        while True:
            try:  # sessions of a role only: DROP DATABASE cancels autovacuum workers (no role) by itself
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                             "AND pid <> pg_backend_pid() AND usesysid IS NOT NULL", (dbname,))
            except psycopg.errors.InsufficientPrivilege:
                raise BackupError(f"database {dbname} has sessions of another role that this role may not end "
                                  "(it needs pg_signal_backend): cannot drop it") from None
            try:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(name))
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise BackupError(f"database {dbname} is still in use after ending its sessions: "
                                      "cannot drop it") from None
                time.sleep(0.1)
