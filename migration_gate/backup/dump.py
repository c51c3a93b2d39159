"""Taking a backup: pg_dump of an exported snapshot (migration_gate.db.snapshot), its stdout streamed through
the age encryptor into the file, so the plaintext never touches the disk; its sha256 is taken on the stream, the
file's on the file; the content checksums are read beside it in the same snapshot; then the record.

Speed ([backup] compress and jobs, measured by bench/bench_backup.py): pg_dump's gzip, not the encryptor, is
what is slow, so the level defaults to 0; the checksums are read beside pg_dump on connections that import its
snapshot. The file stays one age file of one archive.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyrage
from psycopg import sql

from migration_gate.backup.checksums import table_checksums, table_counters
from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.record import (
    CATALOG_SUFFIX,
    CHUNK,
    DUMP_MAGIC,
    RECORD_SUFFIX,
    BackupError,
    BackupRecord,
    Hashing,
)
from migration_gate.backup.tools import (
    TOOL_TIMEOUT_S,
    server_major,
    split_password,
    tool_error,
    tool_major,
    watchdog,
    with_application_name,
)
from migration_gate.core.redact import connection_cause, describe_target
from migration_gate.db import catalog, sizes
from migration_gate.db import connection as db
from migration_gate.db import snapshot as snapshots
from migration_gate.db.binaries import PgBinaries, find_binaries


def _stream_dump(command: list[str], env: dict[str, str], target: Path, keys: BackupKeys, timeout_s: float
                 ) -> tuple[Hashing, Hashing]:
    """pg_dump's stdout through the encryptor (or straight, encrypt "none") into `target`; nothing else is
    written. Returns the plaintext and file hashers."""
    recipients = keys.age_recipients() if keys.encrypting else []
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None
        plain = Hashing(proc.stdout)
        try:
            with watchdog(proc, timeout_s) as fired, open(target, "xb") as raw:
                out = Hashing(raw)
                if keys.encrypting:
                    pyrage.encrypt_io(plain, out, recipients)
                else:
                    shutil.copyfileobj(plain, out, CHUNK)
                raw.flush()
                os.fsync(raw.fileno())
                proc.wait(timeout=60)
        except Exception as exc:  # an OSError, or the encryptor's own error wrapping one
            proc.kill()
            proc.wait()
            target.unlink(missing_ok=True)  # a partial dump must not keep the disk full for the run's state
            if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc):
                raise BackupError("pg_dump failed: the disk is full") from None
            if isinstance(exc, OSError):
                raise BackupError(f"pg_dump could not be written to {target.name}: {exc.strerror or exc}") from None
            raise BackupError(f"pg_dump could not be encrypted into {target.name}: {type(exc).__name__}") from None
        finally:
            proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if fired.is_set():
        target.unlink(missing_ok=True)
        raise BackupError(f"pg_dump did not finish within {timeout_s:g} s ([backup] dump_timeout_seconds)")
    if proc.returncode != 0 or not plain.head.startswith(DUMP_MAGIC):
        target.unlink(missing_ok=True)
        raise tool_error("pg_dump failed", stderr or "it wrote no archive")
    return plain, out


def sweep_leftovers(folder: Path) -> list[str]:
    """What a killed backup left in its folder, removed; the names removed. A process killed with SIGKILL
    cleans nothing: the dump being written (`<dump>.partial`, encrypted as it streams, never plaintext unless
    encrypt = "none"), a copy being fetched back (`.fetched`), a record half written (`.json.tmp`), or a dump
    renamed into place whose record was never written. A dump with its record is complete and stays.

    Only for a folder no live process writes into: the gate calls it on its own run's backup folder while it
    holds the cut-over lock, which the killed process's lock session gave up when it died."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        name = path.name
        unrecorded = (name.endswith((".dump", ".dump.age")) and path.is_file()
                      and not Path(str(path) + RECORD_SUFFIX).exists())
        if name.endswith((".partial", ".fetched", RECORD_SUFFIX + ".tmp")) or unrecorded:
            if unrecorded:
                _discard(path)
            else:
                path.unlink(missing_ok=True)
            removed.append(name)
    return removed


