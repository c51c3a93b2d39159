"""The cut-over as code: the runbook's phases in order, each gated on a green run of its pytest suite, with an
automatic, verified rollback when anything after the migration starts goes red.

pre-checks -> maintenance on (verified) -> backup -> migration -> integrity -> deploy -> post-checks ->
go live (maintenance off, smoke test) -> sign-off.

This module only sequences: the run's state and budgets are in runstate, the host's hooks and the target in
hooks, the suites' child processes in suites. Every transition is written to reports/<run>/state.json, so an
interrupted run can be resumed (or rolled back) by the next invocation. One cut-over per database at a time: a
session-level advisory lock on the target.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate.app import answers, logsource, ownrequests, performance
from migration_gate.app.client import http_client
from migration_gate.app.hooks import CutoverTarget, Hooks, ShellHooks
from migration_gate.backup import digests as baseline_digests
from migration_gate.backup.checksums import changes_since
from migration_gate.backup.dump import sweep_leftovers, take_backup
from migration_gate.backup.inplace import restore_in_place
from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.offsite import fetch_back, store_offsite
from migration_gate.backup.reading import verify_unchanged
from migration_gate.backup.record import BackupError, BackupRecord, sha256_file
from migration_gate.checks import api as app
from migration_gate.checks import carried as carried_rows
from migration_gate.config import GateConfig
from migration_gate.config.environment import operator
from migration_gate.core import rundir
from migration_gate.core.errors import GateError, Refused
from migration_gate.core.phi import PhiCodec
from migration_gate.core.progress import Progress
from migration_gate.core.redact import describe_target, mask_values, safe_message
from migration_gate.core.result import Result
from migration_gate.core.status import Outcome, Phase, Verdict
from migration_gate.db import connection as db
from migration_gate.db import deploytables, migration, writes
from migration_gate.db.catalog import inspect
from migration_gate.run import attest, diagnosis, forecast, hookrehearsal, notify
from migration_gate.run.runstate import (
    AFTER_MIGRATION_STARTS,
    BUDGET_OF,
    NOT_ATTESTED,
    PLAN,
    STATE_FILE,
    PhaseRecord,
    RunState,
    budget_report,
    flag_budgets,
    forced_verdict,
    schema_state,
    unfinished_runs,
)
from migration_gate.run.suites import SuiteRunner, read_results, session_tag, suite_context, suite_env

# What callers imported from here before the split keeps working.
__all__ = ["AFTER_MIGRATION_STARTS", "BUDGET_OF", "LOCK_KEY", "PLAN", "STATE_FILE", "CutoverTarget", "Gate",
           "GateError", "Hooks", "PhaseRecord", "Refused", "RunState", "ShellHooks", "budget_report",
           "safe_message", "schema_state", "unfinished_runs"]

LOCK_KEY = 0x6D67_6174  # "mgat": the advisory lock one cut-over holds on its target
FORCEABLE = ("premigration", "backup")  # the gates --force overrides, and no others
HELD = "; ROLLBACK HELD: "  # how a held rollback's reason follows the run's failure
MAINTENANCE_STILL_ON = "rolled-back-maintenance-on"  # verified rollback, but maintenance_off failed: exit 3


@dataclass
class RollbackPlan:
    """How a rollback would go, and what it would discard, before anything changes."""

    method: str  # "restore" the backup, "sql" (rollback_file, carries rows back), or "none" (never migrated)
    writes: writes.WritesSince | None  # changes since the migration (None: the run has no mark to count from)
    lost: int | None  # changes by others than the gate that this method discards (None: not countable)
    held: str | None  # why it must stop for a human (no decision given), else None
    went_live: bool = False
    # the tables the app's deploy created ([deploy] app_tables), each with its rows: what this method does with them
    deploy_tables: list[deploytables.DeployTable] = field(default_factory=list)
    # both costs, per table, before anyone decides: the rows the rollback SQL would carry back, per new table and
    # the legacy table it goes into (None: no rollback SQL for this database), the changes by others a restore
    # would discard per table, and the PHI checks on the rows it would carry (None: no rollback SQL, or no mark)
    carry: dict[str, int] | None = None
    discard: dict[str, int] = field(default_factory=dict)
    carried_phi: carried_rows.CarriedPhi | None = None

    def describe(self) -> str:
        how = {"restore": "restore the verified backup", "sql": "run the rollback SQL (rows written since the "
               "migration are carried back, then verified by key)", "none": "nothing to undo"}[self.method]
        count = ("cannot be counted (the run has no mark from the migration)" if self.writes is None
                 else self.writes.summary())
        lost = "unknown" if self.lost is None else str(self.lost)
        deploy = (f"; the tables the app's deploy created: {deploytables.summary(self.deploy_tables, self.method)}"
                  if self.deploy_tables else "")
        return f"{how}; written since the migration: {count}; discarded by this rollback: {lost}{deploy}"

    def choice(self) -> list[str]:
        """The two costs side by side, for whoever decides between carrying the rows back and discarding them."""
        if self.method == "none" or self.writes is None:
            return []
        lines = []
        if self.carry is not None:
            rows = "; ".join(f"{table}: {n} rows" for table, n in self.carry.items()) or "no rows"
            checked = f" ({self.carried_phi.line()})" if self.carried_phi is not None else ""
            lines.append(f"carry them back (the rollback SQL): brings back {rows}{checked}")
        gone = "; ".join(f"{table}: {n} changes" for table, n in self.discard.items()) or "nothing"
        lines.append(f"discard them (restore the backup, --discard-writes --decided-by NAME): loses {gone}")
        return lines


class Gate:
    """Sequences the phases of one cut-over run; each phase's work lives in the modules it calls."""

    def __init__(self, gate: GateConfig, target: CutoverTarget, run_dir: Path, progress: Progress,
                 force: bool = False, state: RunState | None = None,
                 log_source: logsource.LogSource | None = None) -> None:
        self.gate = gate
        self.target = target
        self.run_dir = run_dir
        self.progress = progress
        self.force = force
        run_dir.mkdir(parents=True, exist_ok=True)
        self.state = state or RunState(
            run_dir=str(run_dir), target=describe_target(target.dsn), migration_file=str(gate.migration_file),
            migration_sha256=sha256_file(gate.migration_file),
            phases=[PhaseRecord(name, budget_minutes=gate.phase_minutes.get(BUDGET_OF[name])) for name in PLAN])
        self.suites = SuiteRunner(run_dir, progress)
        # where the post-checks read the app's log: the caller's (the rehearsal's command), else [logs]
        self.log_source = log_source or logsource.configured(
            gate.logs, gate.hooks, target.app_log_file, gate.hook_pass_env)
        self._lock: psycopg.Connection | None = None
        self.rollback_only = False  # set when an interrupted run may only be rolled back
        # an operator's decision to discard rows written since the migration: {"by": name, "reason": text}
        self.decision: dict[str, str] | None = None
        self._backup_checks_ran = False  # the backup phase got as far as its checks (the dump is stored)
        # the application_name of this run's children's sessions (pg_dump, the restore's psql, the suites)
        self.session_tag = session_tag(run_dir)
        # status lines to the notify hook (phase changes, the end, the open window's timer); never holds the run up
        self.notifier = notify.Notifier(gate.notify, target.hooks, self.state, run_dir, progress, self._secrets())
        # a forecast that breaks a budget: "record" it (rehearsals, phase commands), "refuse" before anything
        # changes (scripts/cutover), or "accept" it and record who did (scripts/cutover --accept-forecast)
        self.forecast_policy = "record"

    # -- locking -------------------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        conn = db.connect(self.target.dsn, autocommit=True, connect_timeout=15, keepalives=1,
                               keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
        try:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
                holder = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s "
                                      "AND granted", (LOCK_KEY & 0xFFFFFFFF,)).fetchone()
                raise Refused(f"another cut-over is running against {self.state.target} "
                              f"(backend pid {holder[0] if holder else '?'}): refusing to start a second one")
            self._end_orphans(conn)
        except BaseException:
            conn.close()
            raise
        self._lock = conn

    def _end_orphans(self, conn: psycopg.Connection) -> None:
        """End the sessions a killed gate of this run left behind, before anything else runs.

        kill -9 of the gate ends its own sessions (the server sees the socket close: an open transaction is rolled
        back, the advisory lock is let go, which is why this lock could be taken) but not its children's. None of
        them can commit anything half-way: pg_dump only reads; the restore's psql commits only on the COMMIT the
        gate writes after pg_restore exited 0 (restore_in_place); a suite's checks only read, and a suite
        ends itself when its gate is gone (plugin). They can still hold locks the next step needs (pg_dump waiting
        on a table, psql holding what its DROPs took), so the resumed run ends them by their application_name.
        With the lock held, no live gate of this run owns such a session."""
        try:
            ended = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND left(application_name, length(%s)) = %s", (self.session_tag, self.session_tag)).fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:  # another role's session (a DSN changed since): say so, go on
            self.progress.say("the interrupted run left sessions of another role this role may not end; the next "
                              "step may wait for them (their transactions can never commit)")
            return
        if ended:
            self.progress.say(f"ended {ended} session(s) the interrupted run's child processes left behind")

    def check_lock(self) -> None:
        """Before anything irreversible: the lock's session must still be alive (it holds the lock)."""
        if self._lock is None:
            raise Refused("the cut-over lock is not held")
        try:
            self._lock.execute("SELECT 1")
        except psycopg.Error:
            raise Refused("the connection holding the cut-over lock was lost: stopping") from None

    def release_lock(self) -> None:
        """Unlocked before the session closes: the server ends a closed session (and lets its locks go) a moment
        after the client has moved on, and the next command (scripts/backup, then scripts/migrate) would find the
        lock still held and refuse."""
        if self._lock is not None:
            with contextlib.suppress(psycopg.Error):
                self._lock.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            with contextlib.suppress(psycopg.Error):
                self._lock.close()
            self._lock = None

    # -- phases ----------------------------------------------------------------------------------------------
    def run_suite(self, marker: str, record: PhaseRecord) -> bool:
        """The phase's suite against this run's target, recorded in the run folder."""
        return self.suites.run(marker, record, suite_env(self.target, self.gate, self.state),
                               suite_context(self.target, self.gate, self.state))

    def _step(self, record: PhaseRecord, action: Callable[[PhaseRecord], bool]) -> bool:
        record.status = Phase.RUNNING
        record.started = datetime.now(UTC).isoformat(timespec="seconds")
        self.state.save()
        self.progress.say(f"phase {record.name}: started")
        self.notifier.phase(record.name, record.status)
        began = time.monotonic()
        try:
            ok = action(record)
        except Exception as exc:  # noqa: BLE001 - any failure of a phase is a red gate, never a traceback
            ok = False
            record.detail = safe_message(exc)
        if record.detail:  # whatever a step or a hook said, the target's own secrets never reach the record
            record.detail = mask_values(record.detail, self._secrets())
        record.seconds = round(time.monotonic() - began, 2)
        record.status = Phase.PASSED if ok else Phase.FAILED
        flag_budgets(self.state)
        self.state.save()
        flag = " (over budget)" if record.over_budget else ""
        self.progress.say(f"phase {record.name}: {record.status.upper()} in {record.seconds:.1f} s{flag}"
                          + (f" - {record.detail}" if record.detail and not ok else ""))
        self.notifier.phase(record.name, record.status)
        return ok

    def _secrets(self) -> list[str]:
        """The secrets this run was given: the key, the API password and headers, the database password."""
        password = psycopg.conninfo.conninfo_to_dict(self.target.dsn).get("password") or ""
        return [self.target.key, self.target.api_password, str(password), *self.target.api_headers.values()]

    def _premigration(self, record: PhaseRecord) -> bool:
        return self.run_suite("premigration", record)

    def _maintenance(self, record: PhaseRecord) -> bool:
        backup_record = self.state.phase("backup")
        if backup_record.status == Phase.PASSED:  # taken while the app could still write: take it again
            backup_record.status, backup_record.detail = Phase.PENDING, "retaken after maintenance on"
        self.target.hooks.maintenance(True)
        self.state.maintenance_on_at = time.time()
        if self.target.maintenance_unverifiable:
            record.detail = f"maintenance mode NOT VERIFIED: {self.target.maintenance_unverifiable}"
            return self._record_answers(record)
        with http_client(self.target.api_base_url, timeout=15,
                         headers=self.target.edge_headers) as client:  # as the public sees it
            result = app.maintenance_active(client)
        with http_client(self.target.api_base_url, timeout=15, headers=self.target.api_headers) as client:
            # the release a rollback must bring back: the legacy side is the previous release, not the new build
            self.state.legacy_app_version = app.app_version(client) or self.state.legacy_app_version
        record.detail = "; ".join(result.problems) or "503 with Retry-After on the API, health still answering"
        return result.ok and self._record_answers(record)

    def _record_answers(self, record: PhaseRecord) -> bool:
        """In maintenance, before the dump: the app's answers recorded again, as users wrote while it was live
        after the pre-checks; the post-checks (POST-19) compare with this recording. A failed recording does not
        stop the cut-over (a forced run past a red PRE-14 would stop here): POST-19 skips it. Here and not in the backup
        suite: the reads write audit rows, which must be in the backup (nothing may change after its snapshot)."""
        if not self.gate.answers.requests:
            return True
        with http_client(self.target.api_base_url, timeout=30, headers=self.target.api_headers) as client:
            result = answers.record_before(client, self.gate.answers, self.target.key, self.run_dir,
                                           answers.MAINTENANCE,
                                           answers.environment(self.target.api_username, self.target.api_password))
        said = (f"the app's answers recorded again ({result.checked} records)" if result.ok
                else "the app's answers could not be recorded again (POST-19 compares with the pre-checks' "
                     "recording, red when that is unusable too): " + "; ".join(result.problems))
        record.detail = f"{record.detail}; {said}"
        return True  # nothing changed yet, and POST-19 never compares with a recording of failed answers

    def _backup(self, record: PhaseRecord) -> bool:
        """The dump streamed into an encrypted file (age, to [backup] recipients), stored off the box by the
        store_backup hook, fetched back by fetch_backup and verified by both sha256s, then the backup checks."""
        settings = self.gate.backup
        keys = self._backup_keys()
        if isinstance(self.target.hooks, ShellHooks):
            self.target.hooks.backup_timeout = settings.hook_timeout_seconds
        removed = sweep_leftovers(self.run_dir / "backup")  # a killed backup's partial files (lock held)
        if removed:
            self.progress.say(f"removed what an interrupted backup left: {', '.join(removed)}")
        # the integrity phase's legacy side, digested in the dump's own snapshot while pg_dump dumps it and the
        # backup checks run; joined before the migration (their reads hold share locks it would wait on)
        digests = baseline_digests.InSnapshot(self.target.dsn, self.gate, self.target.key, self.session_tag)
        taken = take_backup(self.target.dsn, self.run_dir / "backup", keys=keys,
                            timeout_s=settings.dump_timeout_seconds,
                            retention_days=settings.retention_days_local, application_name=self.session_tag,
                            compress=settings.compress, jobs=settings.workers, in_snapshot=digests.start)
        try:
            return self._store_and_check(record, taken, keys)
        finally:
            if not digests.save_beside(taken):
                self.progress.say("the integrity digests could not be taken with the backup: integrity will "
                                  "restore the backup to compare")

    def _store_and_check(self, record: PhaseRecord, taken: BackupRecord, keys: BackupKeys) -> bool:
        settings = self.gate.backup
        self.state.backup = taken.summary()
        self.state.save()
        how = f"age, {len(taken.recipients)} recipient(s)" if taken.encryption == "age" else "NOT ENCRYPTED"
        self.progress.say(f"backup {Path(taken.path).name} ({how}, gzip level {taken.compress}, {taken.jobs} "
                          f"checksum job(s)): {taken.size:,} bytes, sha256 "
                          f"{taken.sha256[:16]}...")
        if taken.encryption == "none":
            self.progress.say("WARNING: [backup] encrypt = \"none\": the dump holds PHI in clear")
        stored = store_offsite(taken, self.target.hooks, self.run_dir.name, keys)
        self.state.backup = stored.summary() | {"retention_days_local": settings.retention_days_local,
                                                "retention_remote": settings.retention_remote}
        self.state.save()
        self.progress.say(f"backup stored off the box at {stored.location}; fetched back and verified")
        self._backup_checks_ran = True  # from here on, red is the backup checks' (what --force may override)
        return self.run_suite("backup", record)

    def _migration(self, record: PhaseRecord) -> bool:
        def on_step(index: int, total: int, timing: migration.StepTiming) -> None:
            if timing.seconds >= 0.5:
                self.progress.say(f"  statement {index}/{total} (line {timing.step.line}) {timing.seconds:.2f} s: "
                                  f"{timing.step.label}")
            self.progress.count("migration statements", index, total)
        result = migration.run_file(self.target.dsn, self.gate.migration_file, self.target.key,
                                    lock_timeout=self.gate.lock_timeout, statement_timeout=self.gate.statement_timeout,
                                    on_step=on_step, sha256=self.state.migration_sha256)
        record.detail = f"{len(result.timings)} steps in one transaction, committed"
        self._mark_writes()
        self._record_counts()
        return True

    def _mark_writes(self) -> None:
        """Right after the commit: the point a rollback counts the writes it would discard from."""
        try:
            self.state.write_mark = writes.take_mark(self.target.dsn).to_json()
        except psycopg.Error as exc:  # the migration stands; a later rollback says it cannot count
            self.progress.say(f"could not mark the database after the migration: {safe_message(exc)}")
        self.state.save()

    def _integrity(self, record: PhaseRecord) -> bool:
        return self.run_suite("integrity", record)

    def _deploy(self, record: PhaseRecord) -> bool:
        """Deploy the new app and wait for it; when its health does not turn, the diagnosis (run/diagnosis.py) is
        recorded before anything is decided, then a redeploy where [deploy] retries allows, else red (rollback)."""
        self.state.deploy_diagnosis = []
        for attempt in range(1, self.gate.deploy.retries + 2):
            self.state.log_offset = app.log_offset(self.target.app_log_file) if self.target.app_log_file else 0
            self.state.log_source = self.log_source.to_json() if self.log_source else None
            # before the deploy (or the redeploy, whose app is the one that goes on): its lines count
            self.state.log_marker = logsource.mark(self.log_source).to_json()
            self.state.save()
            try:
                printed = self.target.hooks.deploy(True)
            except Exception as exc:  # noqa: BLE001 - a failed hook is diagnosed like an app that never turns
                printed, result = None, Result("deploy")
                result.add(mask_values(safe_message(exc), self._secrets()))
            else:
                result = self._wait_for_app(expect_hipaa=True)
            if result.ok:
                self.state.new_app_version = self.state.app_version
                redeployed = f"; redeployed once: {self.state.deploy_diagnosis[-1]['why']}" if attempt > 1 else ""
                record.detail = (f"app healthy with useHipaaSchema true ({'; '.join(result.notes[-1:])}"
                                 f"{', version ' + self.state.app_version if self.state.app_version else ''})"
                                 f"{redeployed}")
                return True
            found = self._diagnose(attempt, result.problems[0] if result.problems else "not healthy", printed)
            record.detail = f"{'; '.join(result.problems)}; {found.why} (diagnosis in the run)"
            if found.decision != "redeploy":
                return False
            self.progress.say(f"  {found.why}")
        return False

    def _diagnose(self, attempt: int, problem: str, printed: str | None) -> diagnosis.Diagnosis:
        """The checklist's "If application won't start" steps, recorded in the run before the decision."""
        self.progress.say("  the app did not turn healthy: diagnosing (environment, logs, database, version)")
        expected = self.gate.deploy.expected_version or diagnosis.hook_version(printed)
        expected_from = ("[deploy] expected_version" if self.gate.deploy.expected_version
                         else "printed by the deploy hook" if expected else "not known")
        marker = logsource.LogMarker.from_json(self.state.log_marker) if self.state.log_marker else None
        with http_client(self.target.api_base_url, timeout=15, headers=self.target.api_headers) as client:
            answering = app.app_version(client)
            found = diagnosis.diagnose(attempt, mask_values(problem, self._secrets()), client, self.target.dsn,
                                       self.gate, self.log_source, marker, answering, expected, expected_from,
                                       self.state.legacy_app_version)
        for step in found.steps:
            step.detail = mask_values(step.detail, self._secrets())
            self.progress.say(f"  diagnosis {step.step}: {'?' if step.ok is None else 'ok' if step.ok else 'RED'} "
                              f"- {step.detail}")
        self.state.deploy_diagnosis.append(found.to_json())
        self.state.save()
        return found

    def _wait_for_app(self, expect_hipaa: bool) -> Result:
        """Poll the app after a deploy until it reports the expected schema (progress meanwhile), and record
        the version it says it runs."""
        def waiting(seconds: float, last: str) -> None:
            if int(seconds) % 10 < 2:
                self.progress.say(f"  waiting for the app to report the {'new' if expect_hipaa else 'legacy'} schema:"
                                  f" {seconds:.0f} s of {self.gate.deploy_wait_seconds:g} (last: {last})")
        with http_client(self.target.api_base_url, timeout=15, headers=self.target.api_headers) as client:
            result = app.wait_for_schema(client, expect_hipaa, self.gate.deploy_wait_seconds, waiting)
            version = app.app_version(client)
        if version:
            self.state.app_version = version
        return result

    def _postmigration(self, record: PhaseRecord) -> bool:
        return self.run_suite("postmigration", record)

    def _golive(self, record: PhaseRecord) -> bool:
        self.target.hooks.maintenance(False)
        self.state.maintenance_off_at = time.time()
        with http_client(self.target.api_base_url, timeout=15, headers=self.target.edge_headers) as client:
            token = app.login(client, self.target.api_username, self.target.api_password)
            result = app.protected_routes(client, token, ["/api/patients"],
                                         on_bad_request=ownrequests.recorder(self.run_dir))
            result.problems.extend(app.health(client, expect_hipaa=True).problems)
        speed = performance.check_after(performance.plan(self.gate, self.target.api_base_url, self.target.api_username,
                                                         self.target.api_password, self.target.api_headers),
                                        self.run_dir, self.gate, "golive", dsn=self.target.dsn)  # vs the baseline
        result.problems.extend(speed.problems)
        record.detail = "; ".join(result.problems) or (f"live: health ok, login and /api/patients answer; "
                                                       f"{speed.check}: {speed.checked} endpoints within")
        return result.ok

    # -- the run -------------------------------------------------------------------------------------------
    def run(self, only: list[str] | None = None) -> RunState:
        """The remaining phases in order (or only the named ones, as scripts/backup and scripts/migrate do:
        then a red phase stops the run without an automatic rollback)."""
        self.acquire_lock()
        try:
            self.forecast_at_start()
        except BaseException:
            self.release_lock()
            raise
        self.notifier.start()
        try:
            self._run(only)
        except KeyboardInterrupt:  # resumable: the next invocation continues where this one stood
            self.state.status = Verdict.INTERRUPTED
            self.state.save()
            raise
        finally:
            self.notifier.close()
            self.release_lock()
        return self.state

    def forecast_at_start(self) -> None:
        """A new run measures the target (its sizes recorded for later forecasts) and forecasts its window from
        the newest earlier run under the same reports folder; printed and recorded. A forecast that breaks a
        budget refuses here, before maintenance, when the caller asked for that (scripts/cutover)."""
        if self.state.forecast is not None or any(p.status != Phase.PENDING for p in self.state.phases):
            return
        try:
            self.state.sizes = forecast.measure(self.target.dsn, self.gate)
        except psycopg.Error as exc:
            self.progress.say(f"forecast: the target's sizes could not be measured ({safe_message(exc)})")
        found = forecast.make(self.gate, self.run_dir.parent, self.state.migration_sha256, self.state.sizes,
                              exclude=self.run_dir)
        breaks = found.breaks()
        if breaks and self.forecast_policy == "accept":
            found.accepted = {"by": operator(), "at": datetime.now(UTC).isoformat(timespec="seconds")}
        self.state.forecast = found.to_json()
        for line in found.lines():
            self.progress.say(line)
        if breaks and self.forecast_policy == "refuse":
            self.state.status = Verdict.REFUSED
            self.state.failure = (f"refusing to start, nothing was changed: the forecast breaks {len(breaks)} "
                                  f"budget(s): {'; '.join(breaks)} (--accept-forecast starts anyway, recorded)")
            self.state.finished = datetime.now(UTC).isoformat(timespec="seconds")
            self.state.save()
            raise Refused(self.state.failure)
        if found.accepted:
            self.progress.say(f"FORECAST ACCEPTED by {found.accepted['by']} although it breaks: {'; '.join(breaks)}")
        self.state.save()

    def run_rollback_only(self) -> RunState:
        """Roll back (an interrupted run, or on an operator's decision) and verify."""
        if self.state.backup and (self.gate.rollback_method == "restore" or self.decision is not None):
            dump = Path(self.state.backup["path"])
            try:
                if not dump.is_file():  # the box lost it: the copy off the box comes back first, sha256 checked
                    fetch_back(BackupRecord.load(dump, self._backup_keys().record_key),
                               self.target.hooks, self.run_dir.name)
                verify_unchanged(dump, self._backup_keys(), self.state.backup)
            except BackupError as exc:
                raise Refused(str(exc)) from None
        self.acquire_lock()
        self.notifier.start()
        try:
            self.state.pid = os.getpid()  # this process acts on the run now
            self.state.failure = self.state.failure or "rollback requested by the operator"
            self.rollback()
            self._finish()
        finally:
            self.notifier.close()
            self.release_lock()
        return self.state

    def _run(self, only: list[str] | None) -> None:
        self._take_in_overrides()
        for record in self.state.phases:
            if record.status == Phase.PASSED or (only is not None and record.name not in only):
                continue
            if self._forced_before_migration(record):
                continue
            if record.forced:
                self._unforce(record)
            if record.name == "migration":
                self._guard_migration()
            if not self._step(record, getattr(self, f"_{record.name}")):
                if self._forced_past(record):
                    continue
                self.state.failure = f"phase {record.name} failed: {record.detail}"
                if record.name in AFTER_MIGRATION_STARTS and only is None:
                    self.rollback()
                else:
                    if self.state.maintenance_on_at and not self.state.maintenance_off_at:
                        self._maintenance_off_quietly()
                    self.state.status = Verdict.RED
                self._finish()
                return
        if only is None:  # a forced run's verdict is its own, never green
            self.state.status = Verdict.FORCED if self.state.forced else Verdict.GREEN
        else:
            self.state.status = Verdict.RUNNING
        self._finish()

    def _forced_before_migration(self, record: PhaseRecord) -> bool:
        """A resumed run whose migration committed keeps the red gates it was forced past before: judging
        pre-checks again on the migrated schema means nothing, and the verdict still says it was forced."""
        return (record.name in FORCEABLE and record.status == Phase.FAILED and self.state.forced
                and self.state.phase("migration").status == Phase.PASSED)

    def _red_criteria(self, record: PhaseRecord) -> list[str]:
        """The criteria a red phase's suite failed (tests failed or errored, red waivers), from the results its
        child wrote; the phase's name when none can be named (a hook, the dump, a suite that wrote nothing)."""
        found: list[str] = []
        for path in sorted((self.run_dir / record.name).glob(rundir.CRITERIA)):
            results = read_results(path) or {}
            found += [t["criterion"] for t in results.get("tests", [])
                      if t.get("outcome") in (Outcome.FAILED, Outcome.ERROR) and t.get("criterion")]
            found += [w["criterion"] for w in results.get("waivers", []) if w.get("red") and w.get("criterion")]
        return sorted(set(found)) or [record.name]

    def _unforce(self, record: PhaseRecord) -> None:
        """A gate forced past before an interruption is judged again now (before the migration): what it was
        forced past no longer stands, and this invocation's --force (or its absence) decides anew."""
        stale = {*self._red_criteria(record), record.name}
        self.state.forced_past = [name for name in self.state.forced_past if name not in stale]
        self.state.forced = bool(self.state.forced_past)
        record.detail, record.forced = None, False

    def _take_in_overrides(self) -> None:
        """A cut-over started with --force although required checklist items were not attested went on past a
        gate as surely as one forced past a red check: its verdict says so (FORCED, never GREEN)."""
        missing = [item for entry in attest.overrides(self.run_dir) for item in entry.missing]
        if missing:
            self._mark_forced([f"{NOT_ATTESTED}{item}" for item in missing])
            self.state.save()
        unrehearsed = hookrehearsal.overridden(self.run_dir)
        if unrehearsed:  # started (--force) without a valid hooks rehearsal: as forced as a red gate
            self._mark_forced([f"hooks not rehearsed ({'; '.join(unrehearsed)})"])
            self.state.save()

    def _mark_forced(self, past: list[str]) -> None:
        self.state.forced = True
        self.state.forced_past = list(dict.fromkeys(self.state.forced_past + past))

    def _forced_past(self, record: PhaseRecord) -> bool:
        """--force overrides exactly the gates its help names: red pre-checks and red backup checks (a backup
        that was taken). Maintenance, a failed dump and everything after the migration still stop the run."""
        if not self.force or record.name not in FORCEABLE:
            return False
        if record.name == "backup" and not self._backup_checks_ran:  # the dump, its store or fetch-back failed
            return False
        past = self._red_criteria(record)
        self._mark_forced(past)
        record.forced = True
        record.detail = f"FORCED past: {record.detail}"
        self.state.save()
        self.progress.say(f"FORCED: continuing although phase {record.name} is red ({', '.join(past)}; in the "
                          "report)")
        return True

    def _guard_migration(self) -> None:
        """The migration runs only after green pre-checks and backup in this run (or with --force), with the
        backup unchanged, and only on a database no one has written to since the backup's snapshot: a write in
        the window (an instance or a job ignoring maintenance) would be migrated, then lost by a restore."""
        self.check_lock()
        try:  # the file this run recorded at its start, or nothing (run_file checks the bytes it runs again)
            migration.load(self.gate.migration_file, sha256=self.state.migration_sha256)
        except migration.MigrationFileError as exc:
            raise Refused(f"refusing to migrate: {exc}") from None
        not_green = [p.name for p in self.state.phases
                     if p.name in ("premigration", "maintenance", "backup") and p.status != Phase.PASSED]
        if self.state.backup:
            try:
                record = verify_unchanged(Path(self.state.backup["path"]), self._backup_keys(),
                                          self.state.backup)
            except BackupError as exc:
                raise Refused(f"refusing to migrate: {exc}") from None
            began = time.monotonic()
            changed = changes_since(self.target.dsn, record, self.gate.backup.change_check)
            self.state.backup["change_check"] = (f"{self.gate.backup.change_check}: {len(record.checksums)} tables "
                                                 f"in {time.monotonic() - began:.1f} s, {len(changed)} changed")
            if changed:
                self._refuse_stale(changed)
        if not_green and not self.force:
            raise Refused(f"refusing to migrate: {', '.join(not_green)} not green in this run (scripts/cutover runs "
                          "them in order; --force overrides)")
        if not self.state.backup:
            raise Refused("refusing to migrate: no backup was taken in this run (--force never overrides this)")
        if not_green:
            self._mark_forced([name for name in not_green if not self.state.phase(name).forced])
            self.progress.say(f"FORCED: migrating although {', '.join(not_green)} are not green (in the report)")

    def _refuse_stale(self, changed: list[str]) -> None:
        """Written to since the backup: nothing is migrated, maintenance goes off (the app is untouched on the
        legacy schema), and the run records which tables changed. --force never overrides this."""
        shown = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
        message = (f"refusing to migrate: the database was written to after the backup's snapshot ({shown}); "
                   "find what ignores maintenance mode, then run the cut-over again for a fresh backup")
        self.state.status, self.state.failure = "refused", message
        if self.state.maintenance_on_at and not self.state.maintenance_off_at:
            self._maintenance_off_quietly()
        self._finish()
        raise Refused(message)

    def _maintenance_off_quietly(self) -> None:
        """Maintenance off after a red gate before the migration (the run is red already): a failure is said and
        added to the run's failure, never swallowed (the app would go on shutting its users out unseen)."""
        try:
            self.target.hooks.maintenance(False)
            self.state.maintenance_off_at = time.time()
        except Exception as exc:  # noqa: BLE001 - the run is red already; this says why the app is still down
            said = mask_values(safe_message(exc), self._secrets())
            self.state.failure = f"{self.state.failure or 'red'}; maintenance could NOT be switched off: {said}"
            self.progress.say(f"MAINTENANCE STILL ON: switching it off failed: {said}")

    def rollback(self) -> None:
        """Restore the verified backup (or run the rollback SQL), put the app back on the legacy schema, verify
        with the rollback suite; go back live only when that is green."""
        self.progress.say("ROLLING BACK")
        if self.state.failure and HELD in self.state.failure:  # an earlier attempt held: this one decides again
            self.state.failure = self.state.failure.split(HELD)[0]
        restored = self._restore_committed()
        steps = [restored or PhaseRecord("restore"), PhaseRecord("redeploy-legacy"), PhaseRecord("rollback")]
        self.state.rollback_phases = steps
        if self.state.maintenance_off_at or not self.state.maintenance_on_at:
            try:  # nobody may write while the backup goes back in
                self.target.hooks.maintenance(True)
                self.state.maintenance_on_at = self.state.maintenance_on_at or time.time()
                self.state.maintenance_off_at = None
            except Exception as exc:  # noqa: BLE001 - recorded; the restore still protects the data
                self.progress.say(f"could not switch maintenance on before the rollback: {safe_message(exc)}")
        ok = restored is not None or self._step(steps[0], self._restore)
        if self.state.rollback_held:  # it would discard others' rows: nothing was changed, a human decides
            steps[0].status = Phase.HELD
            self.state.status = Verdict.ROLLBACK_HELD
            self.state.failure = f"{self.state.failure or 'rollback requested'}{HELD}{self.state.rollback_held}"
            self.state.save()
            self.progress.say(f"ROLLBACK HELD: {self.state.rollback_held}")
            return
        ok = ok and self._step(steps[1], self._redeploy_legacy)
        ok = ok and self._step(steps[2], lambda r: self.run_suite("rollback", r))  # RB-01..03
        self.state.rollback_verified = ok
        self.state.status = Verdict.ROLLED_BACK if ok else Verdict.ROLLBACK_FAILED
        if ok:
            self._maintenance_off_after_rollback()

    def _maintenance_off_after_rollback(self) -> None:
        """The verified rollback's last act: the app back for its users (maintenance_off). A hook that fails is a
        red rollback step "maintenance-off" with its line and its own verdict (exit 3), never swallowed: the app
        would go on answering 503 unseen under a "rolled back" verdict."""
        began = time.monotonic()
        try:
            self.target.hooks.maintenance(False)
            self.state.maintenance_off_at = time.time()
            return
        except Exception as exc:  # noqa: BLE001 - a red step with its line, never a traceback
            said = mask_values(safe_message(exc), self._secrets())
        self.state.rollback_phases.append(PhaseRecord(
            "maintenance-off", status=Phase.FAILED, seconds=round(time.monotonic() - began, 2),
            started=datetime.now(UTC).isoformat(timespec="seconds"), detail=said))
        self.state.status = MAINTENANCE_STILL_ON
        self.state.failure = (f"{self.state.failure or 'rollback requested'}; rolled back and verified, but "
                              f"maintenance could NOT be switched off: {said}")
        self.state.save()
        self.progress.say(f"phase maintenance-off: FAILED - {said}")
        self.progress.say("MAINTENANCE STILL ON after the verified rollback: the app shuts its users out; switch it "
                          "off by hand (the maintenance_off hook) and check the app")
        self.notifier.phase("maintenance-off", Phase.FAILED)

    def rollback_plan(self) -> RollbackPlan:
        """Which rollback this run gets and what it would discard, counted now; nothing is changed. Rows written
        since the migration by others than the gate's login are carried back by the rollback SQL where the
        description has one; a restore that would discard them needs an operator's decision (self.decision),
        before go-live as after (before go-live they mean something wrote through maintenance mode)."""
        with db.connect(self.target.dsn, connect_timeout=10) as conn:
            where = schema_state(conn, self.gate)
            deploy = deploytables.survey(conn, self.gate, self._marked()) if where != "legacy" else []
        status = {p.name: p.status for p in self.state.phases}  # a hand-made or older state may lack phases
        went_live = status.get("golive", Phase.PENDING) != Phase.PENDING
        # --discard-writes (a named decision) means restore the backup, even where a rollback SQL would carry rows
        discard = self.decision is not None and bool(self.state.backup)
        if where == "legacy" and discard and self.state.rollback_method == "sql":
            return self._plan_discarding_carried(went_live)
        if where == "legacy":  # never migrated, or a restore of an interrupted rollback already committed
            return RollbackPlan("none", None, 0, None, went_live)
        since = self._count_writes()
        sql_possible = self.gate.rollback_file is not None and where == "migrated"
        use_sql = sql_possible and not discard and (
            self.gate.rollback_method == "sql" or bool(since and since.others))
        if since is None:
            lost = None
        elif use_sql:  # what the rollback SQL has no place for: rows in tables only the new schema has
            carried = {t.new for t in self.gate.tables if not t.partial}
            gone = {f"{self.gate.schema}.{name}" for name in self.gate.removed_tables() if name not in carried}
            lost = sum(t.others for t in since.tables if t.table in gone)
        else:
            lost = since.others
        method = "sql" if use_sql else "restore"
        carry, discard_cost, phi = self._costs(since, sql_possible)
        # a restore drops the deploy's tables with their rows: never silently, even where nothing else counts them
        deploy_lost = [] if use_sql else [t for t in deploy if t.rows]
        held = None
        if self.decision is None and (lost or (lost is None and went_live) or deploy_lost):
            why = ("written while maintenance mode was on (find what ignores it); " if not went_live else "")
            count = ("they cannot be counted (no mark from the migration)" if since is None else
                     f"{lost} changes by others than the gate ({since.summary('others')})")
            in_deploy = ("; of them in the tables the app's deploy created: "
                         f"{deploytables.summary(deploy_lost, method)}" if deploy_lost else "")
            held = (f"{'the rollback SQL' if use_sql else 'restoring the backup'} would discard rows written since "
                    f"the migration: {why}{count}{in_deploy}. Decide: scripts/rollback --run-dir {self.state.run_dir} "
                    "--discard-writes --decided-by NAME"
                    + ("" if sql_possible else ", or set [migration] rollback_file to carry them back"))
        return RollbackPlan(method, since, lost, held, went_live, deploy, carry, discard_cost, phi)

    def _costs(self, since: writes.WritesSince | None, sql_possible: bool
               ) -> tuple[dict[str, int] | None, dict[str, int], carried_rows.CarriedPhi | None]:
        """What carrying would bring back into each legacy table and what the PHI checks say of those rows (read in
        the new tables, before anything changes), and what discarding would lose per table."""
        if since is None or not self.state.write_mark:
            return None, {}, None
        discard = {t.table: t.others for t in since.tables if t.others}
        if not sql_possible:
            return None, discard, None
        try:  # a preview that cannot be read says so; it never stops the rollback it describes
            carried = writes.what_to_carry(self.target.dsn, self.gate,
                                           writes.WriteMark.from_json(self.state.write_mark), since, digest=False)
            carry = {f"{carried.schema}.{t.new} -> {t.legacy}": len(t.written) for t in carried.tables if t.written}
            with db.connect(self.target.dsn, connect_timeout=10) as conn:
                phi = carried_rows.check(conn, PhiCodec(self.target.key), carried, self.gate.new_encrypted_columns(),
                                         side="new")
        except psycopg.Error as exc:
            return {}, discard, carried_rows.CarriedPhi(Result(carried_rows.CHECK, [safe_message(exc)]))
        return carry, discard, phi

    def _plan_discarding_carried(self, went_live: bool) -> RollbackPlan:
        """After a SQL rollback (the database is legacy again, with the rows it carried back): --discard-writes
        restores the backup over it, and what that discards is what the rollback SQL carried (its record)."""
        carried = writes.Carried.load(Path(self.state.carried)) if self.state.carried else None
        if carried is None:
            return RollbackPlan("restore", None, None, None, went_live)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        since = writes.WritesSince(now, now, [writes.TableWrites(f"{carried.schema}.{t.legacy}", len(t.written), None,
                                                                 None) for t in carried.tables if t.written])
        return RollbackPlan("restore", since, since.others, None, went_live,
                            discard={t.table: t.others for t in since.tables})

    def _marked(self) -> set[str] | None:
        """The tables that existed right after the migration (None: the run has no mark)."""
        return set(self.state.write_mark["tables"]) if self.state.write_mark else None

    def preview_rollback(self) -> RollbackPlan:
        """The plan, counted under the cut-over lock: a killed run's leftover sessions (which may hold the locks
        counting needs) are ended first, and no other cut-over is under way."""
        self.acquire_lock()
        try:
            return self.rollback_plan()
        finally:
            self.release_lock()

    def _count_writes(self) -> writes.WritesSince | None:
        if not self.state.write_mark:
            return None
        columns, own_id = writes.attribution(self.gate, self.target.dsn, self.target.api_username)
        return writes.count_since(self.target.dsn, writes.WriteMark.from_json(self.state.write_mark), columns, own_id)

    def _restore_committed(self) -> PhaseRecord | None:
        """An interrupted rollback (its gate killed): the restore's record when it committed, so the rollback
        resumes after it; None when the rollback starts (again) with the restore. It committed when its record
        says passed and the database is on the legacy schema (a restore is one transaction: a killed one left
        the database as it was, and its record says running). Says which, on stderr."""
        before = {r.name: r for r in self.state.rollback_phases}
        if any(r.status in (Phase.FAILED, Phase.HELD) for r in before.values()):  # ended red or held: it starts over
            return None
        stopped = next((r.name for r in self.state.rollback_phases if r.status in (Phase.RUNNING, Phase.PENDING)), None)
        if not stopped:
            return None
        with db.connect(self.target.dsn, connect_timeout=15) as conn:
            where = schema_state(conn, self.gate)
        restore = before.get("restore")
        run = self.run_dir.name
        if restore is not None and restore.status == Phase.PASSED and where == "legacy":
            self.progress.say(f"resuming the interrupted rollback of run {run} at step {stopped}: the restore had "
                              "committed (database is legacy)")
            return restore
        self.progress.say(f"rolling run {run} back again from the restore: its rollback was interrupted at step "
                          f"{stopped} (database is {where})")
        return None

    def _restore(self, record: PhaseRecord) -> bool:
        self.check_lock()
        plan = self.rollback_plan()  # counted with maintenance on: the final figures
        if plan.method == "none":
            record.detail = ("the database is on the legacy schema (the migration never committed, or an interrupted "
                             "rollback's restore did): nothing to restore; the rollback checks verify it")
            return True
        self.state.writes_since = plan.writes.to_json() if plan.writes else None
        self.state.rollback_method = plan.method
        self.state.deploy_tables, self.state.deploy_steps = deploytables.to_json(plan.deploy_tables), []
        if plan.writes:
            self.progress.say(f"written since the migration: {plan.writes.summary()}")
        for line in plan.choice():
            self.progress.say(f"  {line}")
        if plan.deploy_tables:
            self.progress.say("the tables the app's deploy created: "
                              f"{deploytables.summary(plan.deploy_tables, plan.method)}")
        if plan.held:
            self.state.rollback_held = record.detail = plan.held
            return False
        self.state.rollback_held = None
        if self.decision is not None and plan.lost != 0:
            self.state.rollback_decision = self.decision | {
                "at": datetime.now(UTC).isoformat(timespec="seconds"), "method": plan.method,
                "discarded": plan.lost, "what": plan.writes.summary("others") if plan.writes else "not countable",
                "choice": plan.choice()}
            self.state.save()
            self.progress.say(f"DISCARDING {plan.lost if plan.lost is not None else 'an unknown number of'} changes "
                              f"by others, as decided by {self.decision['by']}")
        if plan.method == "sql":
            return self._rollback_sql(record, plan.writes)
        if not self.state.backup:
            raise GateError("no backup was taken in this run: nothing to restore")
        dump = Path(self.state.backup["path"])
        keys = self._backup_keys()
        if not dump.is_file():  # the box lost it: the copy off the box comes back, sha256 checked
            fetch_back(BackupRecord.load(dump, keys.record_key), self.target.hooks, self.run_dir.name)
        restore_in_place(dump, self.target.dsn, keys=keys, timeout_s=self.gate.backup.dump_timeout_seconds,
                         application_name=self.session_tag, expected=self.state.backup)
        self.state.carried = None  # nothing carried: the rollback checks compare with the backup alone
        record.detail = (f"restored {dump.name} (record authenticated, decrypted into pg_restore; the stream's file "
                         "and plaintext sha256 equal to state.json's before COMMIT)")
        return True

    def _backup_keys(self) -> BackupKeys:
        """[backup]'s keys, the record's MAC keyed by this run's PHI key (the target's, not the shell's)."""
        return BackupKeys.from_environment(self.gate.backup, phi_key=self.target.key)

    def _rollback_sql(self, record: PhaseRecord, since: writes.WritesSince | None) -> bool:
        """The rollback file, with every mapped table's keys taken before and proven equal after: the rows
        written since the migration come back into the legacy tables, none lost, none invented."""
        assert self.gate.rollback_file is not None
        carried = None
        if self.state.write_mark and since is not None:
            carried = writes.what_to_carry(self.target.dsn, self.gate,
                                           writes.WriteMark.from_json(self.state.write_mark), since)
            self.state.carried = str(carried.save(self.run_dir / "carried.json"))
            self.state.save()
        prepared: list[tuple[list[deploytables.DeployTable], list[str]]] = []
        marked = self._marked()
        migration.run_file(self.target.dsn, self.gate.rollback_file, self.target.key,
                           lock_timeout=self.gate.lock_timeout,  # the deploy's tables first, in the same transaction
                           before=lambda conn: prepared.append(deploytables.detach_and_drop(conn, self.gate, marked)))
        deploy = ""
        if prepared and prepared[0][0]:
            tables, steps = prepared[0]
            self.state.deploy_tables, self.state.deploy_steps = deploytables.to_json(tables), steps
            self.state.save()
            deploy = f"; the tables the app's deploy created: {deploytables.summary(tables)}"
            for step in steps:
                self.progress.say(f"  before {self.gate.rollback_file.name}: {step}")
        if carried is None:
            record.detail = (f"ran {self.gate.rollback_file.name} (no mark from the migration: rows not verified)"
                             f"{deploy}")
            return True
        problems = writes.verify_carried(self.target.dsn, carried)
        moved = sum(len(t.written) for t in carried.tables)
        record.detail = "; ".join(problems) or (
            f"ran {self.gate.rollback_file.name}: {moved} rows written since the migration carried back; every key "
            f"of {len(carried.tables)} tables verified{deploy}")
        return not problems

    def _redeploy_legacy(self, record: PhaseRecord) -> bool:
        """deploy_legacy_schema brings back the previous release (the new build need not serve the old schema):
        the version that answers afterwards must not be the new release's, and is the legacy one when known."""
        self.target.hooks.deploy(False)
        before = self.state.app_version
        self.state.app_version = None
        result = self._wait_for_app(expect_hipaa=False)
        answered, legacy, new = self.state.app_version, self.state.legacy_app_version, self.state.new_app_version
        if self.state.app_version is None:
            self.state.app_version = before
        if answered and new and answered == new and new != legacy:
            result.add(f"the app answering after deploy_legacy_schema reports version {answered}, the new release: "
                       f"the hook must redeploy the previous release ({legacy or 'its version was not reported'})")
        elif answered and legacy and answered != legacy:
            result.notes.append(f"version {answered} answers, not {legacy} (the release before the window)")
        record.detail = "; ".join(result.problems) or (
            "app healthy on the legacy schema" + (f", version {answered}" if answered else "")
            + (f" ({result.notes[-1]})" if answered and legacy and answered != legacy else ""))
        return result.ok

    def _record_counts(self) -> None:
        """Rows per table: legacy as recorded at backup time, new as the database holds them now."""
        if not self.state.backup:
            return
        with contextlib.suppress(BackupError, psycopg.Error):
            recorded = BackupRecord.load(Path(self.state.backup["path"]),
                                         self._backup_keys().record_key).checksums
            schema = self.gate.schema
            with db.connect(self.target.dsn) as conn:
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
                if self.state.status in (Verdict.GREEN, Verdict.FORCED):
                    self.state.status = Verdict.OVER_LIMIT
                    self.state.failure = (f"downtime {self.state.downtime_minutes:.1f} min exceeds the "
                                          f"{self.gate.downtime_minutes:.0f} min limit")
        self.state.finished = datetime.now(UTC).isoformat(timespec="seconds")
        self.state.save()
        if self.state.status != Verdict.RUNNING:  # a phase command's run (scripts/precheck) goes on: no verdict yet
            self.notifier.verdict(forced_verdict(self.state) if self.state.status == Verdict.FORCED
                                  else self.state.status.upper())

