"""Crashes anywhere (issue 10, item 6): the gate process killed with SIGKILL during the backup (pg_dump streaming
into the encrypted file), during the restore of a rollback, and during the rollback checks. Right after the kill
the database is untouched, or fully migrated, or fully restored - never half-way - and no plaintext or partial
dump is left; the next invocation of the same command says whether it resumes or rolls back, and ends right.

Each moment is found from what the step itself shows, not from a sleep that guesses: pg_dump waiting on a table
lock the test holds, the restore's psql transaction waiting on a lock the test holds (after it dropped what it
could), the rollback suite's first finished check in its progress file. The killed migration is covered in
tests/test_gate.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup, catalog
from migration_gate.checksums import database_checksums
from migration_gate.config import load_config
from migration_gate.progress import Progress
from migration_gate.runstate import schema_state
from sandbox.synthetic import SANDBOX_KEY
from sandbox.target import Sandbox
from tests.conftest import ROOT
from tests.test_cli import config_with_store

PATIENTS = 150
WAIT_S = 120.0


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(workdir=tmp_path / "sandbox", patients=PATIENTS, progress=Progress(quiet=True)).start()
    yield box
    box.stop()


def _snapshot(dsn: str, audit: bool = True) -> tuple:
    """Content and schema of every legacy table (the audit table left out when the checks' reads added rows)."""
    tables = [t for t in load_config().legacy_schema if audit or t != "audit_logs_hipaa"]
    with psycopg.connect(dsn) as conn:
        return database_checksums(conn, tables), catalog.inspect(conn).only(tables)


def _where(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return schema_state(conn, load_config())


def _config(box: Sandbox, tmp_path: Path) -> Path:
    """migration.toml with the store hooks of tests/test_cli.py, and shell hooks for the sandbox's app: its
    maintenance flag file, and deploys that keep it on the legacy schema (these runs never deploy the new one)."""
    config = config_with_store(tmp_path)
    flag = box.api.maintenance_file
    hooks = {"maintenance_on": f"touch {flag}", "maintenance_off": f"rm -f {flag}", "deploy_new_schema": "false",
             "deploy_legacy_schema": "true"}
    text = config.read_text()
    for name, command in hooks.items():
        text = re.sub(rf"^{name} = .*$", f"{name} = '{command}'", text, flags=re.M)
    config.write_text(text)
    return config


def _cli(box: Sandbox, config: Path, reports: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=box.dsn, PHI_ENCRYPTION_KEY=SANDBOX_KEY, API_BASE_URL=box.api.base_url,
               GATE_API_USERNAME="demo_therapist1", GATE_API_PASSWORD="demo-password-1",
               GATE_REPORTS_DIR=str(reports), GATE_API_HEADERS=json.dumps(box.api.bypass_headers),
               GATE_CONFIG=str(config))
    return subprocess.Popen([sys.executable, "-m", "migration_gate.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done(child: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, (child.returncode, out[-2000:], err[-2000:])
    return out, err


def _until(what: str, seen: Callable[[], bool], child: subprocess.Popen) -> float:
    """Wait until `seen()` (the step's own sign), failing if the child ends first; seconds waited."""
    began = time.monotonic()
    while not seen():
        if child.poll() is not None:
            pytest.fail(f"the command ended before {what}: {child.communicate()}")
        if time.monotonic() - began > WAIT_S:
            pytest.fail(f"no sign of {what} within {WAIT_S:g} s")
        time.sleep(0.05)
    return time.monotonic() - began


def _sessions(watch: psycopg.Connection, where: str) -> int:
    return watch.execute(f"SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND {where}"
                         ).fetchone()[0]


def _kill(child: subprocess.Popen) -> None:
    """kill -9 of the gate process alone: its children (pg_dump, pg_restore, psql, a suite) are orphaned."""
    child.send_signal(signal.SIGKILL)
    child.wait()


def _run_dir(reports: Path) -> Path:
    runs = sorted(reports.glob("cutover-*"))
    assert len(runs) == 1, runs
    return runs[0]


def _no_partial_or_plaintext(run_dir: Path) -> None:
    """No partial file anywhere in the run; every dump left is an age file, complete, with its record."""
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.endswith((".partial", ".fetched", ".tmp"))]
    assert not leftovers, leftovers
    for dump in run_dir.rglob("*.dump*"):
        if dump.name.endswith((backup.RECORD_SUFFIX, backup.CATALOG_SUFFIX)):
            continue
        assert not backup.is_plaintext_dump(dump), dump
        assert backup.is_encrypted(dump) and backup.verify_unchanged(dump), dump  # complete, with its record


def _no_orphans(dsn: str, run_dir: Path) -> None:
    """None of the killed run's children still holds a session on the target."""
    with psycopg.connect(dsn, autocommit=True) as watch:
        assert _sessions(watch, f"application_name LIKE 'migration-gate {run_dir.name}%'") == 0


def test_a_backup_killed_while_pg_dump_streams_is_taken_again_by_the_next_backup(sandbox: Sandbox,
                                                                                  tmp_path: Path) -> None:
    config, reports = _config(sandbox, tmp_path), tmp_path / "reports"
    before = _snapshot(sandbox.dsn)
    with psycopg.connect(sandbox.dsn) as holder:
        # pg_dump has exported... imported the gate's snapshot, opened the encrypted file and waits for its table
        # locks: the lock the test holds stalls it there (changing nothing; rolled back below)
        holder.execute("LOCK TABLE clients_hipaa IN ACCESS EXCLUSIVE MODE")
        child = _cli(sandbox, config, reports, "backup")
        with psycopg.connect(sandbox.dsn, autocommit=True) as watch:
            waited = _until("pg_dump waiting inside the dump", lambda: _sessions(
                watch, "query LIKE 'LOCK TABLE%' AND wait_event_type = 'Lock'") > 0, child)
            run_dir = _run_dir(reports)
            partial = list((run_dir / "backup").glob("*.partial"))
            assert len(partial) == 1 and not backup.is_plaintext_dump(partial[0])
            _kill(child)
        holder.rollback()
    print(f"backup killed {waited:.1f} s after the command started")
    assert _snapshot(sandbox.dsn) == before and _where(sandbox.dsn) == "legacy"
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "running" and state["backup"] is None
    for dump in (run_dir / "backup").iterdir():  # only the encrypted partial file: no plaintext on the disk
        assert not backup.is_plaintext_dump(dump), dump.name

    again = _cli(sandbox, config, reports, "backup")
    out, err = _done(again)
    assert f"resuming the interrupted run {run_dir.name} at phase backup" in err, err
    assert _run_dir(reports) == run_dir
    state = json.loads((run_dir / "state.json").read_text())
    taken = Path(state["backup"]["path"])
    assert state["phases"][2]["status"] == "passed" and state["backup"]["remote_verified"]
    assert backup.verify_unchanged(taken).sha256 == state["backup"]["sha256"]
    _no_partial_or_plaintext(run_dir)
    _no_orphans(sandbox.dsn, run_dir)
    assert _snapshot(sandbox.dsn) == before
