"""Where a cut-over run stands: its phases, budgets and outcome, kept in reports/<run>/state.json so that an
interrupted run can be resumed (or rolled back) by the next invocation; and where the database stands."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from migration_gate.config import ConfigError, GateConfig
from migration_gate.core import rundir
from migration_gate.core.status import Phase, Verdict
from migration_gate.db.catalog import inspect
from migration_gate.db.embedded import pid_alive

STATE_FILE = rundir.STATE
# Phase -> the checklist's timebox it counts against.
BUDGET_OF = {"premigration": "premigration", "maintenance": "backup", "backup": "backup", "migration": "migration",
             "integrity": "verification", "deploy": "deploy", "postmigration": "verification", "golive": "golive"}
PLAN = ("premigration", "maintenance", "backup", "migration", "integrity", "deploy", "postmigration", "golive")
AFTER_MIGRATION_STARTS = ("migration", "integrity", "deploy", "postmigration", "golive")
OWNER_ONLY = 0o077  # the umask of everything that writes run output: folders 0700, files 0600


def owner_only() -> None:
    """A run folder holds what only its operator may read (the state, reports naming rows, dumps, a restore's
    cluster): set once at every entry point that writes one (the command lines, the phase suites' plugin), so
    every file and folder created afterwards, by us or a child (pg_dump, initdb, a hook), is the owner's only."""
    os.umask(OWNER_ONLY)


@dataclass
class PhaseRecord:
    name: str
    status: str = Phase.PENDING  # core.status.Phase
    started: str | None = None
    seconds: float | None = None
    budget_minutes: float | None = None
    over_budget: bool = False
    report: str | None = None
    detail: str | None = None
    forced: bool = False  # red, and the run went on past it (--force): the gate reads this, never the detail text


@dataclass
class RunState:
    run_dir: str
    target: str
    migration_file: str
    migration_sha256: str
    # running, green, forced (green after going on past red checks with --force), rolled-back, rollback-failed,
    # rollback-held, refused, interrupted
    status: str = Verdict.RUNNING  # core.status.Verdict
    pid: int = field(default_factory=os.getpid)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    finished: str | None = None
    forced: bool = False  # the run went on past a red gate (--force); forced_past names what it went past
    forced_past: list[str] = field(default_factory=list)  # red criteria (PRE-05) or, without one, phases
    phases: list[PhaseRecord] = field(default_factory=list)
    rollback_phases: list[PhaseRecord] = field(default_factory=list)
    backup: dict | None = None
    app_version: str | None = None  # what the app reported (GET /api/status commit) after the last deploy
    legacy_app_version: str | None = None  # the previous release, serving the legacy schema before the window
    new_app_version: str | None = None  # the release the forward deploy brought (what a rollback must replace)
    maintenance_on_at: float | None = None
    maintenance_off_at: float | None = None
    downtime_minutes: float | None = None
    downtime_over_limit: bool = False
    failure: str | None = None
    rollback_verified: bool | None = None
    counts: list[dict] = field(default_factory=list)
    log_offset: int = 0
    log_source: str | None = None  # the log source (logsource.LogSource JSON) the post-checks read
    log_marker: str | None = None  # its position at the deploy (logsource.LogMarker JSON)
    write_mark: dict | None = None  # where the database stood right after the migration (writes.WriteMark JSON)
    writes_since: dict | None = None  # what was written since, counted before the rollback (writes.WritesSince)
    rollback_method: str | None = None  # how the last rollback went: "restore" or "sql"
    carried: str | None = None  # the carried-rows record of a SQL rollback (writes.Carried, in the run folder)
    rollback_held: str | None = None  # why the rollback stopped for a human instead of discarding rows
    rollback_decision: dict | None = None  # who decided to discard rows written since the migration, and the count
    # the tables the app's deploy created, as the last rollback met them (deploytables.DeployTable JSON), and
    # what a SQL rollback did with them before its file, in order
    deploy_tables: list[dict] = field(default_factory=list)
    deploy_steps: list[str] = field(default_factory=list)
    environment: dict = field(default_factory=dict)  # what the sign-off says of where and by whom it ran
    sandbox: bool = False  # a rehearsal on the sandbox: its sign-off says so (kept for the watch's rewrites)
    # scripts/rehearse --against-copy: {"copy": label, "as_of": ISO time of its data, "source": host:port/db}
    dress_rehearsal: dict | None = None
    sizes: dict | None = None  # what the target held at the start (forecast.measure): later forecasts scale by it
    forecast: dict | None = None  # this run's window, forecast at its start (forecast.Forecast JSON)
    # when the new app did not turn healthy: each attempt's diagnosis and what was decided (diagnosis.Diagnosis)
    deploy_diagnosis: list[dict] = field(default_factory=list)

    def phase(self, name: str) -> PhaseRecord:
        for record in self.phases + self.rollback_phases:
            if record.name == name:
                return record
        raise KeyError(name)

    def save(self) -> None:
        """Written atomically (temporary file, then rename): a crash never leaves half a state."""
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

    @classmethod
    def open(cls, run_dir: Path) -> RunState:
        """The run in run_dir for a command that was named it: a folder that is no run, or a state that cannot be
        read, is one line (a ConfigError), never a traceback."""
        try:
            return cls.load(run_dir)
        except FileNotFoundError:
            raise ConfigError(f"{run_dir} is not a run folder (no {STATE_FILE})") from None
        except (OSError, ValueError, TypeError, KeyError):
            raise ConfigError(f"{run_dir}/{STATE_FILE} is not a readable run state") from None


def recorded_migration_sha256(run_dir: Path | None) -> str | None:
    """The migration file's sha256 the cut-over in run_dir recorded at its start (state.json), or None where there
    is no such run: the phase suites and scripts/lint check the bytes they read against it, as the runner does."""
    if run_dir is None:
        return None
    try:
        digest = json.loads((Path(run_dir) / STATE_FILE).read_text()).get("migration_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return digest if isinstance(digest, str) and len(digest) == 64 else None


# How a required checklist item a --force start went past stands in RunState.forced_past (beside criterion ids)
NOT_ATTESTED = "not attested: "


def forced_label(state: RunState) -> str:
    """A forced run's verdict, the same in the terminal, the sign-off and the notify line: what it went past
    (criterion ids, phase names and checklist item ids only, never a detail)."""
    checks = [name for name in state.forced_past if not name.startswith(NOT_ATTESTED)]
    items = [name.removeprefix(NOT_ATTESTED) for name in state.forced_past if name.startswith(NOT_ATTESTED)]
    parts = ([f"red checks: {', '.join(checks)}"] if checks else []) + (
        [f"missing attestations: {', '.join(items)}"] if items else [])
    return f"FORCED (went on past {'; '.join(parts) or 'a gate that was not green'})"


def forced_verdict(state: RunState) -> str:
    return f"{forced_label(state)}: every phase after them passed"


def budget_report(state: RunState) -> list[tuple[str, float, float | None, bool]]:
    """(timebox, minutes used, budget minutes, over) for each of the checklist's timeboxes, in order."""
    rows = []
    for name in dict.fromkeys(BUDGET_OF.values()):
        members = [p for p in state.phases if BUDGET_OF[p.name] == name]
        used = sum(p.seconds or 0 for p in members) / 60
        budget = members[0].budget_minutes if members else None
        rows.append((name, round(used, 3), budget, budget is not None and used > budget))
    return rows


def flag_budgets(state: RunState) -> None:
    """A timebox covers one or more phases (maintenance + backup, integrity + post-checks)."""
    for name, _used, _budget, over in budget_report(state):
        for record in state.phases:
            if BUDGET_OF[record.name] == name:
                record.over_budget = over


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


def recorded_runs(reports: Path, target: str) -> list[tuple[Path, RunState]]:
    """Every readable run folder against this target with its state, oldest first (names sort by start time)."""
    found = []
    for state_file in sorted(reports.glob(f"*/{STATE_FILE}")):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            state = RunState.load(state_file.parent)
            if state.target == target:
                found.append((state_file.parent, state))
    return found


def unfinished_runs(reports: Path, target: str) -> list[Path]:
    """Run folders for this target whose state says running and whose process is gone."""
    return [folder for folder, state in recorded_runs(reports, target)
            if state.status in (Verdict.RUNNING, Verdict.INTERRUPTED) and not pid_alive(state.pid)]
