"""A backup's record: the JSON beside the dump (size, sha256s, versions, the content checksums at the dump's
snapshot, where the copy off the box is), authenticated by a MAC under a key derived from the PHI key; the
hashing stream every dump and restore reads through; what a file is by its first bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from migration_gate.config.environment import variable
from migration_gate.core.errors import MigrationGateError
from migration_gate.core.phi import PhiKeyError, derived_key
from migration_gate.db import catalog

RECORD_SUFFIX = ".json"
CATALOG_SUFFIX = ".catalog.json"  # the catalog at the dump's snapshot, beside the dump
AGE_MAGIC = b"age-encryption.org/v1\n"  # the first line of every age file
DUMP_MAGIC = b"PGDMP"  # the first bytes of a pg_dump custom-format archive (plaintext)
CHUNK = 1 << 16
PHI_KEY_ENV = "PHI_ENCRYPTION_KEY"  # the record's MAC key is derived from it (record_key)
RECORD_PURPOSE = b"migration-gate backup record"  # phi.derived_key's purpose for the record's MAC


class BackupError(MigrationGateError, RuntimeError):
    """A backup or restore step failed; the message is one clear line, with secrets redacted."""


def record_key(phi_key: str | bytes | None) -> bytes | None:
    """The key of the backup record's MAC, derived from the PHI key (phi.derived_key, as the answers recordings'
    digests are); None without a PHI key. Whoever can write the run folder but lacks the PHI key cannot forge a
    record, while any holder of a recipient's public key can write a valid age file."""
    if not phi_key:
        return None
    try:
        return derived_key(phi_key, RECORD_PURPOSE)
    except PhiKeyError as exc:
        raise BackupError(str(exc)) from None


def environment_record_key() -> bytes | None:
    return record_key(variable(PHI_KEY_ENV))


class Hashing(io.RawIOBase):
    """Passes bytes through to a stream (reading or writing) and hashes and counts them on the way."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        super().__init__()
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = b""

    def _seen(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        if self.size < 16:
            self.head = (self.head + bytes(data[:16]))[:16]
        self.size += len(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        assert self.stream is not None
        data = self.stream.read(min(len(buffer), CHUNK))
        buffer[:len(data)] = data
        self._seen(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.stream is not None:
            self.stream.write(data)
        self._seen(memoryview(data))
        return len(data)

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


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
    encryption: str = "none"  # "age": the file is an age file; "none": a plaintext pg_dump archive
    recipients: list[str] = field(default_factory=list)  # the age public keys it is encrypted to
    plaintext_sha256: str = ""  # of the pg_dump stream, taken on the way into the encryptor
    plaintext_size: int = 0
    counters: dict[str, list] = field(default_factory=dict)  # "schema.table" -> [n_tup_ins, n_tup_upd, n_tup_del]
    location: str = ""  # where store_backup put the copy off the box (its last output line)
    remote_verified: str = ""  # when the copy fetched back matched both sha256s
    keep_local_until: str = ""  # the local copy's retention ([backup] retention_days_local)
    compress: int = 1  # pg_dump --compress (gzip level) it was taken with; dumps before [backup] compress: 1
    jobs: int = 1  # connections that took the snapshot's checksums beside pg_dump
    table_bytes: dict[str, int] = field(default_factory=dict)  # "schema.table" -> bytes on disk (relpages) then
    catalog_sha256: str = ""  # of the catalog record beside the dump: the MAC covers it through this digest
    mac: str = ""  # HMAC-SHA256 of every other field under record_key (the PHI key's): "" written without one

    def _mac(self, key: bytes) -> str:
        fields = {k: v for k, v in asdict(self).items() if k != "mac"}
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    def save(self, key: bytes | None) -> Path:
        """Written atomically, owner-only, with the catalog's sha256 and a MAC under `key` (record_key) that
        covers both; key None (no PHI key at all) writes an unauthenticated record."""
        catalog_file = Path(self.path + CATALOG_SUFFIX)
        catalog_sha = sha256_file(catalog_file) if catalog_file.is_file() else ""
        signed = dataclasses.replace(self, catalog_sha256=catalog_sha, mac="")
        signed = dataclasses.replace(signed, mac=signed._mac(key) if key else "")
        record = Path(self.path + RECORD_SUFFIX)
        tmp = record.with_name(record.name + ".tmp")
        tmp.write_text(json.dumps(asdict(signed), indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(record)
        return record

    def summary(self) -> dict:
        """What the run's state and the sign-off carry: names, sizes, digests, location; no checksums."""
        return {k: v for k, v in asdict(self).items() if k not in ("checksums", "counters", "table_bytes", "mac")}

    @classmethod
    def load(cls, dump: Path, key: bytes | None | str = "environment") -> BackupRecord:
        """The record beside a dump, authenticated: with a key (record_key; by default the environment's PHI key)
        a record without a valid MAC is refused, whoever wrote it; without any PHI key an authenticated record
        cannot be verified and is refused too, and an unauthenticated one is read as it is."""
        try:
            data = json.loads(Path(str(dump) + RECORD_SUFFIX).read_text())
            found = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError, AttributeError):
            raise BackupError(f"no readable backup record next to {dump}") from None
        found.authenticate(environment_record_key() if isinstance(key, str) else key)
        return found

    def authenticate(self, key: bytes | None) -> None:
        name = Path(self.path).name
        if key is None:
            if self.mac:
                raise BackupError(f"the record of backup {name} is authenticated, but no {PHI_KEY_ENV} is set to "
                                  "verify it: refusing to use it")
            return
        if not self.mac:
            raise BackupError(f"the record of backup {name} carries no MAC (written without the PHI key, or not by "
                              "the gate): refusing to use it")
        if not hmac.compare_digest(self.mac, self._mac(key)):
            raise BackupError(f"the record of backup {name} does not authenticate under the PHI key (forged or "
                              "altered): refusing to use it")

    def catalog(self) -> catalog.Catalog:
        """The schema at the dump's snapshot (what a rollback must bring back exactly), as authenticated by the
        record's MAC (its sha256 is in the record)."""
        path = Path(self.path + CATALOG_SUFFIX)
        try:
            found = sha256_file(path)
            if (self.catalog_sha256 or self.mac) and found != self.catalog_sha256:
                raise BackupError(f"the catalog record of backup {Path(self.path).name} is not the one recorded "
                                  f"(sha256 {found[:12]}, recorded {self.catalog_sha256[:12] or 'none'}): "
                                  "refusing to use it")
            return catalog.Catalog.load(path)
        except (OSError, ValueError, TypeError, KeyError):
            raise BackupError(f"no readable catalog record next to {self.path}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
