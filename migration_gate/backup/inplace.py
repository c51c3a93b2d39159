"""The rollback's restore: the target database put back to the dump in one psql transaction that commits only
when pg_restore succeeded and the bytes restored are the backup that was taken (restore_in_place).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.reading import digest_mismatch, read_once, recorded_as_taken
from migration_gate.backup.record import BackupError, BackupRecord, Hashing
from migration_gate.backup.tools import TOOL_TIMEOUT_S, split_password, tool_error, watchdog, with_application_name
from migration_gate.db.binaries import PgBinaries, find_binaries

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
            raise tool_error(f"pg_restore cannot read {self.name}", self.errors.read().decode("utf-8", "replace"))
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
    raw: Hashing | None = None
    plain: Hashing | None = None
    with tempfile.TemporaryFile() as psql_err:
        psql = subprocess.Popen([binaries.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", plain_dsn,
                                 "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_err,
                                env=env)
        assert psql.stdin is not None
        try:
            with watchdog(psql, timeout_s):
                psql.stdin.write(f"BEGIN;\nSET LOCAL client_min_messages = warning;\nSET LOCAL lock_timeout = "
                                 f"'{int(lock_timeout_s)}s';\n{_EMPTY_PUBLIC}\n".encode())
                psql.stdin.flush()  # before pg_restore writes to the same pipe
                feed = _ListThenRestore(binaries, psql.stdin, dump.name)
                try:
                    with contextlib.suppress(BrokenPipeError):  # pg_restore stopped: its exit code says why
                        raw, plain = read_once(dump, keys, feed)
                        for what, found, want in (("sha256", raw.hexdigest(), record.sha256),
                                                  ("plaintext_sha256", plain.hexdigest(), record.plaintext_sha256)):
                            if found != want and not mismatch:
                                mismatch = digest_mismatch(dump, what, found, want, expected)
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
        raise tool_error("restoring the backup failed (nothing was changed)", psql_text)
    if code != 0:
        raise tool_error("pg_restore could not stream the backup (nothing was changed)", script_text + psql_text)
