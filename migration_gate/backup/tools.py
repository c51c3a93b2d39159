"""The PostgreSQL client tools a backup runs (pg_dump, pg_restore, psql): their versions, pg_restore's
CVE-2025-8714 check, the watchdog that ends one run past its timeout, the one line a failed one leaves, and the
DSN and environment it is started with (password in the environment, application_name tagged).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg

from migration_gate.backup.record import BackupError
from migration_gate.core.redact import redact_text
from migration_gate.db import connection as db
from migration_gate.db.binaries import PgBinaries

TOOL_TIMEOUT_S = 60.0  # pg_dump/pg_restore --version and --list
# CVE-2025-8714 (a dump's content could run psql meta-commands in the restoring session): fixed in these minors
PG_RESTORE_FIXED = {17: 6, 16: 10, 15: 14, 14: 19, 13: 22}
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


def tool_error(message: str, stderr: str) -> BackupError:
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    if "No space left on device" in stderr:
        return BackupError(f"{message}: the disk is full")
    locked = _LOCK_GAVE_UP.search(stderr)
    if locked:
        return BackupError(f"{message}: lock timeout: gave up waiting for a lock on {locked.group(1)} that another "
                           "session holds (--lock-wait-timeout)")
    return BackupError(redact_text(f"{message}: {last}" if last else message))


@contextlib.contextmanager
def watchdog(proc: subprocess.Popen, timeout_s: float) -> Iterator[threading.Event]:
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


def with_application_name(dsn: str, application_name: str | None) -> str:
    """The DSN with the application_name a child's session shows in pg_stat_activity (the gate tags the sessions
    of its pg_dump and psql so that a resumed run can find and end what a killed one left behind)."""
    return psycopg.conninfo.make_conninfo(dsn, application_name=application_name) if application_name else dsn


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free
