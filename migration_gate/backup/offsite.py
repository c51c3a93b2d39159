"""The backup off the box: the store_backup and fetch_backup hooks, and the copy fetched back and verified."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime
from pathlib import Path

from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.reading import verify_plaintext
from migration_gate.backup.record import BackupError, BackupRecord, sha256_file


def hook_env(record: BackupRecord, run_id: str) -> dict[str, str]:
    """What a store_backup / fetch_backup hook gets (besides the gate's own environment): the encrypted file,
    its name, size and sha256, the encryption, the run. Digests and names only: nothing secret."""
    return {"GATE_BACKUP_FILE": str(Path(record.path).resolve()), "GATE_BACKUP_NAME": Path(record.path).name,
            "GATE_BACKUP_SHA256": record.sha256, "GATE_BACKUP_SIZE": str(record.size),
            "GATE_BACKUP_ENCRYPTION": record.encryption, "GATE_RUN_ID": run_id}


def store_offsite(record: BackupRecord, hooks: object, run_id: str, keys: BackupKeys) -> BackupRecord:
    """store_backup copies the file off the box and prints where (its last line); fetch_backup brings it back
    into GATE_BACKUP_DEST; the copy must have the file's sha256 and decrypt to the recorded dump. The record
    gains the location and when it was verified; the fetched copy is deleted."""
    store = getattr(hooks, "store_backup", None)
    fetch = getattr(hooks, "fetch_backup", None)
    if store is None or fetch is None:
        raise BackupError("the hooks offer no store_backup and fetch_backup: the backup cannot be kept off the box")
    env = hook_env(record, run_id)
    location = str(store(env)).strip()
    if not location:
        raise BackupError("hook store_backup printed no location (its last line must say where the copy is)")
    dest = Path(record.path).with_name(Path(record.path).name + ".fetched")
    dest.unlink(missing_ok=True)
    try:
        fetch(env | {"GATE_BACKUP_LOCATION": location, "GATE_BACKUP_DEST": str(dest.resolve())})
        if not dest.is_file():
            raise BackupError(f"hook fetch_backup wrote nothing to GATE_BACKUP_DEST ({dest.name})")
        if sha256_file(dest) != record.sha256:
            raise BackupError(f"the copy fetched back from {location} does not match the backup's sha256")
        verify_plaintext(dest, record, keys)
    finally:
        dest.unlink(missing_ok=True)
    stored = dataclasses.replace(record, location=location,
                                 remote_verified=datetime.now(UTC).isoformat(timespec="seconds"))
    return BackupRecord.load(stored.save(keys.record_key).with_suffix(""), keys.record_key)


def fetch_back(record: BackupRecord, hooks: object, run_id: str) -> None:
    """The local file is gone (a new box, a cleaned disk): fetch it back from its location, sha256 checked."""
    fetch = getattr(hooks, "fetch_backup", None)
    if fetch is None or not record.location:
        raise BackupError(f"backup {record.path} does not exist and no copy off the box is recorded")
    dest = Path(record.path)
    partial = dest.with_name(dest.name + ".fetched")
    fetch(hook_env(record, run_id) | {"GATE_BACKUP_LOCATION": record.location,
                                      "GATE_BACKUP_DEST": str(partial.resolve())})
    if not partial.is_file() or sha256_file(partial) != record.sha256:
        partial.unlink(missing_ok=True)
        raise BackupError(f"the copy fetched back from {record.location} does not match the backup's sha256")
    os.chmod(partial, 0o600)
    partial.replace(dest)
