"""Backups with pg_dump, their record (size, sha256, versions, content checksums), and restores.

The dump and the content checksums come from the same snapshot: a REPEATABLE READ transaction exports its
snapshot, pg_dump dumps exactly that snapshot, and the checksums are computed inside the same transaction. So
"the restored backup holds exactly the data of the live database at backup time" can be checked by content.

At rest the dump is an age file (age-encryption.org/v1, opened by `age -d -i KEY` without this tool): pg_dump's
stdout is streamed through the encryptor into the file, so the plaintext never touches the disk; its sha256 is
taken on the stream, the file's on the file. Every restore streams the decrypted dump into pg_restore's stdin.
The identity (private key) comes only from the environment (GATE_BACKUP_IDENTITY).

Speed ([backup] compress and jobs, measured by bench/bench_backup.py): pg_dump's gzip, not the encryptor, is
what is slow, so the level defaults to 0; the checksums are read beside pg_dump on connections that import its
snapshot; a restore loads the tables' data in several pg_restore processes, each fed its own decrypted stream
(pg_restore --jobs would need a seekable plaintext file). The file stays one age file of one archive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import psycopg
import pyrage
from psycopg import sql
from pyrage import x25519

from migration_gate.app.hooks import command_problems
from migration_gate.config import BackupConfig
from migration_gate.core.errors import MigrationGateError
from migration_gate.core.phi import PhiKeyError, derived_key
from migration_gate.core.redact import connection_cause, describe_target, redact_text
from migration_gate.db import catalog, sizes
from migration_gate.db import connection as db
from migration_gate.db.checksums import table_checksum
from migration_gate.db.embedded import PgBinaries, find_binaries

RECORD_SUFFIX = ".json"
CATALOG_SUFFIX = ".catalog.json"  # the catalog at the dump's snapshot, beside the dump
AGE_MAGIC = b"age-encryption.org/v1\n"  # the first line of every age file
DUMP_MAGIC = b"PGDMP"  # the first bytes of a pg_dump custom-format archive (plaintext)
IDENTITY_ENV = "GATE_BACKUP_IDENTITY"  # an age identity file's path, or the AGE-SECRET-KEY-1... itself
RECIPIENTS_ENV = "GATE_BACKUP_RECIPIENTS"  # extra age public keys (the sandbox's own), comma or space separated
CHUNK = 1 << 16
TOOL_TIMEOUT_S = 60.0  # pg_dump/pg_restore --version and --list
PHI_KEY_ENV = "PHI_ENCRYPTION_KEY"  # the record's MAC key is derived from it (record_key)
RECORD_PURPOSE = b"migration-gate backup record"  # phi.derived_key's purpose for the record's MAC
# CVE-2025-8714 (a dump's content could run psql meta-commands in the restoring session): fixed in these minors
PG_RESTORE_FIXED = {17: 6, 16: 10, 15: 14, 14: 19, 13: 22}


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


def _environment_record_key() -> bytes | None:
    return record_key(os.environ.get(PHI_KEY_ENV))


@dataclass(frozen=True)
class BackupKeys:
    """Who can open a backup: the age recipients (public keys) it is encrypted to, and the identities (private
    keys, from the environment only) a restore decrypts with. encrypt "none" writes a plaintext dump."""

    encrypt: str = "age"
    recipients: tuple[str, ...] = ()
    identities: tuple[str, ...] = field(default=(), repr=False)
    # the record's MAC key (record_key): from PHI_ENCRYPTION_KEY unless given; None only without a PHI key
    record_key: bytes | None = field(default_factory=_environment_record_key, repr=False)

    @classmethod
    def generate(cls) -> BackupKeys:
        """A fresh key pair held only in memory: for a dump that lives minutes (PRE-08's copy, the sandbox)."""
        identity = x25519.Identity.generate()
        return cls(recipients=(str(identity.to_public()),), identities=(str(identity),))

    @classmethod
    def from_environment(cls, settings: BackupConfig | None = None, env: Mapping[str, str] | None = None,
                         phi_key: str | None = None) -> BackupKeys:
        """[backup] recipients plus GATE_BACKUP_RECIPIENTS; the identity from GATE_BACKUP_IDENTITY; the record's
        MAC key from phi_key (the gate's target key), else the environment's PHI_ENCRYPTION_KEY."""
        settings = settings or BackupConfig()
        env = os.environ if env is None else env
        extra = tuple(r for r in re.split(r"[\s,]+", env.get(RECIPIENTS_ENV, "")) if r)
        return cls(encrypt=settings.encrypt, recipients=tuple(dict.fromkeys(settings.recipients + extra)),
                   identities=_read_identities(env.get(IDENTITY_ENV, "")),
                   record_key=record_key(phi_key or env.get(PHI_KEY_ENV)))

    @property
    def encrypting(self) -> bool:
        return self.encrypt != "none"

    def age_recipients(self) -> list[x25519.Recipient]:
        if not self.recipients:
            raise BackupError("the backup is to be encrypted (age) but names no recipient: put the public keys in "
                              f"[backup] recipients (or {RECIPIENTS_ENV}), or set [backup] encrypt = \"none\"")
        found = []
        for i, text in enumerate(self.recipients):
            try:
                found.append(x25519.Recipient.from_str(text))
            except pyrage.RecipientError:
                raise BackupError(f"backup recipient {i + 1} is not a valid age public key (age1...)") from None
        return found

    def age_identities(self, what: str) -> list[x25519.Identity]:
        if not self.identities:
            raise BackupError(f"{what} is age-encrypted: set {IDENTITY_ENV} to the identity file that opens it")
        found = []
        for text in self.identities:
            try:
                found.append(x25519.Identity.from_str(text))
            except pyrage.IdentityError:
                raise BackupError(f"{IDENTITY_ENV} holds a line that is not an age identity") from None
        return found

    def identity_file_text(self) -> str:
        """The identities as an age identity file (what `age -d -i FILE` reads)."""
        return "".join(f"# public key: {r}\n" for r in self.recipients) + "".join(f"{i}\n" for i in self.identities)


def _read_identities(value: str) -> tuple[str, ...]:
    """GATE_BACKUP_IDENTITY: the key itself, or the path of an identity file (comments and blank lines skipped)."""
    value = value.strip()
    if not value:
        return ()
    if value.startswith("AGE-SECRET-KEY-"):
        text = value
    else:
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc.__class__.__name__
            raise BackupError(f"{IDENTITY_ENV}: the identity file cannot be read ({why})") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


class _Hashing(io.RawIOBase):
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
        found.authenticate(_environment_record_key() if isinstance(key, str) else key)
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


# The DSN without its password and a client tool's environment (libpq's settings as the gate's sessions see
# them): migration_gate.db.connection.client_env, under the name its callers know.
split_password = db.client_env


def pg_restore_problem(version_text: str) -> str | None:
    """One line when this pg_restore predates the fix of CVE-2025-8714 (a dump's content could run psql
    meta-commands in the restoring session) or its major is out of support; None when it is fixed. version_text:
    what `pg_restore --version` prints."""
    match = re.search(r"\b(\d+)(?:\.(\d+))?", version_text)
    if not match:
        return f"pg_restore reports no version ({version_text.strip()[:60]!r}): cannot check it for CVE-2025-8714"
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    if major > max(PG_RESTORE_FIXED):
        return None
    if major not in PG_RESTORE_FIXED:
        return (f"pg_restore {major}.{minor} is an unsupported major with no fix for CVE-2025-8714: use "
                f"pg_restore {max(PG_RESTORE_FIXED)}.{PG_RESTORE_FIXED[max(PG_RESTORE_FIXED)]} or newer")
    if minor < PG_RESTORE_FIXED[major]:
        return (f"pg_restore {major}.{minor} predates the fix of CVE-2025-8714: use {major}."
                f"{PG_RESTORE_FIXED[major]} or newer")
    return None


def tool_version(binaries: PgBinaries, tool: str) -> str:
    return subprocess.run([binaries.tool(tool), "--version"], capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT_S).stdout.strip()


def tool_major(binaries: PgBinaries, tool: str) -> int:
    out = subprocess.run([binaries.tool(tool), "--version"], capture_output=True, text=True,
                         timeout=TOOL_TIMEOUT_S).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else 0


def server_major(conn: psycopg.Connection) -> int:
    return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


# pg_dump --lock-wait-timeout gave up: its LOCK TABLE was cancelled by the statement_timeout it set for the locks
_LOCK_GAVE_UP = re.compile(r"canceling statement due to statement timeout.*?LOCK TABLE (\S+) IN", re.S)


def _fail(message: str, stderr: str) -> BackupError:
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    if "No space left on device" in stderr:
        return BackupError(f"{message}: the disk is full")
    locked = _LOCK_GAVE_UP.search(stderr)
    if locked:
        return BackupError(f"{message}: lock timeout: gave up waiting for a lock on {locked.group(1)} that another "
                           "session holds (--lock-wait-timeout)")
    return BackupError(redact_text(f"{message}: {last}" if last else message))


def _counters(conn: psycopg.Connection) -> dict[str, list]:
    """pg_stat_user_tables' insert, update and delete counters per table (the cheap change signal)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute("SELECT schemaname, relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables")
    return {f"{schema}.{table}": [ins, upd, dele] for schema, table, ins, upd, dele in rows}


@contextlib.contextmanager
def _watchdog(proc: subprocess.Popen, timeout_s: float) -> Iterator[threading.Event]:
    """Kills the child when it runs past its timeout; the event says whether it did."""
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        with contextlib.suppress(OSError):
            proc.kill()
    timer = threading.Timer(timeout_s, kill)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def table_bytes(conn: psycopg.Connection) -> dict[str, int]:
    """"schema.table" -> its size on disk as of the last VACUUM or ANALYZE (sizes.catalog_bytes: heap and TOAST
    pages from pg_class alone, so it waits for no table lock). Enough to hand the biggest tables out first."""
    return sizes.catalog_bytes(conn)


def table_checksums(dsn: str, tables: Mapping[str, catalog.Table], jobs: int = 1, snapshot: str | None = None,
                    lock_timeout: str | None = None) -> dict[str, list]:
    """"schema.table" -> [rows, digest] over `jobs` connections, biggest tables first; with `snapshot` each
    connection imports it (SET TRANSACTION SNAPSHOT), so every digest is of exactly the data pg_dump dumps.
    Why in parallel: the digests cost about as much as the dump or the restore they prove (100,000 patients:
    14 s), and each table's is one statement the server runs on one core. lock_timeout: each connection gives
    up on a table's lock after it (a live database's pre-check copy, like pg_dump's --lock-wait-timeout)."""
    if not tables:
        return {}
    with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        sizes = table_bytes(conn)
    queue = sorted(tables, key=lambda key: -sizes.get(key, 0))
    found: dict[str, list] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                if lock_timeout:
                    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_timeout)))
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                if snapshot:
                    conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
                while True:
                    with lock:
                        if not queue or errors:
                            break
                        key = queue.pop(0)
                    table = tables[key]
                    found[key] = list(astuple(table_checksum(conn, table.name, schema=table.schema)))
                conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            with lock:
                errors.append(exc)
    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, min(jobs, len(tables))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return dict(sorted(found.items()))


