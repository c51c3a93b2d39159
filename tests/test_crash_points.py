"""Crashes anywhere (issue 10, item 6): the gate process killed with SIGKILL during the backup (pg_dump streaming
into the encrypted file), during the restore of a rollback, and during the rollback checks. Right after the kill
the database is untouched, or fully migrated, or fully restored - never half-way - and no plaintext or partial
dump is left; the next invocation of the same command says whether it resumes or rolls back, and ends right.

Each moment is found from what the step itself shows, not from a sleep that guesses: pg_dump waiting on a table
lock the test holds, the restore's psql transaction waiting on a lock the test holds (after it dropped what it
could), the rollback suite's session waiting on a table lock the test takes once the restore has committed. The
killed migration is covered in tests/test_gate.py."""

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

from migration_gate import backup
from migration_gate.config import load_config
from migration_gate.core.progress import Progress
from migration_gate.db import catalog
from migration_gate.db.checksums import database_checksums
from migration_gate.run.runstate import schema_state
from sandbox.synthetic import SANDBOX_KEY
from sandbox.target import Sandbox
from tests.conftest import ROOT, gate_keys
from tests.support.cutover import config_with_store

PATIENTS = 150
WAIT_S = 120.0


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(workdir=tmp_path / "sandbox", patients=PATIENTS, progress=Progress(quiet=True)).start()
    yield box
    box.stop()


def _snapshot(dsn: str, audit: bool = True, side: str = "legacy") -> tuple:
    """Content and schema of every table of one side (legacy or new), as tests/test_gate.py's (the audit table
    left out when the checks' own API reads added rows)."""
    gate = load_config()
    tables = [t for t in (gate.legacy_schema if side == "legacy" else gate.new_schema)
              if audit or t != "audit_logs_hipaa"]
    with psycopg.connect(dsn) as conn:
        return database_checksums(conn, tables), catalog.inspect(conn).only(tables)


