"""The cut-over as code: the runbook's phases in order, each gated on a green run of its pytest suite, with an
automatic, verified rollback when anything after the migration starts goes red.

pre-checks -> maintenance on (verified) -> backup -> migration -> integrity -> deploy -> post-checks ->
go live (maintenance off, smoke test) -> sign-off.

Every transition is written to reports/<run>/state.json, so an interrupted run can be resumed (or rolled back)
by the next invocation. One cut-over per database at a time: a session-level advisory lock on the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
import psycopg
from psycopg import sql

from migration_gate import backup, migration
from migration_gate.catalog import inspect
from migration_gate.checks import api as app
from migration_gate.config import ROOT, GateConfig
from migration_gate.embedded import pid_alive
from migration_gate.progress import Progress
from migration_gate.redact import describe_target, redact_text

LOCK_KEY = 0x6D67_6174  # "mgat": the advisory lock one cut-over holds on its target
STATE_FILE = "state.json"
SUITES = {"premigration": "premigration", "backup": "backup", "integrity": "integrity",
          "postmigration": "postmigration", "rollback": "rollback"}
# Phase -> the checklist's timebox it counts against.
BUDGET_OF = {"premigration": "premigration", "maintenance": "backup", "backup": "backup", "migration": "migration",
             "integrity": "verification", "deploy": "deploy", "postmigration": "verification", "golive": "golive"}
PLAN = ("premigration", "maintenance", "backup", "migration", "integrity", "deploy", "postmigration", "golive")
AFTER_MIGRATION_STARTS = ("migration", "integrity", "deploy", "postmigration", "golive")


class GateError(RuntimeError):
    """A step could not run or refused to; one clear line."""


class Refused(GateError):
    """The gate will not proceed (lock held, earlier phases not green, backup changed...)."""


class Hooks(Protocol):
    """How the gate talks to the app's hosting: maintenance mode and deploys."""

    def maintenance(self, on: bool) -> None: ...
    def deploy(self, use_hipaa_schema: bool) -> None: ...


@dataclass
class ShellHooks:
    """Shell commands from migration.toml [hooks]; a team calls its host's API there."""

    commands: dict[str, str]
    timeout: float = 600

    def _run(self, name: str) -> None:
        command = self.commands.get(name)
        if not command:
            raise GateError(f"no [hooks] {name} command configured")
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=self.timeout)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise GateError(redact_text(f"hook {name} failed with exit code {done.returncode}: {last[0]}"))

    def maintenance(self, on: bool) -> None:
        self._run("maintenance_on" if on else "maintenance_off")

    def deploy(self, use_hipaa_schema: bool) -> None:
        self._run("deploy_new_schema" if use_hipaa_schema else "deploy_legacy_schema")


@dataclass
class CutoverTarget:
    dsn: str
    key: str
    api_base_url: str
    api_username: str
    api_password: str
    hooks: Hooks
    app_log_file: Path | None = None
    api_headers: dict[str, str] = field(default_factory=dict)  # e.g. a maintenance-bypass header for the checks
    allow_writes: bool = False  # the post-checks may create a probe patient (sandbox, staging)


@dataclass
class PhaseRecord:
    name: str
    status: str = "pending"  # pending, running, passed, failed, skipped
    started: str | None = None
    seconds: float | None = None
    budget_minutes: float | None = None
    over_budget: bool = False
    report: str | None = None
    detail: str | None = None