def _stream_dump(command: list[str], env: dict[str, str], target: Path, keys: BackupKeys, timeout_s: float
                 ) -> tuple[_Hashing, _Hashing]:
    """pg_dump's stdout through the encryptor (or straight, encrypt "none") into `target`; nothing else is
    written. Returns the plaintext and file hashers."""
    recipients = keys.age_recipients() if keys.encrypting else []
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None
        plain = _Hashing(proc.stdout)
        try:
            with _watchdog(proc, timeout_s) as fired, open(target, "xb") as raw:
                out = _Hashing(raw)
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
        raise _fail("pg_dump failed", stderr or "it wrote no archive")
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


def with_application_name(dsn: str, application_name: str | None) -> str:
    """The DSN with the application_name a child's session shows in pg_stat_activity (the gate tags the sessions
    of its pg_dump and psql so that a resumed run can find and end what a killed one left behind)."""
    return psycopg.conninfo.make_conninfo(dsn, application_name=application_name) if application_name else dsn


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
    try:  # autocommit: the BEGIN below must open the snapshot's transaction, not land inside an implicit one
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
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        counters = _counters(conn)  # at the snapshot: no write can slip between these and the dump unseen
        if in_snapshot is not None:
            in_snapshot(snapshot)
        sizes = table_bytes(conn)
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
                    reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    reader.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
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
        conn.execute("COMMIT")
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
        jobs=jobs, table_bytes={k: v for k, v in sizes.items() if k in checksums})
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


