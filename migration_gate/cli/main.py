"""Command lines behind scripts/: cutover, rehearse, backup, migrate, rollback, emergency, attest. They parse
arguments, call the gate and map its errors to the exit codes in migration_gate.report.verdict (printed by every
--help)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from migration_gate.app.hooks import CutoverTarget, ShellHooks, sigterm_unwinds, target_from_environment
from migration_gate.backup.record import BackupError, sha256_file
from migration_gate.cli.rehearse import main as rehearse_main
from migration_gate.cli.watch import main as watch_main
from migration_gate.config import ConfigError, GateConfig, load_config, load_environment
from migration_gate.config.environment import operator, variable
from migration_gate.core import rundir
from migration_gate.core.errors import GateError, Refused
from migration_gate.core.helptext import epilog
from migration_gate.core.progress import Progress
from migration_gate.core.provenance import gate_version
from migration_gate.core.redact import (
    describe_target,
    failure_line,
    one_line,
    redact_text,
)
from migration_gate.core.status import EMERGENCY_EXITS, Exit, Phase, Verdict
from migration_gate.db import connection as db
from migration_gate.db.migration import MigrationFileError
from migration_gate.db.migration import load as load_migration
from migration_gate.report import bundle, signoff
from migration_gate.report.verdict import finish_run
from migration_gate.run import attest, emergency, forecast, hookrehearsal, preflight
from migration_gate.run.gate import Gate, RollbackPlan
from migration_gate.run.runstate import (
    BUDGET_OF,
    PLAN,
    RunState,
    owner_only,
    recorded_runs,
    schema_state,
    unfinished_runs,
)
from migration_gate.run.watchstate import went_live
from migration_gate.watch import launch

_APP = ("API_BASE_URL", "GATE_API_USERNAME", "GATE_API_PASSWORD", "GATE_API_HEADERS")
NEEDS = {
    "cutover": ("DATABASE_URL", "PHI_ENCRYPTION_KEY", *_APP, "APP_LOG_FILE", "GATE_BACKUP_IDENTITY",
                "GATE_BACKUP_RECIPIENTS", "GATE_REPORTS_DIR"),
    "precheck": ("DATABASE_URL", "PHI_ENCRYPTION_KEY", *_APP, "GATE_REPORTS_DIR"),
    "backup": ("DATABASE_URL", "PHI_ENCRYPTION_KEY", "GATE_BACKUP_IDENTITY", "GATE_BACKUP_RECIPIENTS",
               "GATE_REPORTS_DIR"),
    "migrate": ("DATABASE_URL", "PHI_ENCRYPTION_KEY", "GATE_REPORTS_DIR"),
    "rollback": ("DATABASE_URL", "PHI_ENCRYPTION_KEY", *_APP, "GATE_BACKUP_IDENTITY"),
    "bundle": (),
    "attest": ("DATABASE_URL", "GATE_REPORTS_DIR"),
    "emergency": (),
}


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A command's parser; its help ends with the environment variables that command reads, and the exit codes."""
    name = prog.rsplit("/", 1)[-1]
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog(NEEDS[name]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="migration description (default: migration.toml)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


HANDLED = (ConfigError, MigrationFileError, Refused, GateError, BackupError, psycopg.Error, OSError)


def _failed(name: str, exc: BaseException, otherwise: Exit = Exit.RED, backup_changed: Exit = Exit.RED) -> int:
    """One line on stderr and the documented exit code: 2 usage/configuration, 4 refused, else `otherwise`."""
    if isinstance(exc, ConfigError | MigrationFileError):
        print(f"{name}: {exc}", file=sys.stderr)
        return Exit.USAGE
    if isinstance(exc, Refused):
        print(f"{name}: {exc}", file=sys.stderr)
        return Exit.REFUSED
    print(_one_line(name, exc), file=sys.stderr)
    return backup_changed if isinstance(exc, BackupError) else otherwise


def _one_line(name: str, exc: BaseException) -> str:
    """The error as one redacted line: what failed and why, never a traceback."""
    return f"{name}: {failure_line(exc)}"


def _new_run_dir(reports: Path, kind: str) -> Path:
    return reports / f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"


def _real_target(gate: GateConfig, need_api: bool = True) -> CutoverTarget:
    return target_from_environment(gate, need_api, " (scripts/rehearse runs on the embedded sandbox instead)")


def _environment(target: CutoverTarget, gate: GateConfig) -> dict[str, str]:
    return {"Target": describe_target(target.dsn), "API": target.api_base_url, "Configuration": str(gate.path),
            "Run by": operator(), "Host": os.uname().nodename, "Gate version": gate_version()}


def _resume_or_new(args: argparse.Namespace, gate: GateConfig, target: CutoverTarget, reports: Path,
                   progress: Progress, phases: list[str] | None = None) -> Gate:
    """An interrupted run for this target is resumed (or, with --rollback-interrupted, rolled back); `phases`
    are the ones the command runs (a phase command's), for saying where it resumes."""
    pending = unfinished_runs(reports, describe_target(target.dsn))
    if not pending:
        return Gate(gate, target, _new_run_dir(reports, "cutover"), progress, force=args.force)
    run_dir = pending[-1]
    state = RunState.open(run_dir)
    with db.connect(target.dsn) as conn:
        where = schema_state(conn, gate)
    if where == "mixed":
        raise Refused(f"the database is neither the legacy nor the migrated schema: refusing to resume {run_dir.name}")
    now = sha256_file(gate.migration_file)
    if state.migration_sha256 != now:
        raise Refused(f"the migration file changed since the interrupted run {run_dir.name} started (sha256 "
                      f"{state.migration_sha256[:16]}... recorded, {now[:16]}... now): refusing to resume it (roll "
                      "it back with --rollback-interrupted, or move its folder away)")
    migration_record = state.phase("migration")
    if where == "migrated" and migration_record.status != Phase.PASSED:
        migration_record.status, migration_record.detail = Phase.PASSED, "committed before the interruption"
    elif where == "legacy" and migration_record.status == Phase.RUNNING:
        migration_record.status = Phase.PENDING
    for record in state.phases:
        if record.status == Phase.RUNNING:
            record.status = Phase.PENDING
    state.pid = os.getpid()
    # --force is asked again: a resumed run goes on past red gates only when this invocation says so
    resumed = Gate(gate, target, run_dir, progress, force=args.force, state=state)
    if args.force and not args.rollback_interrupted:
        progress.say(f"--force given again: the resumed run {run_dir.name} goes on past red pre-checks and backup "
                     "checks (in the report)")
    if state.rollback_phases or state.failure:  # it was already red: only the rollback may continue
        progress.say(f"the interrupted run {run_dir.name} had failed ({state.failure}): rolling it back")
        resumed.rollback_only = True
    elif args.rollback_interrupted:
        progress.say(f"rolling back the interrupted run {run_dir.name} (database is {where})")
        resumed.rollback_only = True
    else:
        following = next((r.name for r in state.phases if r.status != Phase.PASSED
                          and (phases is None or r.name in phases)), "sign-off")
        progress.say(f"resuming the interrupted run {run_dir.name} at phase {following} (database is {where})")
    return resumed


def cutover(argv: list[str] | None = None) -> int:
    parser = _parser("scripts/cutover", "Run the migration day against the target in the environment: "
                                        "pre-checks, maintenance, backup, migration, integrity, deploy, post-checks, "
                                        "go-live, sign-off; roll back by itself when a gate after the migration fails.")
    parser.add_argument("--force", action="store_true",
                        help="go on past red pre-checks and red backup checks (a backup must still have been taken); "
                             "recorded in the report, and the run ends FORCED (exit 5), never GREEN; also past "
                             "missing [[people]] attestations and a missing, red or stale hooks rehearsal (recorded "
                             "in the run). It never skips "
                             "the pre-flight, maintenance, or the checks after the migration; a resumed run needs it "
                             "again")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and check the inputs; change nothing")
    parser.add_argument("--rollback-interrupted", action="store_true",
                        help="roll back an interrupted run instead of resuming it")
    parser.add_argument("--rehearse-hooks", action="store_true",
                        help="against the target in the environment (staging, never production): call every "
                             "configured hook with a test payload and verify it (maintenance on and off, deploy new "
                             "and legacy, a test file stored and fetched back, a test notify and alert); recorded in "
                             f"the reports folder's {rundir.HOOKS_REHEARSAL}, which a cut-over's pre-flight requires "
                             "green and younger than [hooks] rehearsal_max_age_hours. Changes no data")
    parser.add_argument("--accept-forecast", action="store_true",
                        help="start (or pass the dry run) although the forecast of the window breaks a budget "
                             "([budgets]); recorded in the run and its sign-off")
    args = parser.parse_args(argv)
    progress = Progress(quiet=args.quiet or args.json)
    try:
        gate = load_config(args.config)
        target = _real_target(gate)
        reports = load_environment().reports_dir
        if args.rehearse_hooks:
            return rehearse_hooks(gate, target, reports, args, progress)
        if args.dry_run:
            return dry_run(gate, target, args, reports)
        runner = _resume_or_new(args, gate, target, reports, progress)
        runner.forecast_policy = "accept" if args.accept_forecast else "refuse"
        if not runner.rollback_only and runner.state.maintenance_on_at is None:  # new, or resumed before the window
            _preflight_or_refuse(gate, target, runner.run_dir, progress, force=args.force,
                                 then=runner.forecast_at_start)
        state = runner.run_rollback_only() if runner.rollback_only else runner.run()
    except HANDLED as exc:
        return _failed("cutover", exc)
    # live: the 48 hours after go-live start now, the watch started or its command printed ([watch] after_golive),
    # before the sign-off, which says which
    watch_lines = launch.start_after_golive(gate, Path(state.run_dir)) if went_live(state) else []
    code = finish_run(args, gate, state, _environment(target, gate))
    for line in watch_lines:
        print(line, file=sys.stderr if args.json else sys.stdout)
    return code


def _preflight_or_refuse(gate: GateConfig, target: CutoverTarget, run_dir: Path, progress: Progress,
                         force: bool = False, then: Callable[[], None] | None = None) -> None:
    """Before maintenance goes on: every input a later phase needs, or a refusal listing what is missing. Missing
    attestations ([[people]]) may be overridden with --force: recorded in the run, said in the sign-off. `then`
    (the forecast) runs once the inputs are ready and before the pending attestations move into the run, so its
    refusal leaves them pending for the next attempt."""
    progress.say("pre-flight: checking every input the cut-over will need")
    inputs = preflight.check_inputs(gate, target, run_dir.parent, run_dir)
    lines = preflight.missing([i for i in inputs if not (force and i.name in preflight.FORCEABLE)])
    if lines:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # an empty folder, not a run to resume
        raise Refused(f"refusing to start: {len(lines)} inputs missing or unusable, nothing was changed"
                      + "".join(f"\n  - {line}" for line in lines))
    progress.say(f"pre-flight: {len(inputs)} inputs ready")
    if then is not None:
        then()
    rehearsal = next(i for i in inputs if i.name == preflight.HOOKS_REHEARSAL)
    if hookrehearsal.keep_in_run(run_dir, rehearsal.missing, operator()):
        progress.say("FORCED: starting without a valid hooks rehearsal (in the report): "
                     + "; ".join(rehearsal.missing))
    forced = attest.missing_required(gate, attest.collected(run_dir, run_dir.parent, describe_target(target.dsn)))
    if forced:
        attest.record_override(run_dir, forced, operator())
        progress.say(f"FORCED: starting although {', '.join(i.id for i in forced)} not attested (in the report)")
    attest.adopt_pending(run_dir.parent, run_dir, describe_target(target.dsn))


def rehearse_hooks(gate: GateConfig, target: CutoverTarget, reports: Path, args: argparse.Namespace,
                   progress: Progress) -> int:
    """scripts/cutover --rehearse-hooks: one line per hook (outcome, seconds, what was seen); exit 0 green, 1 red."""
    record = hookrehearsal.rehearse(gate, target, reports, progress)
    if args.json:
        print(json.dumps(dataclasses.asdict(record) | {"ok": record.ok}, indent=2))
    else:
        print(f"Hooks rehearsal against {record.target} at {record.at}:")
        for step in record.steps:
            print(f"  {step.line()}")
        print(f"GREEN: every configured hook did what it should (recorded in {rundir.hooks_rehearsal_file(reports)})"
              if record.ok else f"RED: {', '.join(s.hook for s in record.failed) or 'a required hook was not called'}"
              f" (recorded in {rundir.hooks_rehearsal_file(reports)}; the cut-over's pre-flight refuses until a "
              "rehearsal is green)")
    return hookrehearsal.exit_code(record)


def dry_run(gate: GateConfig, target: CutoverTarget, args: argparse.Namespace, reports: Path) -> int:
    """The plan, every input checked as the cut-over would check it, and the window's forecast against the
    budgets; nothing is changed. Exit 0 when the cut-over could start, 4 when an input is missing (the list says
    which) or the forecast breaks a budget (named; --accept-forecast passes it)."""
    steps = load_migration(gate.migration_file)
    try:
        sizes = forecast.measure(target.dsn, gate)
    except psycopg.Error:  # the inputs below say why the target cannot be reached
        sizes = None
    window = forecast.make(gate, reports, sha256_file(gate.migration_file), sizes)
    breaks = window.breaks()
    refused = bool(breaks) and not args.accept_forecast
    inputs = preflight.check_inputs(gate, target, reports, attest.open_run(reports, describe_target(target.dsn)))
    lines = preflight.missing([i for i in inputs if not (args.force and i.name in preflight.FORCEABLE)])
    plan = {"target": describe_target(target.dsn), "migration_file": str(gate.migration_file),
            "statements": sum(s.kind == "sql" for s in steps),
            "data_steps": [s.text for s in steps if s.kind == "data"], "rollback": gate.rollback_method,
            "phases": [{"name": p, "timebox": BUDGET_OF[p], "budget_minutes": gate.phase_minutes.get(BUDGET_OF[p])}
                       for p in PLAN],
            "downtime_limit_minutes": gate.downtime_minutes, "hooks": sorted(gate.hooks),
            "backup_folder": str(reports / "<run>" / "backup"),
            "inputs": [{"name": i.name, "ok": i.ok, "found": i.found, "missing": i.missing} for i in inputs],
            "forecast": window.to_json(), "forecast_accepted": bool(breaks) and args.accept_forecast,
            "ready": not lines and not refused}
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        print(f"Dry run against {plan['target']}: nothing was changed")
        print(f"  migration {gate.migration_file.name}: {plan['statements']} statements, data steps "
              f"{', '.join(plan['data_steps']) or 'none'}; rollback by {gate.rollback_method}")
        for phase in plan["phases"]:
            budget = phase["budget_minutes"]
            print(f"  phase {phase['name']:<14} timebox {phase['timebox']}"
                  + (f" ({budget:g} min)" if budget is not None else ""))
        print(f"  downtime limit {gate.downtime_minutes:g} min; backup into {plan['backup_folder']}")
        print("  hooks: " + (", ".join(f"{k} = {redact_text(v)[:60]}" for k, v in sorted(gate.hooks.items()))
                             or "none configured"))
        print("Inputs:")
        for item in inputs:
            print(f"  {'ready  ' if item.ok else 'MISSING'} {item.name}: {item.found}" if item.ok else
                  "\n".join(f"  MISSING {line}" for line in item.missing))
        print("\n".join(window.lines()))
        for line in breaks:
            print(f"  BREAKS {line}" + (" (accepted: --accept-forecast)" if args.accept_forecast else ""))
        if lines:
            print(f"Not ready: {len(lines)} inputs missing; the cut-over would refuse before maintenance.")
        elif refused:
            print(f"Not ready: the forecast breaks {len(breaks)} budget(s); the cut-over would refuse before "
                  "maintenance (--accept-forecast starts anyway, recorded in the run)")
        else:
            print("Ready: the cut-over can start.")
    return Exit.GREEN if plan["ready"] else Exit.REFUSED


PHASE_COMMANDS = {
    "precheck": (["premigration"], "Run the pre-migration checks against the target and record them in a run."),
    "backup": (["backup"], "Back up the target (pg_dump custom format, owner-only file, sha256 and versions "
                           "recorded), then run the backup checks."),
    "migrate": (["migration"], "Run the migration file in one transaction (lock_timeout, statement_timeout, "
                               "progress per statement). Refuses unless this run's pre-checks, maintenance and "
                               "backup are green and the backup is unchanged (--force overrides, and the report "
                               "says so). A failed migration changes nothing."),
}


def _red_prechecks_note(runner: Gate, reports: Path) -> str | None:
    """What a backup does with red pre-checks: it is taken either way, and migrate refuses until they are green."""
    own = runner.state.phase("premigration")
    run = Path(runner.state.run_dir).name
    if own.status == Phase.FAILED:
        return (f"run {run}'s pre-checks are red: this backup is recorded in it, and scripts/migrate refuses "
                f"until they are green (scripts/precheck --run-dir {runner.state.run_dir}) or with --force")
    if own.status != Phase.PENDING:
        return None
    earlier = [r for _, r in recorded_runs(reports, runner.state.target) if Path(r.run_dir).name != run]
    if earlier and any(p.name == "premigration" and p.status == Phase.FAILED for p in earlier[-1].phases):
        return (f"the latest run {Path(earlier[-1].run_dir).name} ended with red pre-checks: this backup goes into a "
                f"new run {run}, whose pre-checks have not run; scripts/migrate refuses until they are green there "
                f"(scripts/precheck --run-dir {runner.state.run_dir}) or with --force")
    return None


def phase_command(name: str, argv: list[str] | None = None) -> int:
    """One or more phases of a cut-over run, recorded in its run folder (the next command continues it)."""
    phases, description = PHASE_COMMANDS[name]
    parser = _parser(f"scripts/{name}", description)
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="the run to record into (default: the unfinished run for this target, or a new one)")
    if name == "migrate":
        parser.add_argument("--force", action="store_true",
                            help="migrate even when this run's pre-checks, maintenance or backup are not green "
                                 "(recorded in the report); never without an unchanged backup")
    args = parser.parse_args(argv)
    args.rollback_interrupted = False
    args.force = getattr(args, "force", False)
    progress = Progress(quiet=args.quiet or args.json)
    try:
        gate = load_config(args.config)
        target = _real_target(gate, need_api=name == "precheck")
        reports = load_environment().reports_dir
        if args.run_dir:
            state = RunState.open(args.run_dir) if rundir.state_file(args.run_dir).exists() else None
            runner = Gate(gate, target, args.run_dir, progress, force=args.force, state=state)
        else:
            runner = _resume_or_new(args, gate, target, reports, progress, phases)
        if name == "backup":
            note = _red_prechecks_note(runner, reports)
            if note:
                print(f"backup: {note}", file=sys.stderr)
        state = runner.run(only=phases)
    except HANDLED as exc:
        return _failed(name, exc)
    records = [state.phase(p) for p in phases]
    ok = all(r.status == Phase.PASSED for r in records)
    if args.json:
        print(json.dumps({"ok": ok, "run_dir": state.run_dir, "phases": [dataclasses.asdict(r) for r in records],
                          "backup": state.backup}, indent=2))
    else:
        for record in records:
            print(f"{record.name}: {record.status.upper()} in {record.seconds or 0:.1f} s - {record.detail or ''}")
        print(f"run folder: {state.run_dir}")
    return Exit.GREEN if ok else Exit.RED