@dataclass
class RunState:
    run_dir: str
    target: str
    migration_file: str
    migration_sha256: str
    status: str = "running"  # running, green, rolled-back, rollback-failed, refused, interrupted
    pid: int = field(default_factory=os.getpid)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    finished: str | None = None
    forced: bool = False
    phases: list[PhaseRecord] = field(default_factory=list)
    rollback_phases: list[PhaseRecord] = field(default_factory=list)
    backup: dict | None = None
    maintenance_on_at: float | None = None
    maintenance_off_at: float | None = None
    downtime_minutes: float | None = None
    downtime_over_limit: bool = False
    failure: str | None = None
    rollback_verified: bool | None = None
    counts: list[dict] = field(default_factory=list)
    log_offset: int = 0

    def phase(self, name: str) -> PhaseRecord:
        for record in self.phases + self.rollback_phases:
            if record.name == name:
                return record
        raise KeyError(name)

    def save(self) -> None:
        path = Path(self.run_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        data = json.loads((run_dir / STATE_FILE).read_text())
        data["phases"] = [PhaseRecord(**p) for p in data["phases"]]
        data["rollback_phases"] = [PhaseRecord(**p) for p in data.get("rollback_phases", [])]
        return cls(**data)


_QUOTED = re.compile(r"(\"[^\"]*\"|'[^']*')")


def safe_message(exc: BaseException) -> str:
    """Type and first line of an error, secrets redacted and quoted parts masked (database errors quote the
    offending values, which may be PHI)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact_text(f"{exc.__class__.__name__}: {_QUOTED.sub(chr(39) + '…' + chr(39), first)}")


def budget_report(state: RunState) -> list[tuple[str, float, float | None, bool]]:
    """(timebox, minutes used, budget minutes, over) for each of the checklist's timeboxes, in order."""
    rows = []
    for name in dict.fromkeys(BUDGET_OF.values()):
        members = [p for p in state.phases if BUDGET_OF[p.name] == name]
        used = sum(p.seconds or 0 for p in members) / 60
        budget = members[0].budget_minutes if members else None
        rows.append((name, round(used, 3), budget, budget is not None and used > budget))
    return rows


def schema_state(conn: psycopg.Connection, gate: GateConfig) -> str:
    """'legacy', 'migrated' or 'mixed', from which tables exist (one transaction never leaves it mixed)."""
    tables = inspect(conn, [gate.schema]).names(gate.schema)
    new_only = set(gate.new_schema) - set(gate.legacy_schema)
    legacy_only = set(gate.legacy_schema) - set(gate.new_schema)
    if legacy_only <= tables and not (new_only & tables):
        return "legacy"
    if new_only <= tables and not (legacy_only & tables):
        return "migrated"
    return "mixed"


def unfinished_runs(reports: Path, target: str) -> list[Path]:
    """Run folders for this target whose state says running and whose process is gone."""
    found = []
    for state_file in sorted(reports.glob(f"*/{STATE_FILE}")):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            state = RunState.load(state_file.parent)
            if state.target == target and state.status in ("running", "interrupted") and not pid_alive(state.pid):
                found.append(state_file.parent)
    return found


class Gate:
    def __init__(self, gate: GateConfig, target: CutoverTarget, run_dir: Path, progress: Progress,
                 force: bool = False, state: RunState | None = None) -> None:
        self.gate = gate
        self.target = target
        self.run_dir = run_dir
        self.progress = progress
        self.force = force
        run_dir.mkdir(parents=True, exist_ok=True)
        self.state = state or RunState(
            run_dir=str(run_dir), target=describe_target(target.dsn), migration_file=str(gate.migration_file),
            migration_sha256=backup.sha256_file(gate.migration_file), forced=force,
            phases=[PhaseRecord(name, budget_minutes=gate.phase_minutes.get(BUDGET_OF[name])) for name in PLAN])
        self._lock: psycopg.Connection | None = None
        self.rollback_only = False  # set when an interrupted run may only be rolled back

    # -- locking -------------------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        conn = psycopg.connect(self.target.dsn, autocommit=True, connect_timeout=15, keepalives=1,
                               keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        try:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
                holder = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s "
                                      "AND granted", (LOCK_KEY & 0xFFFFFFFF,)).fetchone()
                raise Refused(f"another cut-over is running against {self.state.target} "
                              f"(backend pid {holder[0] if holder else '?'}): refusing to start a second one")
        except BaseException:
            conn.close()
            raise
        self._lock = conn

    def check_lock(self) -> None:
        """Before anything irreversible: the lock's session must still be alive (it holds the lock)."""
        if self._lock is None:
            raise Refused("the cut-over lock is not held")
        try:
            self._lock.execute("SELECT 1")
        except psycopg.Error:
            raise Refused("the connection holding the cut-over lock was lost: stopping") from None

    def release_lock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(psycopg.Error):
                self._lock.close()
            self._lock = None

    # -- phases ----------------------------------------------------------------------------------------------
    def _suite_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS",)}
        env.update({"DATABASE_URL": self.target.dsn, "PHI_ENCRYPTION_KEY": self.target.key,
                    "API_BASE_URL": self.target.api_base_url, "GATE_API_USERNAME": self.target.api_username,
                    "GATE_API_PASSWORD": self.target.api_password, "GATE_CONFIG": str(self.gate.path),
                    "APP_LOG_OFFSET": str(self.state.log_offset),
                    "GATE_API_HEADERS": json.dumps(self.target.api_headers)})
        if self.target.allow_writes:
            env["GATE_ALLOW_WRITES"] = "1"
        if self.target.app_log_file:
            env["APP_LOG_FILE"] = str(self.target.app_log_file)
        if self.state.backup:
            env["BACKUP_FILE"] = self.state.backup["path"]
        return env

    def run_suite(self, marker: str, record: PhaseRecord) -> bool:
        """pytest -m <marker> in a child process; its HTML and JUnit reports land in the run folder, and its
        progress (tests done of total) is shown while it runs."""
        folder = self.run_dir / record.name
        folder.mkdir(parents=True, exist_ok=True)
        progress_file = folder / "progress.jsonl"
        progress_file.unlink(missing_ok=True)
        env = self._suite_env() | {"GATE_PROGRESS_FILE": str(progress_file)}
        with tempfile.TemporaryFile(mode="w+") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-m", marker, f"--gate-run-dir={folder}", "-p", "no:cacheprovider",
                 "-q", "--no-header", "-rf", "--tb=short"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                text=True)
            while child.poll() is None:
                time.sleep(0.5)
                self._show_suite_progress(marker, progress_file)
            self._show_suite_progress(marker, progress_file)
            out.seek(0)
            output = out.read()
        done = subprocess.CompletedProcess(child.args, child.returncode, output, "")
        record.report = str((folder / f"{marker}.html").relative_to(self.run_dir))
        (folder / "pytest-output.txt").write_text(redact_text(done.stdout))
        summary = next((line for line in reversed(done.stdout.strip().splitlines()) if " in " in line), "")
        if done.returncode == 0:
            record.detail = summary.strip("= ")
            return True
        failed = [line.split("::", 1)[1].split(" ")[0] for line in done.stdout.splitlines()
                  if line.startswith("FAILED")]
        # our checks' problem lines (indented under "...: N problem(s)"): tables, counts, ids, never values
        problems = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ") and
                    ("rows" in line or "values" in line or "ids" in line or "missing" in line)][:4]
        record.detail = (f"{summary.strip('= ')}; failed: {', '.join(failed[:8])}"
                         + (f"; first problems: {'; '.join(problems)}" if problems else "") if failed else
                         redact_text(next((line for line in reversed(output.splitlines()) if line.strip()), summary)))
        return False

    def _show_suite_progress(self, marker: str, progress_file: Path) -> None:
        try:
            lines = progress_file.read_text().splitlines()
        except OSError:
            return
        events = [json.loads(line) for line in lines if line.strip().endswith("}")]
        total = next((e["total"] for e in events if "total" in e), None)
        if total:
            self.progress.count(f"{marker} checks", sum("done" in e for e in events), total)

    def _step(self, record: PhaseRecord, action: Callable[[PhaseRecord], bool]) -> bool:
        record.status = "running"
        record.started = datetime.now(UTC).isoformat(timespec="seconds")
        self.state.save()
        self.progress.say(f"phase {record.name}: started")
        began = time.monotonic()
        try:
            ok = action(record)
        except Exception as exc:  # noqa: BLE001 - any failure of a phase is a red gate, never a traceback
            ok = False
            record.detail = safe_message(exc)
        record.seconds = round(time.monotonic() - began, 2)
        record.status = "passed" if ok else "failed"
        self._flag_budgets()
        self.state.save()
        flag = " (over budget)" if record.over_budget else ""
        self.progress.say(f"phase {record.name}: {record.status.upper()} in {record.seconds:.1f} s{flag}"
                          + (f" - {record.detail}" if record.detail and not ok else ""))
        return ok

    def _flag_budgets(self) -> None:
        """A timebox covers one or more phases (maintenance + backup, integrity + post-checks)."""
        for name, _used, _budget, over in budget_report(self.state):
            for record in self.state.phases:
                if BUDGET_OF[record.name] == name:
                    record.over_budget = over

    def _premigration(self, record: PhaseRecord) -> bool:
        return self.run_suite("premigration", record)

    def _maintenance(self, record: PhaseRecord) -> bool:
        backup_record = self.state.phase("backup")
        if backup_record.status == "passed":  # taken while the app could still write: take it again
            backup_record.status, backup_record.detail = "pending", "retaken after maintenance on"
        self.target.hooks.maintenance(True)
        self.state.maintenance_on_at = time.time()
        with httpx.Client(base_url=self.target.api_base_url, timeout=15) as client:  # as the public sees it
            result = app.maintenance_active(client)
        record.detail = "; ".join(result.problems) or "503 with Retry-After on the API, health still answering"
        return result.ok

    def _backup(self, record: PhaseRecord) -> bool:
        taken = backup.take_backup(self.target.dsn, self.run_dir / "backup")
        self.state.backup = {k: v for k, v in asdict(taken).items() if k != "checksums"}
        self.progress.say(f"backup {Path(taken.path).name}: {taken.size:,} bytes, sha256 {taken.sha256[:16]}...")
        return self.run_suite("backup", record)

    def _migration(self, record: PhaseRecord) -> bool:
        def on_step(index: int, total: int, timing: migration.StepTiming) -> None:
            if timing.seconds >= 0.5:
                self.progress.say(f"  statement {index}/{total} (line {timing.step.line}) {timing.seconds:.2f} s: "
                                  f"{timing.step.label}")
            self.progress.count("migration statements", index, total)
        result = migration.run_file(self.target.dsn, self.gate.migration_file, self.target.key,
                                    lock_timeout=self.gate.lock_timeout, statement_timeout=self.gate.statement_timeout,
                                    on_step=on_step)
        record.detail = f"{len(result.timings)} steps in one transaction, committed"
        self._record_counts()
        return True

    def _integrity(self, record: PhaseRecord) -> bool:
        return self.run_suite("integrity", record)

    def _deploy(self, record: PhaseRecord) -> bool:
        self.state.log_offset = app.log_offset(self.target.app_log_file) if self.target.app_log_file else 0
        self.target.hooks.deploy(True)
        with httpx.Client(base_url=self.target.api_base_url, timeout=15, headers=self.target.api_headers) as client:
            result = app.health(client, expect_hipaa=True)
        record.detail = "; ".join(result.problems) or "app healthy with useHipaaSchema true"
        return result.ok

    def _postmigration(self, record: PhaseRecord) -> bool:
        return self.run_suite("postmigration", record)

    def _golive(self, record: PhaseRecord) -> bool:
        self.target.hooks.maintenance(False)
        self.state.maintenance_off_at = time.time()
        with httpx.Client(base_url=self.target.api_base_url, timeout=15) as client:
            token = app.login(client, self.target.api_username, self.target.api_password)
            result = app.protected_routes(client, token, ["/api/patients"])
            result.problems.extend(app.health(client, expect_hipaa=True).problems)
        record.detail = "; ".join(result.problems) or "live: health ok, login and /api/patients answer"
        return result.ok

    # -- the run -------------------------------------------------------------------------------------------
    def run(self, only: list[str] | None = None) -> RunState:
        """The remaining phases in order (or only the named ones, as scripts/backup and scripts/migrate do:
        then a red phase stops the run without an automatic rollback)."""
        self.acquire_lock()
        try:
            self._run(only)
        except KeyboardInterrupt:  # resumable: the next invocation continues where this one stood
            self.state.status = "interrupted"
            self.state.save()
            raise
        finally:
            self.release_lock()
        return self.state

    def run_rollback_only(self) -> RunState:
        """Roll back (an interrupted run, or on an operator's decision) and verify."""
        if self.state.backup and self.gate.rollback_method == "restore":
            try:
                backup.verify_unchanged(Path(self.state.backup["path"]))
            except backup.BackupError as exc:
                raise Refused(str(exc)) from None
        self.acquire_lock()
        try:
            self.state.failure = self.state.failure or "rollback requested by the operator"
            self.rollback()
            self._finish()
        finally:
            self.release_lock()
        return self.state

    def _run(self, only: list[str] | None) -> None:
        for record in self.state.phases:
            if record.status == "passed" or (only is not None and record.name not in only):
                continue
            if record.name == "migration":
                self._guard_migration()
            if not self._step(record, getattr(self, f"_{record.name}")):
                self.state.failure = f"phase {record.name} failed: {record.detail}"
                if record.name in AFTER_MIGRATION_STARTS and only is None:
                    self.rollback()
                else:
                    if self.state.maintenance_on_at and not self.state.maintenance_off_at:
                        self._maintenance_off_quietly()
                    self.state.status = "red"
                self._finish()
                return
        self.state.status = "green" if only is None else "running"
        self._finish()

    def _guard_migration(self) -> None:
        """The migration runs only after green pre-checks and backup in this run (or with --force)."""
        self.check_lock()
        not_green = [p.name for p in self.state.phases
                     if p.name in ("premigration", "maintenance", "backup") and p.status != "passed"]
        if self.state.backup:
            try:
                backup.verify_unchanged(Path(self.state.backup["path"]))
            except backup.BackupError as exc:
                raise Refused(f"refusing to migrate: {exc}") from None
        if not_green and not self.force:
            raise Refused(f"refusing to migrate: {', '.join(not_green)} not green in this run (scripts/cutover runs "
                          "them in order; --force overrides)")
        if not_green:
            self.state.forced = True
            self.progress.say(f"FORCED: migrating although {', '.join(not_green)} are not green (in the report)")

    def _maintenance_off_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.target.hooks.maintenance(False)
            self.state.maintenance_off_at = time.time()

    def rollback(self) -> None:
        """Restore the verified backup (or run the rollback SQL), put the app back on the legacy schema, verify
        with the rollback suite; go back live only when that is green."""
        self.progress.say("ROLLING BACK")
        steps = [PhaseRecord("restore"), PhaseRecord("redeploy-legacy"), PhaseRecord("rollback")]
        self.state.rollback_phases = steps
        if self.state.maintenance_off_at or not self.state.maintenance_on_at:
            try:  # nobody may write while the backup goes back in
                self.target.hooks.maintenance(True)
                self.state.maintenance_on_at = self.state.maintenance_on_at or time.time()
                self.state.maintenance_off_at = None
            except Exception as exc:  # noqa: BLE001 - recorded; the restore still protects the data
                self.progress.say(f"could not switch maintenance on before the rollback: {safe_message(exc)}")
        ok = self._step(steps[0], self._restore)
        ok = ok and self._step(steps[1], self._redeploy_legacy)
        ok = ok and self._step(steps[2], lambda r: self.run_suite("rollback", r))  # RB-01..03
        self.state.rollback_verified = ok
        if ok:
            self._maintenance_off_quietly()
        self.state.status = "rolled-back" if ok else "rollback-failed"

    def _restore(self, record: PhaseRecord) -> bool:
        self.check_lock()
        with psycopg.connect(self.target.dsn) as conn:
            where = schema_state(conn, self.gate)
        if where == "legacy" and self.state.phase("migration").status != "passed":
            record.detail = "the migration never committed: the database is untouched, nothing to restore"
            return True
        if self.gate.rollback_method == "sql" and self.gate.rollback_file and where == "migrated":
            migration.run_file(self.target.dsn, self.gate.rollback_file, self.target.key,
                               lock_timeout=self.gate.lock_timeout)
            record.detail = f"ran {self.gate.rollback_file.name}"
            return True
        if not self.state.backup:
            raise GateError("no backup was taken in this run: nothing to restore")
        backup.restore_in_place(Path(self.state.backup["path"]), self.target.dsn)
        record.detail = f"restored {Path(self.state.backup['path']).name} (sha256 verified)"
        return True

    def _redeploy_legacy(self, record: PhaseRecord) -> bool:
        self.target.hooks.deploy(False)
        with httpx.Client(base_url=self.target.api_base_url, timeout=15, headers=self.target.api_headers) as client:
            result = app.health(client, expect_hipaa=False)
        record.detail = "; ".join(result.problems) or "app healthy on the legacy schema"
        return result.ok

    def _record_counts(self) -> None:
        """Rows per table: legacy as recorded at backup time, new as the database holds them now."""
        if not self.state.backup:
            return
        with contextlib.suppress(backup.BackupError, psycopg.Error):
            recorded = backup.BackupRecord.load(Path(self.state.backup["path"])).checksums
            schema = self.gate.schema
            with psycopg.connect(self.target.dsn) as conn:
                tables = inspect(conn, [schema]).names(schema)
                self.state.counts = [
                    {"legacy": t.legacy, "new": t.new, "legacy_rows": recorded.get(f"{schema}.{t.legacy}", [None])[0],
                     "new_rows": conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                         sql.Identifier(schema, t.new))).fetchone()[0] if t.new in tables else None}
                    for t in self.gate.tables if not t.partial]

    def _finish(self) -> None:
        if self.state.maintenance_on_at:
            end = self.state.maintenance_off_at or time.time()
            self.state.downtime_minutes = round((end - self.state.maintenance_on_at) / 60, 3)
            if self.state.downtime_minutes > self.gate.downtime_minutes:
                self.state.downtime_over_limit = True
                if self.state.status == "green":
                    self.state.status = "over-limit"
                    self.state.failure = (f"downtime {self.state.downtime_minutes:.1f} min exceeds the "
                                          f"{self.gate.downtime_minutes:.0f} min limit")
        self.state.finished = datetime.now(UTC).isoformat(timespec="seconds")
        self.state.save()

