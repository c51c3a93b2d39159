"""What the phase suites run against: one TargetState per phase.

A real target (DATABASE_URL set) is whatever state the user's database is in; the user runs each phase at its
moment. The embedded sandbox (through its provider, migration_gate.run.provider) builds the state each phase needs.
Either way the suites see the same TargetState.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg

from migration_gate.app.logsource import LogMarker, LogSource
from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.record import BackupError, sha256_file
from migration_gate.backup.restores import drop_database, restore
from migration_gate.config import Environment, PrecheckConfig
from migration_gate.config.context import SuiteContext
from migration_gate.core.redact import describe_target, safe_message
from migration_gate.db.connection import application_name, session_dsn

PHASES = ("premigration", "backup", "postmigration", "integrity", "rollback")
NEW_SCHEMA_PHASES = ("postmigration", "integrity")
# Phases that run while the app is live and serving: their sessions carry [precheck]'s timeouts and a name.
LIVE_PHASES = ("premigration",)
def guarded(state: TargetState, precheck: PrecheckConfig) -> TargetState:
    """The state as a phase's tests connect to it: in a live phase, a DSN whose sessions give way to the app
    ([precheck] lock_timeout, statement_timeout) and say they are the gate's; other phases unchanged."""
    if state.phase not in LIVE_PHASES:
        return state
    return dataclasses.replace(state, dsn=session_dsn(state.dsn, precheck.settings(), application_name(state.phase)))


@dataclass
class TargetState:
    phase: str
    dsn: str
    use_hipaa_schema: bool
    api_base_url: str | None = None
    app_log_file: Path | None = None
    log_offset: int = 0
    log_source: LogSource | None = None  # where the log check reads (None: what [logs] and APP_LOG_FILE name)
    log_marker: LogMarker | None = None  # the deploy's position in it
    backup_file: Path | None = None
    baseline_dsn: str | None = None
    api_username: str | None = None
    api_password: str | None = None
    backup_keys: BackupKeys | None = field(default=None, repr=False)  # opens backup_file (the identity)
    carried_rows: Path | None = None  # what a SQL rollback carried back (writes.Carried), for the rollback checks
    _baseline_scratch: str | None = field(default=None, repr=False)


class Targets(Protocol):
    """The target in the state each phase needs; the baseline (legacy data at backup time) for integrity."""

    def state(self, phase: str) -> TargetState: ...
    def baseline(self, state: TargetState) -> str: ...
    def close(self) -> None: ...


class RealTargets:
    """The user's database and API: its secrets from the environment, the run state from the suite's context."""

    def __init__(self, env: Environment, context: SuiteContext) -> None:
        self.env = env
        self.context = context
        self._states: dict[str, TargetState] = {}

    def state(self, phase: str) -> TargetState:
        if phase not in self._states:
            ctx = self.context
            self._states[phase] = TargetState(
                phase=phase, dsn=self.env.database_url, use_hipaa_schema=phase in NEW_SCHEMA_PHASES,
                api_base_url=ctx.api_base_url, app_log_file=ctx.app_log_file, log_offset=ctx.log_offset,
                backup_file=ctx.backup_file, baseline_dsn=self.env.baseline_url, api_username=self.env.api_username,
                api_password=self.env.api_password, log_source=self._log_source(), log_marker=self._log_marker(),
                backup_keys=BackupKeys.from_environment(), carried_rows=ctx.carried_rows)
        return self._states[phase]

    def _log_source(self) -> LogSource | None:
        """The source the gate resolved (its context); else the log check resolves [logs] itself."""
        return LogSource.from_json(self.context.log_source) if self.context.log_source else None

    def _log_marker(self) -> LogMarker | None:
        """The gate's marker (its context), or one a user gives by hand: APP_LOG_OFFSET, GATE_LOGS_SINCE."""
        ctx = self.context
        if ctx.log_marker:
            return LogMarker.from_json(ctx.log_marker)
        if ctx.log_offset or ctx.logs_since:
            return LogMarker(since=ctx.logs_since or "", offset=ctx.log_offset)
        return None

    def baseline(self, state: TargetState) -> str:
        """The legacy data at backup time: BASELINE_DATABASE_URL, or BACKUP_FILE restored to a scratch database."""
        if state.baseline_dsn:
            return state.baseline_dsn
        if state.backup_file is None:
            raise LookupError("integrity needs BASELINE_DATABASE_URL or BACKUP_FILE (the verified backup)")
        # named after the dump's sha256: the same backup always lands in the same scratch database, which a
        # crashed run's successor reuses (replace=True) instead of leaving copies behind
        name = f"gate_baseline_{sha256_file(state.backup_file)[:16]}"
        state.baseline_dsn = restore(state.backup_file, state.dsn, name, replace=True, keys=state.backup_keys)
        state._baseline_scratch = name
        return state.baseline_dsn

    def close(self) -> None:
        """The backup restored for integrity (a copy of production on its server) is dropped; one that could not
        be is a BackupError naming it (never swallowed: the suite's results say it, red)."""
        left = []
        for state in self._states.values():
            if state._baseline_scratch:
                try:
                    drop_database(state.dsn, state._baseline_scratch)
                except (psycopg.Error, BackupError) as exc:
                    left.append(f"scratch database {state._baseline_scratch} on {describe_target(state.dsn)} could "
                                f"NOT be dropped: {safe_message(exc)}; drop it by hand (it holds the backup's data)")
        if left:
            raise BackupError("; ".join(left))