def _nothing_to_roll_back(state: RunState, gate: GateConfig, target: CutoverTarget) -> str | None:
    """A run that never migrated, on a database still on the legacy schema, has nothing to undo: say so and
    leave its record as it is (rolling back would switch maintenance on and mark a harmless run failed)."""
    migrated = any(p.name == "migration" and p.status in (Phase.PASSED, Phase.RUNNING) for p in state.phases)
    if migrated or (state.maintenance_on_at and not state.maintenance_off_at):  # maintenance must come off too
        return None
    with db.connect(target.dsn, connect_timeout=10) as conn:
        where = schema_state(conn, gate)
    if where != "legacy":
        return None
    return (f"run {Path(state.run_dir).name} never migrated and the database is on the legacy schema: nothing to "
            "roll back (its record is left as it was)")


def rollback_command(argv: list[str] | None = None) -> int:
    parser = _parser("scripts/rollback", "Restore the verified backup of a run (or run the rollback SQL when "
                                         "[migration] rollback_method = 'sql'), put the app back on the legacy "
                                         "schema and run the rollback checks. Refuses a backup whose sha256 no "
                                         "longer matches.")
    parser.add_argument("--run-dir", type=Path, required=True, help="the cut-over run whose backup to restore")
    parser.add_argument("--dry-run", action="store_true",
                        help="say how the rollback would go and what it would discard (rows written since the "
                             "migration, per table), counted now; change nothing")
    parser.add_argument("--discard-writes", action="store_true",
                        help="restore the backup even though that discards rows others wrote since the migration "
                             "(after go-live: the users'), also where a rollback SQL would carry them back (or has "
                             "carried them: corrupt rows); without it a restore that discards rows refuses. Needs "
                             "--decided-by")
    parser.add_argument("--decided-by", metavar="NAME", default="",
                        help="who decided to discard them (recorded with the counts in the run and the sign-off)")
    parser.add_argument("--reason", default="", help="why, in a few words (recorded)")
    args = parser.parse_args(argv)
    if args.discard_writes and not args.decided_by.strip():
        print("rollback: --discard-writes needs --decided-by NAME (the decision is recorded with who made it)",
              file=sys.stderr)
        return Exit.USAGE
    progress = Progress(quiet=args.quiet or args.json)
    try:
        gate = load_config(args.config)
        target = _real_target(gate)
        state = RunState.open(args.run_dir)
        if state.target != describe_target(target.dsn):
            raise Refused(f"{args.run_dir.name} is a run against {state.target}, not {describe_target(target.dsn)}: "
                          "refusing to restore its backup here")
        nothing = _nothing_to_roll_back(state, gate, target)
        if nothing:
            print(f"rollback: {nothing}")
            return Exit.GREEN
        runner = Gate(gate, target, args.run_dir, progress, state=state)
        if args.discard_writes:
            runner.decision = {"by": one_line(args.decided_by.strip()), "reason": one_line(args.reason.strip())}
        plan = runner.preview_rollback()
        if args.dry_run:
            return _print_plan(args, plan)
        if plan.held:
            raise Refused(f"refusing to roll back, nothing was changed: {plan.held}")
        state = runner.run_rollback_only()
    except HANDLED as exc:
        return _failed("rollback", exc, otherwise=Exit.HUMAN, backup_changed=Exit.REFUSED)
    code = finish_run(args, gate, state, _environment(target, gate))
    # what this command was asked for, done and verified, is a success (as "nothing to roll back" is)
    return Exit.GREEN if state.status == Verdict.ROLLED_BACK and state.rollback_verified else code