def _where(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return schema_state(conn, load_config())


def _committed_side(dsn: str) -> str:
    """runstate.schema_state's answer from pg_class alone: the committed catalog, read without a lock (a
    transaction in flight holding its tables' locks, as the restore's does, makes no difference to it)."""
    gate = load_config()
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = {name for (name,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind IN ('r', 'p')",
            (gate.schema,))}
    legacy, new = set(gate.legacy_schema), set(gate.new_schema)
    legacy_only, new_only = legacy - new, new - legacy
    if legacy_only <= tables and not new_only & tables:
        return "legacy"
    return "migrated" if new_only <= tables and not legacy_only & tables else "mixed"


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
        # complete, with its authenticated record
        assert backup.is_encrypted(dump) and backup.verify_unchanged(dump, gate_keys()), dump


def _no_orphans(dsn: str, run_dir: Path) -> None:
    """None of the killed run's children still holds a session on the target."""
    with psycopg.connect(dsn, autocommit=True) as watch:
        assert _sessions(watch, f"application_name LIKE 'migration-gate {run_dir.name}%'") == 0


def test_a_backup_killed_while_pg_dump_streams_is_taken_again_by_the_next_backup(sandbox: Sandbox,
                                                                                  tmp_path: Path) -> None:
    config, reports = _config(sandbox, tmp_path), tmp_path / "reports"
    before = _snapshot(sandbox.dsn)
    with psycopg.connect(sandbox.dsn) as holder:
        # pg_dump runs in the gate's exported snapshot, its output going into the open encrypted .partial file,
        # and takes its table locks before it copies a row: the lock the test holds stalls it there (no change)
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
            # without its gate, the orphaned pg_dump dies at its first write into the pipe nobody reads
            began, tag = time.monotonic(), f"application_name = 'migration-gate {run_dir.name}'"
            while _sessions(watch, tag) and time.monotonic() - began < 30:
                time.sleep(0.05)
            assert _sessions(watch, tag) == 0
    print(f"backup killed {waited:.1f} s after the command started; the orphaned pg_dump ended "
          f"{time.monotonic() - began:.1f} s after the lock it waited for was let go")
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
    assert backup.verify_unchanged(taken, gate_keys(), state["backup"]).sha256 == state["backup"]["sha256"]
    _no_partial_or_plaintext(run_dir)
    _no_orphans(sandbox.dsn, run_dir)
    assert _snapshot(sandbox.dsn) == before


def _migrated_run(box: Sandbox, config: Path, reports: Path) -> tuple[Path, tuple]:
    """A run with a verified backup and a committed migration (scripts/backup, then scripts/migrate --force: the
    pre-checks and maintenance of a whole cut-over are not what these tests are about); the legacy content
    before it, without the audit table (the rollback checks' own API reads add rows there)."""
    before = _snapshot(box.dsn, audit=False)
    _done(_cli(box, config, reports, "backup", "--quiet"))
    _done(_cli(box, config, reports, "migrate", "--force", "--quiet"))
    assert _where(box.dsn) == "migrated"
    return _run_dir(reports), before


def _rolled_back(box: Sandbox, run_dir: Path, before: tuple, again: subprocess.Popen) -> str:
    """The next `rollback --run-dir` ends green: legacy, every table as before the cut-over, verified; its stderr."""
    out, err = _done(again)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "rolled-back" and state["rollback_verified"] is True, state["failure"]
    assert [p["status"] for p in state["rollback_phases"]] == ["passed"] * 3
    assert state["rollback_phases"][0]["detail"].startswith("restored "), state["rollback_phases"][0]
    assert _where(box.dsn) == "legacy" and _snapshot(box.dsn, audit=False) == before
    assert not box.api.maintenance_file.exists()  # the app is back
    _no_partial_or_plaintext(run_dir)
    _no_orphans(box.dsn, run_dir)
    return err


@pytest.mark.parametrize("orphans", ["end-by-themselves", "ended-by-the-next-rollback"])
def test_a_rollback_killed_during_its_restore_leaves_the_database_migrated_and_the_next_rollback_restores(
        sandbox: Sandbox, tmp_path: Path, orphans: str) -> None:
    config, reports = _config(sandbox, tmp_path), tmp_path / "reports"
    run_dir, before = _migrated_run(sandbox, config, reports)
    migrated = _snapshot(sandbox.dsn, side="new")
    tag = f"application_name = 'migration-gate {run_dir.name}'"
    with psycopg.connect(sandbox.dsn) as holder, psycopg.connect(sandbox.dsn, autocommit=True) as watch:
        # a reader of a migrated table: the restore's transaction waits for it once it dropped what came before
        holder.execute("SELECT 1 FROM patients LIMIT 0")
        child = _cli(sandbox, config, reports, "rollback", "--run-dir", str(run_dir))
        waiting = f"{tag} AND state = 'active' AND wait_event_type = 'Lock'"
        waited = _until("the restore's psql transaction waiting half-way", lambda: _sessions(watch, waiting) > 0,
                        child)
        orphan, dropped = watch.execute(  # inside its transaction the restore already dropped objects (a schema)
            "SELECT a.pid, count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.mode = "
            f"'AccessExclusiveLock' AND l.granted AND a.{waiting} GROUP BY a.pid").fetchone()
        assert dropped > 0
        _kill(child)
        # right after the kill, the orphaned psql still inside its transaction (its drops not committed, so not seen;
        # its locks keep the tables' content unreadable until it ends): fully migrated
        assert _committed_side(sandbox.dsn) == "migrated"
        began = time.monotonic()
        if orphans == "end-by-themselves":
            holder.rollback()
            # without their gate, pg_restore reads the end of its input and fails, psql reads the end of its input
            # and exits without a COMMIT, and the server rolls the transaction back
            while _sessions(watch, tag) and time.monotonic() - began < 30:
                time.sleep(0.05)
            assert _sessions(watch, tag) == 0
            print(f"restore killed {waited:.1f} s after the rollback started, holding {dropped} exclusive locks; its "
                  f"orphans ended {time.monotonic() - began:.1f} s after the lock they waited for was let go")
            state = json.loads((run_dir / "state.json").read_text())
            assert [(p["name"], p["status"]) for p in state["rollback_phases"]][0] == ("restore", "running")
            assert _where(sandbox.dsn) == "migrated" and _snapshot(sandbox.dsn, side="new") == migrated
            again = _cli(sandbox, config, reports, "rollback", "--run-dir", str(run_dir))
        else:  # the orphaned psql still waits inside its transaction when the next rollback starts: it ends it
            again = _cli(sandbox, config, reports, "rollback", "--run-dir", str(run_dir))
            _until("the next rollback's own restore waiting, the orphan ended", lambda: _sessions(
                watch, f"{waiting} AND pid <> {orphan}") > 0 and not _sessions(watch, f"pid = {orphan}"), again)
            print(f"restore killed {waited:.1f} s after the rollback started, holding {dropped} exclusive locks; the "
                  f"next rollback ended the orphan within {time.monotonic() - began:.1f} s")
            assert _committed_side(sandbox.dsn) == "migrated"  # the orphan's transaction was rolled back
            holder.rollback()

    err = _rolled_back(sandbox, run_dir, before, again)
    assert (f"rolling run {run_dir.name} back again from the restore: its rollback was interrupted at step restore "
            "(database is migrated)") in err, err
    assert ("ended 1 session(s) the interrupted run's child processes left behind" in err) is (
        orphans == "ended-by-the-next-rollback"), err


def test_a_rollback_killed_during_its_checks_resumes_after_the_committed_restore(sandbox: Sandbox,
                                                                                 tmp_path: Path) -> None:
    config, reports = _config(sandbox, tmp_path), tmp_path / "reports"
    run_dir, before = _migrated_run(sandbox, config, reports)
    state_file = run_dir / "state.json"
    child = _cli(sandbox, config, reports, "rollback", "--run-dir", str(run_dir))
    _until("the committed restore", lambda: ("restore", "passed") in [
        (p["name"], p["status"]) for p in json.loads(state_file.read_text()).get("rollback_phases") or []], child)
    with psycopg.connect(sandbox.dsn) as holder:
        # a table lock taken once the restore has committed keeps the suite's data checks waiting, so the kill lands
        # while it checks (a suite this small could otherwise finish between its first result and the kill)
        holder.execute("LOCK TABLE sessions_hipaa IN ACCESS EXCLUSIVE MODE")
        with psycopg.connect(sandbox.dsn, autocommit=True) as watch:
            waited = _until("the rollback suite's checks waiting on the lock", lambda: _sessions(
                watch, f"application_name = 'migration-gate {run_dir.name} suite' AND wait_event_type = 'Lock'") > 0,
                child)
        _kill(child)
        holder.rollback()
    print(f"rollback checks killed {waited:.1f} s after the restore committed")
    assert _where(sandbox.dsn) == "legacy" and _snapshot(sandbox.dsn, audit=False) == before  # restore committed
    with psycopg.connect(sandbox.dsn, autocommit=True) as watch:  # the orphaned suite ends itself
        suite = f"application_name = 'migration-gate {run_dir.name} suite'"
        began = time.monotonic()
        while _sessions(watch, suite) and time.monotonic() - began < 10:
            time.sleep(0.1)
        assert _sessions(watch, suite) == 0
    assert not (run_dir / "rollback" / "criteria-rollback.json").exists()  # it never finished, so never judged
    state = json.loads((run_dir / "state.json").read_text())
    assert [(p["name"], p["status"]) for p in state["rollback_phases"]] == [
        ("restore", "passed"), ("redeploy-legacy", "passed"), ("rollback", "running")]

    err = _rolled_back(sandbox, run_dir, before, _cli(sandbox, config, reports, "rollback", "--run-dir", str(run_dir)))
    assert (f"resuming the interrupted rollback of run {run_dir.name} at step rollback: the restore had committed "
            "(database is legacy)") in err, err
    assert "phase restore: started" not in err  # the committed restore is not done twice