def astuple(checksum) -> tuple[int, str]:
    return checksum.rows, checksum.digest


def is_encrypted(path: Path) -> bool:
    """An age file (by its header), whatever the record says."""
    with open(path, "rb") as handle:
        return handle.read(len(AGE_MAGIC)) == AGE_MAGIC


def is_plaintext_dump(path: Path) -> bool:
    """A pg_dump custom-format archive in clear (PHI readable by anyone who can read the file)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(DUMP_MAGIC)) == DUMP_MAGIC
    except OSError:
        return False


def stream_plaintext(path: Path, keys: BackupKeys, sink: IO[bytes] | None) -> _Hashing:
    """The dump's plaintext streamed into `sink` (None: only hashed), decrypting an age file on the way. The
    returned hasher holds the plaintext's sha256 and size. Raises BackupError on a wrong key or a corrupt file;
    a sink that closes early (pg_restore stopped) raises BrokenPipeError for the caller to judge."""
    return _read_once(path, keys, sink)[1]


def _pipe_into(path: Path, keys: BackupKeys, command: list[str], env: dict[str, str] | None, timeout_s: float,
               stdout: int | IO[bytes] = subprocess.DEVNULL) -> tuple[int, str]:
    """Stream the plaintext into a child's stdin (pg_restore), never through a file; its exit code and stderr."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=stdout, stderr=err, env=env)
        assert proc.stdin is not None
        feed_error: BackupError | None = None
        with _watchdog(proc, timeout_s) as fired:
            try:
                stream_plaintext(path, keys, proc.stdin)
            except BrokenPipeError:
                pass  # the child stopped reading: its exit code and stderr say why (or --list read enough)
            except BackupError as exc:
                feed_error = exc
                proc.kill()
            finally:
                with contextlib.suppress(BrokenPipeError, OSError):
                    proc.stdin.close()
            proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if feed_error is not None:
        raise feed_error
    if fired.is_set():
        raise BackupError(f"{command[0].rsplit('/', 1)[-1]} did not finish within {timeout_s:g} s")
    return proc.returncode, stderr


