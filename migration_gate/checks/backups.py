"""The backup taken before the migration: present, readable, private (owner-only and encrypted at rest),
recorded, and exactly the live data. Reading it always decrypts into pg_restore's stdin, never to a file."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from migration_gate.backup.checksums import table_checksums
from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.reading import is_encrypted, list_contents
from migration_gate.backup.record import RECORD_SUFFIX, BackupError, BackupRecord, sha256_file
from migration_gate.backup.restores import drop_database, restore
from migration_gate.core.result import Result
from migration_gate.db import connection as db
from migration_gate.db.catalog import inspect


def load_record(dump: Path, result: Result) -> BackupRecord | None:
    """The record beside a dump, or None with the reason added to the result."""
    try:
        return BackupRecord.load(dump)
    except BackupError as exc:
        result.add(str(exc))
        return None


def exists_and_not_empty(dump: Path) -> Result:
    result = Result("the dump exists and is not empty")
    if not dump.is_file():
        result.add(f"{dump} does not exist")
    elif dump.stat().st_size == 0:
        result.add(f"{dump} is empty")
    return result


def readable_by_pg_restore(dump: Path, keys: BackupKeys | None = None) -> Result:
    result = Result("the dump is readable by pg_restore")
    try:
        entries = list_contents(dump, keys=keys)
    except BackupError as exc:
        result.add(str(exc))
        return result
    data = [e for e in entries if " TABLE DATA " in e]
    result.checked = len(entries)
    result.notes.append(f"{len(entries)} entries, {len(data)} tables with data")
    if not data:
        result.add(f"{dump} holds no table data")
    return result


def record_matches(dump: Path) -> Result:
    """The record beside the dump names its size and sha256, and the file still has them."""
    result = Result("sha256 and size recorded and matching")
    record = load_record(dump, result)
    if record is None:
        return result
    result.notes.append(f"{record.size} bytes, sha256 {record.sha256}")
    if not dump.is_file():
        result.add(f"{dump} does not exist")
        return result
    if dump.stat().st_size != record.size:
        result.add(f"{dump} is {dump.stat().st_size} bytes, the record says {record.size}")
    if sha256_file(dump) != record.sha256:
        result.add(f"{dump} sha256 no longer matches the record (the file changed since the backup)")
    return result


def encrypted_at_rest(dump: Path, required: bool = True) -> Result:
    """The file is an age file (its header, not only the record) and not a pg_dump archive in clear; with
    [backup] encrypt = "none" (required False) a plaintext dump is noted, loudly, instead of failing."""
    result = Result("the dump is encrypted at rest")
    record = load_record(dump, result)
    if record is None or not dump.is_file():
        return result
    result.checked = 1
    if is_encrypted(dump):
        result.notes.append(f"age, to {len(record.recipients)} recipient(s)")
    elif required:
        result.add(f"{dump.name} is not an age file: the dump is readable by anyone who can read the file")
    else:
        result.notes.append("NOT ENCRYPTED: [backup] encrypt = \"none\" (the dump holds PHI in clear)")
    return result


def owner_only(dump: Path) -> Result:
    result = Result("the dump is readable by its owner only")
    for path in (dump, Path(str(dump) + RECORD_SUFFIX)):
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                result.add(f"{path.name} has mode {mode:o}: group or others can access it")
            if path.stat().st_uid != os.geteuid():
                result.add(f"{path.name} is not owned by the user running the gate")
    return result


def restores_to_recorded_content(dump: Path, server_dsn: str, keys: BackupKeys | None = None,
                                 jobs: int = 1) -> Result:
    """Restored into a scratch database, every table's content checksum equals the one recorded at the dump's
    snapshot (computed from the live database in the same transaction as pg_dump). jobs: pg_restore streams
    loading the data side by side, then connections taking the checksums side by side ([backup] jobs)."""
    result = Result("the restored dump holds exactly the live data at backup time")
    record = load_record(dump, result)
    if record is None:
        return result
    scratch = f"gate_backup_check_{os.getpid()}_{int(time.time())}"
    try:
        restored = restore(dump, server_dsn, scratch, keys=keys, jobs=jobs)
    except BackupError as exc:
        result.add(str(exc))
        return result
    try:
        with db.connect(restored) as conn:
            tables = inspect(conn).tables
        found = table_checksums(restored, {k: t for k, t in tables.items() if k in record.checksums}, jobs)
        for table, (rows, digest) in sorted(record.checksums.items()):
            result.checked += 1
            if table not in tables:
                result.add(f"{table}: missing from the restored dump")
                continue
            found_rows, found_digest = found[table]
            if (found_rows, found_digest) != (rows, digest):
                result.add(f"{table}: restored content differs from the live data at backup time "
                           f"({found_rows} rows restored, {rows} live)")
        for table in sorted(set(tables) - set(record.checksums)):
            result.add(f"{table}: in the dump but not in the record")
        result.notes.append(f"restored and compared with {jobs} job(s)")
    finally:
        drop_database(server_dsn, scratch)
    return result
