"""Backups with pg_dump, their record (size, sha256, versions, content checksums), and restores.

The dump and the content checksums come from the same snapshot: a REPEATABLE READ transaction exports its
snapshot, pg_dump dumps exactly that snapshot, and the checksums are computed inside the same transaction. So
"the restored backup holds exactly the data of the live database at backup time" can be checked by content.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate import catalog
from migration_gate.checksums import table_checksum
from migration_gate.embedded import PgBinaries, find_binaries
from migration_gate.redact import connection_cause, describe_target, redact_text

RECORD_SUFFIX = ".json"
CATALOG_SUFFIX = ".catalog.json"  # the catalog at the dump's snapshot, beside the dump


class BackupError(RuntimeError):
    """A backup or restore step failed; the message is one clear line, with secrets redacted."""


@dataclass(frozen=True)
class BackupRecord:
    path: str
    size: int
    sha256: str
    taken_at: str
    target: str
    server_version: str
    pg_dump_version: str
    checksums: dict[str, list]  # "schema.table" -> [rows, digest] at the dump's snapshot, every user schema

    def save(self) -> Path:
        record = Path(self.path + RECORD_SUFFIX)
        record.write_text(json.dumps(asdict(self), indent=2))
        os.chmod(record, 0o600)
        return record

    @classmethod
    def load(cls, dump: Path) -> BackupRecord:
        try:
            return cls(**json.loads(Path(str(dump) + RECORD_SUFFIX).read_text()))
        except (OSError, ValueError, TypeError):
            raise BackupError(f"no readable backup record next to {dump}") from None

    def catalog(self) -> catalog.Catalog:
        """The schema at the dump's snapshot (what a rollback must bring back exactly)."""
        try:
            return catalog.Catalog.load(Path(self.path + CATALOG_SUFFIX))
        except (OSError, ValueError, TypeError, KeyError):
            raise BackupError(f"no readable catalog record next to {self.path}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def split_password(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN without its password, and an environment carrying it, so it never shows on a command line."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    password = info.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return psycopg.conninfo.make_conninfo(**info), env


def tool_major(binaries: PgBinaries, tool: str) -> int:
    out = subprocess.run([binaries.tool(tool), "--version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else 0


def server_major(conn: psycopg.Connection) -> int:
    return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


def _fail(message: str, stderr: str) -> BackupError:
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    if "No space left on device" in stderr:
        return BackupError(f"{message}: the disk is full")
    return BackupError(redact_text(f"{message}: {last}" if last else message))


def take_backup(dsn: str, folder: Path, binaries: PgBinaries | None = None, name: str | None = None
                ) -> BackupRecord:
    """pg_dump (custom format) to a file only its owner can read, plus a JSON record beside it."""
    binaries = binaries or find_binaries()
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"backup folder {folder} cannot be created: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BackupError(f"backup folder {folder} is not writable")
    try:
        conn = psycopg.connect(dsn, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise BackupError(f"database {describe_target(dsn)} is unreachable: {connection_cause(exc)}") from None
    with conn:
        server = server_major(conn)
        dump_major = tool_major(binaries, "pg_dump")
        if dump_major < server:
            raise BackupError(f"pg_dump {dump_major} is older than the server ({server}); "
                              f"use pg_dump {server} or newer")
        taken_at = datetime.now(UTC)
        target = folder / (name or f"backup-{taken_at:%Y%m%dT%H%M%SZ}.dump")
        partial = target.with_name(target.name + ".partial")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        plain_dsn, env = split_password(dsn)
        old_umask = os.umask(0o077)
        try:
            done = subprocess.run([binaries.tool("pg_dump"), "--format=custom", "--compress=1",
                                   f"--snapshot={snapshot}", f"--file={partial}", f"--dbname={plain_dsn}"],
                                  capture_output=True, text=True, env=env)
        finally:
            os.umask(old_umask)
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise _fail("pg_dump failed", done.stderr)
        at_snapshot = catalog.inspect(conn)
        checksums = {key: list(astuple(table_checksum(conn, t.name, schema=t.schema)))
                     for key, t in sorted(at_snapshot.tables.items())}
        version = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute("COMMIT")
    os.chmod(partial, 0o600)
    partial.replace(target)
    at_snapshot.save(Path(str(target) + CATALOG_SUFFIX))
    os.chmod(str(target) + CATALOG_SUFFIX, 0o600)
    record = BackupRecord(
        path=str(target), size=target.stat().st_size, sha256=sha256_file(target), taken_at=taken_at.isoformat(),
        target=describe_target(dsn), server_version=version,
        pg_dump_version=subprocess.run([binaries.tool("pg_dump"), "--version"], capture_output=True,
                                       text=True).stdout.strip(),
        checksums=checksums)
    record.save()
    return record


def astuple(checksum) -> tuple[int, str]:
    return checksum.rows, checksum.digest


def list_contents(path: Path, binaries: PgBinaries | None = None) -> list[str]:
    """pg_restore --list: the dump's table of contents (raises when pg_restore cannot read it)."""
    binaries = binaries or find_binaries()
    done = subprocess.run([binaries.tool("pg_restore"), "--list", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise _fail(f"pg_restore cannot read {path}", done.stderr)
    return [line for line in done.stdout.splitlines() if line and not line.startswith(";")]


def database_dsn(dsn: str, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)


def restore(path: Path, server_dsn: str, dbname: str, binaries: PgBinaries | None = None,
            replace: bool = False) -> str:
    """Restore a dump into a new database on the server of server_dsn; returns that database's DSN.

    The restoring role owns what it restores (--no-owner: a non-superuser cannot give objects to other roles),
    and the grants come along (the roles are the server's), so a scratch copy is what the app's role sees."""
    binaries = binaries or find_binaries()
    admin = database_dsn(server_dsn, "postgres")
    if replace:
        drop_database(server_dsn, dbname)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    target = database_dsn(server_dsn, dbname)
    plain_dsn, env = split_password(target)
    done = subprocess.run([binaries.tool("pg_restore"), "--no-owner", "--exit-on-error",
                           f"--dbname={plain_dsn}", str(path)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        drop_database(server_dsn, dbname)
        raise _fail("pg_restore failed", done.stderr)
    return target


FORCE_SINCE = 13  # DROP DATABASE ... WITH (FORCE)


def drop_database(server_dsn: str, dbname: str, force: bool | None = None, wait_s: float = 10.0) -> None:
    """Drop a (scratch) database even if sessions are still connected to it.

    WITH (FORCE) where the server has it (13+; force=None asks the server, False takes the other way). Otherwise
    no new connections are let in and the database's other sessions are ended first: pg_terminate_backend works
    on the own role's sessions without superuser (another role's need pg_signal_backend, and the error says so)."""
    name = sql.Identifier(dbname)
    with psycopg.connect(database_dsn(server_dsn, "postgres"), autocommit=True) as conn:
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


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def verify_unchanged(dump: Path) -> BackupRecord:
    """The record of a dump whose sha256 still matches it; refuses (BackupError) otherwise."""
    record = BackupRecord.load(dump)
    if not dump.is_file():
        raise BackupError(f"backup {dump} does not exist")
    if sha256_file(dump) != record.sha256:
        raise BackupError(f"backup {dump} no longer matches its recorded sha256: refusing to restore it")
    return record


# Drops every user schema but public (the dump creates them again: drizzle's bookkeeping, say), then empties the
# public schema but keeps the schema itself, with its owner and grants: tables (with their indexes, constraints
# and owned sequences), views, standalone sequences, functions and types; extension members are left.
_EMPTY_PUBLIC = """
DO $gate$ DECLARE r record; BEGIN
  FOR r IN SELECT n.nspname FROM pg_namespace n WHERE n.nspname NOT IN ('public', 'pg_catalog', 'information_schema')
             AND n.nspname NOT LIKE 'pg\\_%' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = n.oid
             AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  FOR r IN SELECT c.oid::regclass AS obj, c.relkind FROM pg_class c
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', CASE r.relkind WHEN 'v' THEN 'VIEW'
      WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, r.obj);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS obj, p.prokind FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE', CASE r.prokind WHEN 'p' THEN 'PROCEDURE'
      WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, r.obj);
  END LOOP;
  FOR r IN SELECT t.oid::regtype AS obj FROM pg_type t WHERE t.typnamespace = 'public'::regnamespace
             AND t.typtype IN ('e', 'd', 'c', 'r') AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class
             WHERE oid = t.typrelid) = 'c')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP TYPE IF EXISTS %s CASCADE', r.obj);
  END LOOP;
END $gate$;
"""


def restore_in_place(dump: Path, dsn: str, binaries: PgBinaries | None = None, lock_timeout_s: int = 60) -> None:
    """Put the target database back to the dump, atomically, with owners and grants as dumped.

    One psql transaction: empty the public schema, then pg_restore's script streamed in with ON_ERROR_STOP;
    COMMIT is sent only after pg_restore finished cleanly. A dump with large objects is refused (their data
    comes with transaction control of its own, which would break the all-or-nothing)."""
    binaries = binaries or find_binaries()
    verify_unchanged(dump)
    if any(" BLOB " in entry or "LARGE OBJECT" in entry for entry in list_contents(dump, binaries)):
        raise BackupError(f"{dump} holds large objects: restore it with pg_restore by hand (not atomic)")
    plain_dsn, env = split_password(dsn)
    with tempfile.TemporaryFile() as psql_err, tempfile.TemporaryFile() as script_err:
        psql = subprocess.Popen([binaries.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", plain_dsn,
                                 "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_err,
                                env=env)
        assert psql.stdin is not None
        psql.stdin.write(f"BEGIN;\nSET LOCAL client_min_messages = warning;\nSET LOCAL lock_timeout = "
                         f"'{int(lock_timeout_s)}s';\n{_EMPTY_PUBLIC}\n".encode())
        psql.stdin.flush()  # before pg_restore writes to the same pipe
        script = subprocess.Popen([binaries.tool("pg_restore"), "-f", "-", str(dump)], stdout=psql.stdin,
                                  stderr=script_err)
        script.wait()
        with contextlib.suppress(BrokenPipeError):  # psql stopped at an error; its stderr says which
            if script.returncode == 0:
                psql.stdin.write(b"COMMIT;\n")
            psql.stdin.close()
        psql.wait()
        psql_err.seek(0)
        script_err.seek(0)
        psql_text = psql_err.read().decode("utf-8", "replace")
        script_text = script_err.read().decode("utf-8", "replace")
    if script.returncode != 0:
        raise _fail("pg_restore could not stream the backup (nothing was changed)", script_text + psql_text)
    if psql.returncode != 0:
        raise _fail("restoring the backup failed (nothing was changed)", psql_text)