def list_contents(path: Path, binaries: PgBinaries | None = None, keys: BackupKeys | None = None) -> list[str]:
    """pg_restore --list of the (decrypted) dump: its table of contents (raises when pg_restore cannot read it)."""
    binaries = binaries or find_binaries()
    keys = keys if keys is not None else BackupKeys.from_environment()
    with tempfile.TemporaryFile() as out:
        code, stderr = _pipe_into(Path(path), keys, [binaries.tool("pg_restore"), "--list"], None, TOOL_TIMEOUT_S * 5,
                                  stdout=out)
        out.seek(0)
        listing = out.read().decode("utf-8", "replace")
    if code != 0:
        raise _fail(f"pg_restore cannot read {path}", stderr)
    return [line for line in listing.splitlines() if line and not line.startswith(";")]


def verify_plaintext(path: Path, record: BackupRecord, keys: BackupKeys) -> None:
    """Decrypt the file in a stream (nothing written) and compare with the plaintext sha256 taken at dump time."""
    found = stream_plaintext(path, keys, None)
    if record.plaintext_sha256 and found.hexdigest() != record.plaintext_sha256:
        raise BackupError(f"{Path(path).name} decrypts to another dump than the one recorded (plaintext sha256)")


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
            code, stderr = _pipe_into(Path(path), keys, command, env, timeout_s)
    except BackupError:
        drop_database(server_dsn, dbname)
        raise
    if code != 0:
        drop_database(server_dsn, dbname)
        raise _fail("pg_restore failed", stderr)
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
    code, stderr = _pipe_into(path, keys, [*command, "--section=pre-data"], env, timeout_s)
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
                results[i] = _pipe_into(path, keys, [*command, "--section=data", f"--use-list={listing}"], env,
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
    return _pipe_into(path, keys, [*command, "--section=post-data"], env, timeout_s)


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


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def recorded_as_taken(dump: Path, record: BackupRecord, expected: Mapping[str, Any] | None) -> None:
    """The authenticated record names the digests the run recorded in state.json at backup time (`expected`:
    the state's backup summary; the off-box copy was fetched back and verified against the same sha256). No
    file is read: the file itself is hashed where it is read (verify_unchanged, restore_in_place)."""
    if not expected:
        return
    for what in ("sha256", "plaintext_sha256"):
        want = str(expected.get(what) or "")
        if want and getattr(record, what) != want:
            raise BackupError(f"backup {Path(dump).name}: its record's {what} {getattr(record, what)[:12]} is not "
                              f"the {want[:12]} state.json recorded at backup time: refusing to restore it")


def _digest_mismatch(dump: Path, what: str, found: str, want: str, expected: Mapping[str, Any] | None) -> str:
    where = "state.json recorded at backup time" if expected and expected.get(what) else "the record says"
    return (f"backup {Path(dump).name}: {what} {found[:12]} as read, {where} {want[:12]}: refusing to restore it "
            "(nothing was restored)")


def verify_unchanged(dump: Path, keys: BackupKeys | None = None, expected: Mapping[str, Any] | None = None
                     ) -> BackupRecord:
    """The authenticated record of a dump whose sha256 still matches it and, given the run's state.json backup
    summary (`expected`), what was recorded at backup time; refuses (BackupError) otherwise."""
    record = BackupRecord.load(dump, keys.record_key if keys is not None else "environment")
    recorded_as_taken(dump, record, expected)
    if not dump.is_file():
        raise BackupError(f"backup {dump} does not exist")
    found = sha256_file(dump)
    if found != record.sha256:
        raise BackupError(_digest_mismatch(dump, "sha256", found, record.sha256, expected))
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


class _ListThenRestore(io.RawIOBase):
    """The one decrypted stream of a restore: first into `pg_restore --list` (the archive's table of contents is
    at its head), the bytes kept in memory only until that has read them; a dump with large objects is refused
    there; then the kept bytes and the rest into `pg_restore -f -`, whose script goes into psql's stdin."""

    def __init__(self, binaries: PgBinaries, script: IO[bytes], name: str) -> None:
        super().__init__()
        self.binaries, self.script, self.name = binaries, script, name
        self.listing = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.kept: list[bytes] = []
        self.lister: subprocess.Popen | None = subprocess.Popen(
            [binaries.tool("pg_restore"), "--list"], stdin=subprocess.PIPE, stdout=self.listing,
            stderr=self.errors)
        self.restorer: subprocess.Popen | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        if self.restorer is not None:
            assert self.restorer.stdin is not None
            self.restorer.stdin.write(chunk)
            return len(chunk)
        assert self.lister is not None and self.lister.stdin is not None
        self.kept.append(chunk)
        try:
            self.lister.stdin.write(chunk)
        except BrokenPipeError:  # it has read the table of contents and ended
            self._start_restore()
        return len(chunk)

    def _start_restore(self) -> None:
        assert self.lister is not None and self.lister.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.lister.stdin.close()
        code = self.lister.wait(timeout=TOOL_TIMEOUT_S)
        self.lister = None
        self.listing.seek(0)
        entries = self.listing.read().decode("utf-8", "replace").splitlines()
        self.errors.seek(0)
        if code != 0:
            raise _fail(f"pg_restore cannot read {self.name}", self.errors.read().decode("utf-8", "replace"))
        if any(" BLOB " in entry or "LARGE OBJECT" in entry for entry in entries if not entry.startswith(";")):
            raise BackupError(f"{self.name} holds large objects: restore it with pg_restore by hand (not atomic)")
        self.errors.seek(0)
        self.errors.truncate()
        self.restorer = subprocess.Popen([self.binaries.tool("pg_restore"), "-f", "-"], stdin=subprocess.PIPE,
                                         stdout=self.script, stderr=self.errors)
        assert self.restorer.stdin is not None
        for chunk in self.kept:
            self.restorer.stdin.write(chunk)
        self.kept = []

    def finish(self) -> tuple[int, str]:
        """The end of the stream: pg_restore's exit code and stderr."""
        if self.lister is not None:
            self._start_restore()
        assert self.restorer is not None and self.restorer.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.restorer.stdin.close()
        code = self.restorer.wait()
        self.errors.seek(0)
        return code, self.errors.read().decode("utf-8", "replace")

    def stop(self) -> None:
        """After a failure: both children ended, nothing more goes to psql."""
        for proc in (self.lister, self.restorer):
            if proc is not None:
                with contextlib.suppress(OSError):
                    proc.kill()
                proc.wait()
        self.lister = self.restorer = None
        self.listing.close()
        self.errors.close()


def _read_once(path: Path, keys: BackupKeys, sink: IO[bytes]) -> tuple[_Hashing, _Hashing]:
    """The file read once: its bytes hashed as read, decrypted (an age file) into `sink` with the plaintext hashed
    on the way; returns the file's and the plaintext's hashers."""
    try:
        with open(path, "rb") as source:
            raw = _Hashing(source)
            reader = io.BufferedReader(raw, CHUNK)
            plain = _Hashing(sink)
            if reader.peek(len(AGE_MAGIC))[:len(AGE_MAGIC)] == AGE_MAGIC:
                identities = keys.age_identities(Path(path).name)
                try:
                    pyrage.decrypt_io(reader, plain, identities)
                except pyrage.DecryptError:
                    raise BackupError(f"{Path(path).name} cannot be decrypted with the identity in {IDENTITY_ENV} "
                                      "(it is encrypted to other recipients)") from None
            else:
                shutil.copyfileobj(reader, plain, CHUNK)
            while reader.read(CHUNK):  # what follows the age stream, if anything: the file's digest covers it all
                pass
    except BrokenPipeError:
        raise
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise BackupError(f"backup {path} does not exist") from None
        raise BackupError(f"{Path(path).name} is corrupt or truncated (age decryption failed)") from None
    return raw, plain


def restore_in_place(dump: Path, dsn: str, binaries: PgBinaries | None = None, lock_timeout_s: int = 60,
                     keys: BackupKeys | None = None, timeout_s: float = 3600.0,
                     application_name: str | None = None, expected: Mapping[str, Any] | None = None) -> None:
    """Put the target database back to the dump, atomically, with owners and grants as dumped, and only if the
    bytes restored are the backup that was taken.

    Before anything: the record is authenticated (its MAC under the PHI key's record_key) and names the digests
    `expected` (the run's state.json backup summary) recorded at backup time. Then one psql transaction: empty
    the public schema, then pg_restore's script streamed in with ON_ERROR_STOP. The file is read once: its bytes
    hashed as read, decrypted, the plaintext hashed as it goes into pg_restore's stdin (first through
    `pg_restore --list`, which refuses a dump with large objects: their data comes with transaction control of
    its own, which would break the all-or-nothing). COMMIT is written only after pg_restore exited 0 AND both
    digests of the stream just restored equal the recorded ones; otherwise psql's stdin is closed without it
    and the server rolls the whole transaction back: a swapped or altered file never commits.

    Why a killed caller (SIGKILL) cannot leave the database half restored: the only COMMIT psql ever reads is
    the one written below, by this process, after those checks; pg_restore's own script has no transaction
    control (no large objects). With the caller dead, pg_restore reads the end of its input, fails on the
    truncated archive and exits; psql then reads the end of its input and exits with the transaction open, so
    the server rolls it back (a statement cut short at the end is at worst an error, never a COMMIT). Until then
    the orphaned psql holds its locks; the resumed run ends its session by its application_name. The plaintext
    only ever goes through pipes and, for the table of contents at the archive's head, memory; never a file."""
    binaries = binaries or find_binaries()
    keys = keys if keys is not None else BackupKeys.from_environment()
    dump = Path(dump)
    record = BackupRecord.load(dump, keys.record_key)
    recorded_as_taken(dump, record, expected)
    if not record.plaintext_sha256:
        raise BackupError(f"the record of backup {dump.name} has no plaintext sha256: the restore cannot be checked")
    if not dump.is_file():
        raise BackupError(f"backup {dump} does not exist")
    plain_dsn, env = split_password(with_application_name(dsn, application_name))
    code, script_text, mismatch = 0, "", ""
    raw: _Hashing | None = None
    plain: _Hashing | None = None
    with tempfile.TemporaryFile() as psql_err:
        psql = subprocess.Popen([binaries.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", plain_dsn,
                                 "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_err,
                                env=env)
        assert psql.stdin is not None
        try:
            with _watchdog(psql, timeout_s):
                psql.stdin.write(f"BEGIN;\nSET LOCAL client_min_messages = warning;\nSET LOCAL lock_timeout = "
                                 f"'{int(lock_timeout_s)}s';\n{_EMPTY_PUBLIC}\n".encode())
                psql.stdin.flush()  # before pg_restore writes to the same pipe
                feed = _ListThenRestore(binaries, psql.stdin, dump.name)
                try:
                    with contextlib.suppress(BrokenPipeError):  # pg_restore stopped: its exit code says why
                        raw, plain = _read_once(dump, keys, feed)
                        for what, found, want in (("sha256", raw.hexdigest(), record.sha256),
                                                  ("plaintext_sha256", plain.hexdigest(), record.plaintext_sha256)):
                            if found != want and not mismatch:
                                mismatch = _digest_mismatch(dump, what, found, want, expected)
                    code, script_text = feed.finish()
                finally:
                    feed.stop()
                with contextlib.suppress(BrokenPipeError):  # psql stopped at an error; its stderr says which
                    if code == 0 and not mismatch and raw is not None and plain is not None:
                        psql.stdin.write(b"COMMIT;\n")
                    psql.stdin.close()
                psql.wait()
        finally:
            if psql.poll() is None:  # a decryption error: psql never gets COMMIT, the transaction is dropped
                with contextlib.suppress(BrokenPipeError, OSError):
                    psql.stdin.close()
                psql.wait()
        psql_err.seek(0)
        psql_text = psql_err.read().decode("utf-8", "replace")
    if mismatch:
        raise BackupError(mismatch)
    if psql.returncode != 0:  # psql's refusal first: pg_restore's broken stream into it is only its echo
        raise _fail("restoring the backup failed (nothing was changed)", psql_text)
    if code != 0:
        raise _fail("pg_restore could not stream the backup (nothing was changed)", script_text + psql_text)


# -- off the box: the store_backup and fetch_backup hooks ------------------------------------------------------

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


# -- writes since the snapshot ---------------------------------------------------------------------------------

def changes_since(dsn: str, record: BackupRecord, method: str = "digest") -> list[str]:
    """Tables whose content is no longer what the backup holds, one line each (names and counts, no values).

    "digest": every table's content checksum again, compared with the one taken in the dump's snapshot (exact:
    any insert, update or delete shows). "counters": pg_stat_user_tables' insert/update/delete counters against
    those read in the snapshot (one catalog query; a write shows once its session flushed its statistics, up to
    a second later; an aborted write counts too). Tables created or dropped since show either way."""
    with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        found = catalog.inspect(conn).tables
        lines = [f"{name}: created since the backup" for name in sorted(set(found) - set(record.checksums))]
        lines += [f"{name}: dropped since the backup" for name in sorted(set(record.checksums) - set(found))]
        if method == "counters" and record.counters:
            now = _counters(conn)
            for name in sorted(set(record.counters) & set(now)):
                ins, upd, dele = (b - a for a, b in zip(record.counters[name], now[name], strict=True))
                if ins or upd or dele:
                    lines.append(f"{name}: {ins} inserted, {upd} updated, {dele} deleted since the backup")
            return lines
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for name in sorted(set(record.checksums) & set(found)):
                rows, digest = record.checksums[name]
                now = table_checksum(conn, found[name].name, schema=found[name].schema)
                if (now.rows, now.digest) != (rows, digest):
                    lines.append(f"{name}: {rows} rows at the backup, {now.rows} now, content differs")
    return lines


# -- what the pre-flight asks before maintenance goes on ------------------------------------------------------

def backup_inputs(gate: Any, env: Mapping[str, str] | None = None, hooks: object | None = None) -> list[str]:
    """Problems with the backup's inputs, one line each, before anything changes: recipients valid, the identity
    present and matching a recipient (a restore must be able to open what the backup writes), pg_restore fixed
    for CVE-2025-8714, the store_backup and fetch_backup hooks configured (shell hooks: not placeholders)."""
    settings: BackupConfig = gate.backup
    problems = []
    try:
        keys = BackupKeys.from_environment(settings, env)
    except BackupError as exc:
        return [f"backup: {exc}"]
    if keys.encrypting:
        try:
            keys.age_recipients()
            identities = keys.age_identities("the backup")
            publics = {str(i.to_public()) for i in identities}
            if not publics & set(keys.recipients):
                problems.append(f"backup: no identity in {IDENTITY_ENV} matches a recipient: a restore could not "
                                "open the backup")
        except BackupError as exc:
            problems.append(f"backup: {exc}")
    try:  # the rollback's restore runs this pg_restore: one with CVE-2025-8714 is refused before anything changes
        fixed = pg_restore_problem(tool_version(find_binaries(), "pg_restore"))
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        fixed = f"pg_restore --version could not be run: {exc.__class__.__name__}"
    if fixed:
        problems.append(f"backup: {fixed}")
    commands = getattr(hooks, "commands", None)
    if hooks is None or isinstance(commands, dict):
        commands = commands if isinstance(commands, dict) else gate.hooks
        problems += command_problems(commands, ("store_backup", "fetch_backup"), "your store's")
    elif not (hasattr(hooks, "store_backup") and hasattr(hooks, "fetch_backup")):
        problems.append("hooks: no store_backup and fetch_backup (the backup cannot be kept off the box)")
    return problems