def _print_plan(args: argparse.Namespace, plan: RollbackPlan) -> int:
    """The dry run of a rollback: its method and what it would discard; exit 4 when it would refuse."""
    if args.json:
        print(json.dumps({"method": plan.method, "went_live": plan.went_live, "discarded": plan.lost,
                          "held": plan.held, "writes_since": plan.writes.to_json() if plan.writes else None,
                          "deploy_tables": [t.line(plan.method) for t in plan.deploy_tables],
                          "carry": plan.carry, "discard": plan.discard,
                          "carried_failing": None if plan.carried_phi is None else {
                              "rows": plan.carried_phi.carried, "failing": plan.carried_phi.failing,
                              "first_ids": plan.carried_phi.ids, "problems": plan.carried_phi.result.problems}},
                         indent=2))
    else:
        print(f"Dry run, nothing was changed: the rollback would {plan.describe()}")
        choice = plan.choice()
        if choice:
            print("The rows written since the migration, either way:")
            for line in choice:
                print(f"  {line}")
        if plan.held:
            print(f"It would refuse: {plan.held}")
    return Exit.REFUSED if plan.held else Exit.GREEN


def emergency_command(argv: list[str] | None = None) -> int:
    """scripts/emergency: maintenance on or off now, through the configured hook, recorded in the run."""
    parser = argparse.ArgumentParser(
        prog="scripts/emergency", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Emergency procedures: switch maintenance mode on (users stopped at once: corruption found "
                    "after go-live, while the rollback is decided) or off again, through the configured [hooks] "
                    "maintenance_on / maintenance_off, without a rollback and without waiting for the cut-over's "
                    "lock. Recorded in the run (who, why, when, what the hook said, also when it failed) in "
                    f"{rundir.EMERGENCY}; the sign-off lists it.",
        epilog=epilog(NEEDS["emergency"], exits=EMERGENCY_EXITS, title="Exit codes:"))
    parser.add_argument("action", choices=list(emergency.ACTIONS), help="maintenance-on or maintenance-off")
    parser.add_argument("--run-dir", type=Path, required=True, help="the cut-over run to record the switch in")
    parser.add_argument("--by", metavar="NAME", required=True, help="who switches (recorded)")
    parser.add_argument("--why", metavar="TEXT", required=True, help="why, in a few words, never PHI (recorded)")
    parser.add_argument("--dry-run", action="store_true", help="say which hook it would call; change and record "
                                                               "nothing")
    parser.add_argument("--config", type=Path, default=None, help="migration description (default: migration.toml)")
    parser.add_argument("--json", action="store_true", help="print the recorded switch on stdout as JSON")
    args = parser.parse_args(argv)
    try:
        gate = load_config(args.config)
        emergency.check_request(args.run_dir, args.action, args.by, args.why)
        hook = "maintenance_on" if emergency.ACTIONS[args.action] else "maintenance_off"
        if not (gate.hooks.get(hook) or "").strip():
            raise ConfigError(f"no [hooks] {hook} command configured")
        if args.dry_run:
            print(f"Dry run, nothing was changed or recorded: would call [hooks] {hook} now and record it in "
                  f"{rundir.emergency_file(args.run_dir)}")
            return Exit.GREEN
        hooks = ShellHooks(gate.hooks, timeout=gate.hook_timeout_seconds, pass_env=gate.hook_pass_env)
        done = emergency.switch(hooks, args.run_dir, args.action, args.by, args.why)
        if (args.run_dir / rundir.SIGNOFF).is_file():  # a finished run's page lists it now (best effort: the
            with contextlib.suppress(Exception):          # record above stands whatever the page does)
                signoff.rewrite(args.run_dir, gate)
    except HANDLED as exc:
        return _failed("emergency", exc)
    if args.json:
        print(json.dumps(dataclasses.asdict(done), indent=2))
    else:
        print(f"emergency: {done.line()} (recorded in {rundir.emergency_file(args.run_dir)})",
              file=sys.stdout if done.ok else sys.stderr)
    return Exit.GREEN if done.ok else Exit.RED


def bundle_command(argv: list[str] | None = None) -> int:
    parser = _parser("scripts/bundle", "Build the run's attachable record: its sign-off, phase reports and results "
                                       "in one zip with a manifest of sha256s. The backup and the sandbox's working "
                                       "folder stay behind; every link of the sign-off works once unpacked.")
    parser.add_argument("--run-dir", type=Path, required=True, help="the run folder (reports/cutover-...)")
    parser.add_argument("--out", type=Path, default=None, help="the zip to write (default: <run folder>.zip)")
    args = parser.parse_args(argv)
    try:
        out = bundle.build(args.run_dir, args.out)
    except OSError as exc:
        print(_one_line("bundle", exc), file=sys.stderr)
        return Exit.USAGE if isinstance(exc, FileNotFoundError) else Exit.RED
    print(json.dumps({"bundle": str(out)}) if args.json else f"bundle: {out}")
    return Exit.GREEN


def attest_command(argv: list[str] | None = None) -> int:
    """scripts/attest: record who attests a checklist item ([[people]]), or list the items and their status."""
    parser = _parser("scripts/attest", "Record that a human item of the checklist ([[people]] in migration.toml) is "
                                       "done: who, when (UTC) and an optional note, never PHI. It goes into the "
                                       "target's unfinished cut-over run, else into the reports folder's "
                                       f"{attest.PENDING_FILE}, which the next cut-over takes in (attest the day "
                                       "before and it counts). The cut-over refuses while a required item is "
                                       "missing.")
    parser.add_argument("item", nargs="?", metavar="ITEM", help="the item's id (scripts/attest --list shows them)")
    parser.add_argument("--by", metavar="NAME", default=None, help="who attests (recorded; a name, never a uid)")
    parser.add_argument("--note", metavar="TEXT", default="", help="a short note, e.g. where the list is kept")
    parser.add_argument("--name", metavar="NAME", default="",
                        help="the person the item names: the rollback decision maker (default: --by)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="the run to record into or list (default: the target's unfinished run, else pending)")
    parser.add_argument("--list", action="store_true", help="show every item and whether it is attested")
    args = parser.parse_args(argv)
    try:
        gate = load_config(args.config)
        target = attest.describe_target_env()
        reports = Path(variable("GATE_REPORTS_DIR") or load_environment({}).reports_dir)
        if args.run_dir is not None and not rundir.state_file(args.run_dir).is_file():
            raise ConfigError(f"{args.run_dir} is not a run folder (no {rundir.STATE})")
        if args.list:
            return _list_attestations(args, gate, reports, target)
        if not args.item:
            raise ConfigError("name the ITEM to attest (scripts/attest --list shows them)")
        if args.by is None or not args.by.strip():
            raise ConfigError("--by NAME is required: an attestation records who made it")
        entry, path = attest.record(gate, args.item, args.by, args.note, args.name, run_dir=args.run_dir,
                                    reports=reports, target=target)
    except HANDLED as exc:
        return _failed("attest", exc)
    if args.json:
        print(json.dumps({"recorded": dataclasses.asdict(entry), "file": str(path)}, indent=2))
    elif not args.quiet:
        print(f"attested {entry.item} by {entry.by} at {entry.at}" + (f" (names {entry.name})" if entry.name else "")
              + f": recorded in {path}")
    return Exit.GREEN


def _list_attestations(args: argparse.Namespace, gate: GateConfig, reports: Path, target: str | None) -> int:
    """Every item, attested or not, for the run an attestation would go into (or --run-dir) and the pending file."""
    run_dir = args.run_dir or attest.open_run(reports, target)
    entries = attest.collected(run_dir, None if args.run_dir else reports, target)
    rows = attest.status(gate, entries)
    missing = [i.id for i in attest.missing_required(gate, entries)]
    where = str(run_dir) if run_dir else f"{reports / attest.PENDING_FILE} (no unfinished run)"
    if args.json:
        print(json.dumps({"target": target, "run_dir": str(run_dir) if run_dir else None, "items": rows,
                          "missing_required": missing, "ready": not missing}, indent=2))
        return Exit.GREEN
    print(f"Checklist (people) for {target or 'any target (DATABASE_URL not set)'}; recording into {where}:")
    for row in rows:
        done = row["attestation"]
        when = "required before the cut-over" if row["required_before_cutover"] else "after the cut-over"
        print(f"  {'done   ' if done else ('MISSING' if row['required_before_cutover'] else 'open   ')} "
              f"{row['id']:<24} {row['text']} ({when})")
        if done:
            print(f"          by {done['by']} at {done['at']}" + (f", names {done['name']}" if done.get("name") else "")
                  + (f": {done['note']}" if done.get("note") else ""))
    print("Ready: every required item is attested." if not missing else
          f"Not ready: {', '.join(missing)} not attested; the cut-over refuses until they are (or --force).")
    return Exit.GREEN


def main(argv: list[str] | None = None) -> int:
    owner_only()
    argv = sys.argv[1:] if argv is None else argv
    names = ["cutover", "rehearse", *PHASE_COMMANDS, "rollback", "emergency", "attest", "bundle", "watch"]
    if not argv or argv[0] not in names:
        called = "migration-gate" if Path(sys.argv[0]).name == "migration-gate" else "python -m migration_gate.cli"
        print(f"usage: {called} {{{','.join(names)}}} [--help]", file=sys.stderr)
        return Exit.USAGE
    name, rest = argv[0], argv[1:]
    if name == "rehearse":
        return rehearse_main(rest)
    if name == "watch":
        return watch_main(rest)
    if name in PHASE_COMMANDS:
        return phase_command(name, rest)
    return {"cutover": cutover, "rollback": rollback_command, "emergency": emergency_command,
            "attest": attest_command, "bundle": bundle_command}[name](rest)


def console() -> int:
    """`migration-gate <command>` (pyproject [project.scripts]) and `python -m migration_gate.cli <command>`:
    SIGTERM stops the run as Ctrl-C does (state kept, a running hook's group killed), and either is one line."""
    try:
        with sigterm_unwinds():
            return main()
    except KeyboardInterrupt:
        print("interrupted: the run's state is kept in its folder; run the same command again to resume or roll "
              "back", file=sys.stderr)
        return Exit.INTERRUPTED


if __name__ == "__main__":
    sys.exit(console())
