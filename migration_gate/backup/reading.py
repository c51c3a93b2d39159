"""Reading a backup back: the file read once, its bytes hashed as read, decrypted with the identity from the
environment (GATE_BACKUP_IDENTITY), the plaintext hashed on its way into a pipe (pg_restore's stdin), never
into a file; and the checks that the file is still the one recorded at backup time.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import pyrage

from migration_gate.backup.keys import IDENTITY_ENV, BackupKeys
from migration_gate.backup.record import AGE_MAGIC, CHUNK, DUMP_MAGIC, BackupError, BackupRecord, Hashing, sha256_file
from migration_gate.backup.tools import TOOL_TIMEOUT_S, tool_error, watchdog
from migration_gate.db.binaries import PgBinaries, find_binaries


def stream_plaintext(path: Path, keys: BackupKeys, sink: IO[bytes] | None) -> Hashing:
    """The dump's plaintext streamed into `sink` (None: only hashed), decrypting an age file on the way. The
    returned hasher holds the plaintext's sha256 and size. Raises BackupError on a wrong key or a corrupt file;
    a sink that closes early (pg_restore stopped) raises BrokenPipeError for the caller to judge."""
    return read_once(path, keys, sink)[1]


def pipe_into(path: Path, keys: BackupKeys, command: list[str], env: dict[str, str] | None, timeout_s: float,
               stdout: int | IO[bytes] = subprocess.DEVNULL) -> tuple[int, str]:
    """Stream the plaintext into a child's stdin (pg_restore), never through a file; its exit code and stderr."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=stdout, stderr=err, env=env)
        assert proc.stdin is not None
        feed_error: BackupError | None = None
        with watchdog(proc, timeout_s) as fired:
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
        code, stderr = pipe_into(Path(path), keys, [binaries.tool("pg_restore"), "--list"], None, TOOL_TIMEOUT_S * 5,
                                  stdout=out)
        out.seek(0)
        listing = out.read().decode("utf-8", "replace")
    if code != 0:
        raise tool_error(f"pg_restore cannot read {path}", stderr)
    return [line for line in listing.splitlines() if line and not line.startswith(";")]


def verify_plaintext(path: Path, record: BackupRecord, keys: BackupKeys) -> None:
    """Decrypt the file in a stream (nothing written) and compare with the plaintext sha256 taken at dump time."""
    found = stream_plaintext(path, keys, None)
    if record.plaintext_sha256 and found.hexdigest() != record.plaintext_sha256:
        raise BackupError(f"{Path(path).name} decrypts to another dump than the one recorded (plaintext sha256)")


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


def digest_mismatch(dump: Path, what: str, found: str, want: str, expected: Mapping[str, Any] | None) -> str:
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
        raise BackupError(digest_mismatch(dump, "sha256", found, record.sha256, expected))
    return record


def read_once(path: Path, keys: BackupKeys, sink: IO[bytes]) -> tuple[Hashing, Hashing]:
    """The file read once: its bytes hashed as read, decrypted (an age file) into `sink` with the plaintext hashed
    on the way; returns the file's and the plaintext's hashers."""
    try:
        with open(path, "rb") as source:
            raw = Hashing(source)
            reader = io.BufferedReader(raw, CHUNK)
            plain = Hashing(sink)
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