def take_backup(dsn: str, folder: Path, binaries: PgBinaries | None = None, name: str | None = None,
                keys: BackupKeys | None = None, timeout_s: float = 3600.0, retention_days: int = 7,
                lock_wait_timeout: str | None = None, application_name: str | None = None, compress: int = 0,
                jobs: int = 1, in_snapshot: Callable[[str], None] | None = None) -> BackupRecord:
    """pg_dump (custom format) streamed into an age file only its owner can read (or a plaintext dump with
    encrypt "none"), plus a JSON record beside it. keys default to [backup]'s from the environment.
    compress: pg_dump's gzip level ([backup] compress). jobs: connections that take the content checksums in
    the dump's snapshot while pg_dump streams (they and pg_dump read the same snapshot side by side).
    in_snapshot: called with the exported snapshot's name before pg_dump starts (baseline_digests imports it and
    digests the same data while pg_dump dumps it).
    lock_wait_timeout: pg_dump gives up (fails) rather than wait longer for a table's lock (pg_dump sets its own
    session's lock_timeout to 0, so the DSN's cannot bound it): the pre-checks' dump of a live database.

    Killed at any moment (SIGKILL), nothing in the database changes (pg_dump only reads, in the snapshot the
    transaction below exported) and no plaintext reaches the disk: the file is `<dump>.partial` until it is
    complete, then renamed; sweep_leftovers removes what a killed one left. An orphaned pg_dump dies at its next
    write into the pipe nobody reads any more (SIGPIPE), or is ended by the resumed run (its application_name)."""
    keys = keys if keys is not None else BackupKeys.from_environment()
    if keys.encrypting:
        keys.age_recipients()  # a missing or bad recipient fails before anything is dumped
    binaries = binaries or find_binaries()
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"backup folder {folder} cannot be created: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BackupError(f"backup folder {folder} is not writable")
    try:  # autocommit: the snapshot's transaction below is the session's first, not inside an implicit one
        conn = db.connect(dsn, connect_timeout=10, autocommit=True)
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
        if keys.encrypting and target.suffix != ".age":
            target = target.with_name(target.name + ".age")
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        # the snapshot's transaction stays open until pg_dump and the checksums beside it have read it
        with snapshots.session(conn, export=True) as snapshot:
            counters = table_counters(conn)  # at the snapshot: no write can slip between these and the dump unseen
            if in_snapshot is not None:
                in_snapshot(snapshot)
            on_disk = sizes.catalog_bytes(conn)
            tagged = with_application_name(dsn, application_name)
            plain_dsn, env = split_password(tagged)
            digests: dict[str, Any] = {}

            # beside pg_dump, on connections tagged like it (a resumed run ends them too): the catalog's functions
            # take table locks like pg_dump's, so they wait no longer than it does (lock_wait_timeout)
            def digest() -> None:
                try:
                    with db.connect(tagged, autocommit=True, connect_timeout=10) as reader:
                        if lock_wait_timeout:
                            reader.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_wait_timeout)))
                        with snapshots.session(reader, snapshot=snapshot):
                            digests["catalog"] = catalog.inspect(reader)
                    digests["checksums"] = table_checksums(tagged, digests["catalog"].tables, jobs, snapshot,
                                                           lock_wait_timeout)
                except BaseException as exc:  # noqa: BLE001 - raised below, in the caller's thread
                    digests["error"] = exc
            beside = threading.Thread(target=digest, daemon=True)
            beside.start()
            old_umask = os.umask(0o077)
            try:
                waits = [f"--lock-wait-timeout={lock_wait_timeout}"] if lock_wait_timeout else []
                plain, out = _stream_dump([binaries.tool("pg_dump"), "--format=custom", f"--compress={compress}",
                                           *waits, f"--snapshot={snapshot}", f"--dbname={plain_dsn}"], env, partial,
                                          keys, timeout_s)
            finally:  # a failed dump does not wait for the checksums: their connections end on their own
                os.umask(old_umask)
            beside.join()  # the snapshot's transaction stays open until its checksums are all taken
            if "error" in digests:
                partial.unlink(missing_ok=True)
                exc = digests["error"]
                if isinstance(exc, psycopg.Error):
                    raise BackupError(f"the checksums in the dump's snapshot failed: {connection_cause(exc)}") from None
                raise exc
            checksums, at_snapshot = digests["checksums"], digests["catalog"]
            version = conn.execute("SHOW server_version").fetchone()[0]
    os.chmod(partial, 0o600)
    partial.replace(target)
    try:
        at_snapshot.save(Path(str(target) + CATALOG_SUFFIX))
        os.chmod(str(target) + CATALOG_SUFFIX, 0o600)
    except OSError as exc:  # the dump fitted, its record did not: no half-recorded backup stays behind
        _discard(target)
        raise BackupError("the backup could not be recorded: "
                          + ("the disk is full" if exc.errno == errno.ENOSPC else str(exc.strerror))) from None
    record = BackupRecord(
        path=str(target), size=out.size, sha256=out.hexdigest(), taken_at=taken_at.isoformat(),
        target=describe_target(dsn), server_version=version,
        pg_dump_version=subprocess.run([binaries.tool("pg_dump"), "--version"], capture_output=True,
                                       text=True, timeout=TOOL_TIMEOUT_S).stdout.strip(),
        checksums=checksums, encryption=keys.encrypt if keys.encrypting else "none",
        recipients=list(keys.recipients) if keys.encrypting else [], plaintext_sha256=plain.hexdigest(),
        plaintext_size=plain.size, counters=counters,
        keep_local_until=(taken_at + timedelta(days=retention_days)).date().isoformat(), compress=compress,
        jobs=jobs, table_bytes={k: v for k, v in on_disk.items() if k in checksums})
    try:
        record = BackupRecord.load(record.save(keys.record_key).with_suffix(""), keys.record_key)  # as saved
    except OSError as exc:
        _discard(target)
        raise BackupError("the backup could not be recorded: "
                          + ("the disk is full" if exc.errno == errno.ENOSPC else str(exc.strerror))) from None
    return record


def _discard(dump: Path) -> None:
    """A dump and whatever of its record was written, removed (the run's state must still fit on the disk)."""
    for path in (dump, Path(str(dump) + CATALOG_SUFFIX), Path(dump.as_posix() + RECORD_SUFFIX),
                 Path(dump.as_posix() + RECORD_SUFFIX + ".tmp")):
        path.unlink(missing_ok=True)
