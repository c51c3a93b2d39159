"""The gate end to end on the sandbox: a clean cut-over is green with a sign-off; a migration broken at each
phase ends red at that phase with a verified rollback and the database equal to its state before; an
interrupted migration never leaves a half-migrated database, and the next invocation resumes; a second
cut-over against the same database refuses."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from migration_gate.app.hooks import CutoverTarget, ShellHooks
from migration_gate.backup import sha256_file
from migration_gate.cli.main import _resume_or_new
from migration_gate.config import load_config
from migration_gate.core.errors import GateError, Refused
from migration_gate.core.phi import PhiCodec
from migration_gate.core.progress import Progress
from migration_gate.core.status import EXIT_OF
from migration_gate.db import migration
from migration_gate.report.verdict import finish_run
from migration_gate.run.gate import LOCK_KEY, Gate
from migration_gate.run.runstate import PhaseRecord, RunState, budget_report, schema_state
from sandbox.api_process import SandboxHooks
from sandbox.synthetic import SANDBOX_KEY
from sandbox.target import Sandbox
from tests.conftest import MIGRATION, ROOT
from tests.support import cutover
from tests.support.cutover import (
    BROKEN,
    broken_migration,
    config_with_store,
    cutover_target,
    gate_cli,
    legacy_snapshot,
    run_gate,
)
from tests.support.decoy_output import DECOY
from tests.support.waivers import YESTERDAY, description, waiver

sandbox = cutover.sandbox  # the fixture: a seeded sandbox for each test


class FailingHooks(SandboxHooks):
    def __init__(self, api, fail_on: str) -> None:
        super().__init__(api)
        self.fail_on = fail_on

    def deploy(self, use_hipaa_schema: bool) -> None:
        if self.fail_on == "deploy" and use_hipaa_schema:
            self.api.restart(use_hipaa_schema=False)  # the host kept the old flag
            return
        super().deploy(use_hipaa_schema)

    def maintenance(self, on: bool) -> None:
        if self.fail_on == "golive" and not on and not getattr(self, "failed_once", False):
            self.failed_once = True
            raise GateError("the host's API refused to switch maintenance off")
        super().maintenance(on)


class SameBuildHooks(SandboxHooks):
    """A host whose legacy deploy only flips the flag on the NEW build, instead of bringing back the previous
    release (the real app's new build exits 1 on the legacy schema; ours answers with the new release's version)."""

    def deploy(self, use_hipaa_schema: bool) -> None:
        if not use_hipaa_schema:
            self.api.extra_env["APP_COMMIT"] = "sandbox-hipaa"
        super().deploy(use_hipaa_schema)


def test_a_rollback_whose_legacy_deploy_brings_back_the_new_release_is_red(sandbox: Sandbox, tmp_path: Path) -> None:
    """The legacy side is the previous release, redeployed: the version answering after the rollback's deploy must
    not be the one the forward deploy brought (recorded before the window: the release that served legacy)."""
    broken = broken_migration(tmp_path, BROKEN["postmigration"][0])
    state = run_gate(sandbox, tmp_path / "run", broken, SameBuildHooks(sandbox.api))
    assert state.legacy_app_version == "sandbox-legacy" and state.new_app_version == "sandbox-hipaa"
    redeploy = next(p for p in state.rollback_phases if p.name == "redeploy-legacy")
    assert redeploy.status == "failed", redeploy
    assert ("reports version sandbox-hipaa, the new release: the hook must redeploy the previous release "
            "(sandbox-legacy)") in redeploy.detail, redeploy.detail
    assert state.status != "rolled-back"


@pytest.mark.parametrize("phase", list(BROKEN))
def test_a_cut_over_broken_at_each_phase_ends_red_there_with_a_verified_rollback(sandbox: Sandbox, tmp_path: Path,
                                                                                   phase: str) -> None:
    before = legacy_snapshot(sandbox.dsn, audit=False)
    sql, hook = BROKEN[phase]
    broken = broken_migration(tmp_path, sql) if sql else None
    hooks = FailingHooks(sandbox.api, hook) if hook else None
    state = run_gate(sandbox, tmp_path / "run", broken, hooks)
    assert state.status == "rolled-back", (state.status, state.failure)
    assert state.failure.startswith(f"phase {phase} failed")
    statuses = {p.name: p.status for p in state.phases}
    assert statuses[phase] == "failed"
    assert all(statuses[p] == "passed" for p in list(statuses)[:list(statuses).index(phase)])
    assert state.rollback_verified is True
    assert [p.status for p in state.rollback_phases] == ["passed", "passed", "passed"]
    assert legacy_snapshot(sandbox.dsn, audit=False) == before, \
        "the database differs from its state before the cut-over"
    assert state.phase("rollback").status == "passed"  # RB-02: every table equal to the backup's record
    if phase == "deploy":  # the app never turned healthy: the checklist's diagnosis, in order, then the rollback
        assert_diagnosed(state, tmp_path / "run")
    else:
        assert state.deploy_diagnosis == []


def assert_diagnosed(state: RunState, run_dir: Path) -> None:
    """The host kept the old flag: the diagnosis records what the app reports, its log lines since the deploy, the
    app's role answering the smoke queries, and the previous release still answering; then the rollback."""
    from migration_gate.report import signoff
    (found,) = state.deploy_diagnosis
    steps = {step["step"]: step for step in found["steps"]}
    assert list(steps) == ["environment", "logs", "database", "version"]
    environment, logs, database, version = steps.values()
    assert environment["ok"] is False and environment["facts"]["config.useHipaaSchema"] is False, environment
    assert "/health 503" in environment["detail"] and "config.useHipaaSchema false" in environment["detail"]
    assert logs["facts"]["lines"] > 0 and f"api.log (jsonl): {logs['facts']['lines']} lines since" in logs["detail"]
    assert database["ok"] is True and database["facts"]["role"] == "app_user", database
    assert database["detail"].startswith("the database answers as app_user: 5 of 5 smoke queries ran")
    assert version["ok"] is False and "version sandbox-legacy answers" in version["detail"], version
    assert "it is the previous release (sandbox-legacy): the deploy did not replace the running app" in \
        version["detail"]
    assert (found["decision"], found["why"]) == ("rollback", "rolling back: [deploy] retries = 0 (no redeploy "
                                                 "allowed)")
    assert "rolling back: [deploy] retries = 0" in state.phase("deploy").detail
    report = signoff.write(state, run_dir, {"Target": "sandbox"}).read_text()
    assert "Deploy diagnosis: the app did not turn healthy" in report and "sandbox-legacy answers" in report


class FlakyDeployHooks(SandboxHooks):
    """A host whose first deploy of the new app keeps the old flag; the second one takes."""

    def deploy(self, use_hipaa_schema: bool) -> None:
        if use_hipaa_schema and not getattr(self, "failed_once", False):
            self.failed_once = True
            self.api.restart(use_hipaa_schema=False)
            return
        super().deploy(use_hipaa_schema)


def test_with_one_retry_a_deploy_that_did_not_take_is_diagnosed_then_redeployed_once(sandbox: Sandbox,
                                                                                       tmp_path: Path) -> None:
    """[deploy] retries = 1: the diagnosis first, then one redeploy recorded with why; the redeployed app goes on
    (its log lines are read from the redeploy on) and the cut-over is green."""
    state = run_gate(sandbox, tmp_path / "run", hooks=FlakyDeployHooks(sandbox.api), deploy_retries=1)
    assert state.status == "green", state.failure
    (found,) = state.deploy_diagnosis
    assert [step["step"] for step in found["steps"]] == ["environment", "logs", "database", "version"]
    assert found["decision"] == "redeploy" and found["why"].startswith("redeploying once ([deploy] retries = 1")
    assert "app healthy with useHipaaSchema true" in state.phase("deploy").detail
    assert "redeployed once: redeploying once ([deploy] retries = 1, 0 used)" in state.phase("deploy").detail
    assert state.new_app_version == "sandbox-hipaa"


def test_a_new_app_that_drops_a_field_and_swaps_a_session_is_red_at_the_post_checks(sandbox: Sandbox,
                                                                                    tmp_path: Path) -> None:
    """Shapes and counts stay right (POST-09 green): only the answers compared record by record (POST-19) show
    the deployed app dropping a field and listing another patient's session; the cut-over rolls back."""
    gate = load_config()
    with psycopg.connect(sandbox.dsn) as conn:  # the fixture user's first session: on the recorded first page
        (session,) = conn.execute("SELECT min(s.id) FROM sessions_hipaa s JOIN users_auth u ON u.id = s.therapist_id "
                                  "WHERE u.username = %s", (gate.sandbox_username,)).fetchone()
    # the new app (the sandbox's API started on the new schema at the deploy) is the broken one
    sandbox.api.extra_env["SANDBOX_API_FAULTS"] = f"drop-field:/api/patients:patientDob,swap-session:{session}"
    before = legacy_snapshot(sandbox.dsn, audit=False)
    state = run_gate(sandbox, tmp_path / "run")
    assert state.status == "rolled-back" and state.failure.startswith("phase postmigration failed"), state.failure
    results = json.loads((tmp_path / "run" / "postmigration" / "criteria-postmigration.json").read_text())
    red = {t["criterion"]: t.get("problems", []) for t in results["tests"] if t["outcome"] != "passed"}
    assert set(red) == {"POST-19"}, red
    problems = " ".join(red["POST-19"])
    assert "GET /api/patients record " in problems and ": field patientDob missing" in problems, problems
    assert f"GET /api/clinical-sessions record {session}: missing" in problems, problems
    assert legacy_snapshot(sandbox.dsn, audit=False) == before and state.rollback_verified


def test_a_failing_pre_check_stops_before_anything_changes(sandbox: Sandbox, tmp_path: Path) -> None:
    with psycopg.connect(sandbox.dsn, autocommit=True) as conn:
        conn.execute("UPDATE clients_hipaa SET email_encrypted = 'jane@example.com' WHERE id = 1")
    before = legacy_snapshot(sandbox.dsn, audit=False)
    state = run_gate(sandbox, tmp_path / "run")
    assert state.status == "red" and state.phases[0].status == "failed"
    assert [p.status for p in state.phases[1:]] == ["pending"] * 7
    assert legacy_snapshot(sandbox.dsn, audit=False) == before


def test_force_goes_past_a_red_pre_check_and_nothing_else(sandbox: Sandbox, tmp_path: Path) -> None:
    """--force overrides the pre-check gate: the run migrates; the post-migration checks still catch the
    plaintext it let through, and roll back."""
    with psycopg.connect(sandbox.dsn, autocommit=True) as conn:
        conn.execute("UPDATE clients_hipaa SET email_encrypted = 'jane@example.com' WHERE id = 1")
    before = legacy_snapshot(sandbox.dsn, audit=False)
    state = Gate(load_config(), cutover_target(sandbox), tmp_path / "run", Progress(quiet=True), force=True).run()
    assert state.forced and state.phase("premigration").status == "failed"
    assert state.phase("premigration").forced and state.phase("premigration").detail.startswith("FORCED past: ")
    assert state.phase("migration").status == "passed"
    assert state.status == "rolled-back" and state.rollback_verified, state.failure
    assert legacy_snapshot(sandbox.dsn, audit=False) == before


def _expired_pre_10(tmp_path: Path):
    """A red pre-check that leaves every later phase green: an expired waiver of PRE-10 (red in every pre-check
    run, so a cut-over never starts with one; no other phase judges it)."""
    config = description(tmp_path, waiver("1 transactions open too long", YESTERDAY, criterion="PRE-10"))
    return dataclasses.replace(load_config(config), deploy_wait_seconds=6)


def test_a_run_forced_past_a_red_pre_check_is_forced_never_green(sandbox: Sandbox, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Its verdict names what it went past, with its own exit code: in the state, the JSON, the sign-off and the
    notify line."""
    gate, hooks = _expired_pre_10(tmp_path), SandboxHooks(sandbox.api)
    state = Gate(gate, cutover_target(sandbox, hooks), tmp_path / "run", Progress(quiet=True), force=True).run()
    assert state.status == "forced" and state.forced and state.forced_past == ["PRE-10"], state.failure
    assert [p.status for p in state.phases] == ["failed"] + ["passed"] * 7
    said = "FORCED (went on past red checks: PRE-10): every phase after them passed"
    assert hooks.notify_file.read_text().splitlines()[-1].split(": ", 1)[1].startswith(f"run ended {said}; ")
    assert RunState.load(tmp_path / "run").status == "forced"

    code = finish_run(argparse.Namespace(json=True), gate, state, {"Target": "sandbox"})
    summary = json.loads(capsys.readouterr().out)
    assert code == EXIT_OF["forced"] == summary["exit_code"] == 5 and code != EXIT_OF["green"]
    assert summary["verdict"] == "forced" and summary["forced_past"] == ["PRE-10"]
    assert finish_run(argparse.Namespace(json=False), gate, state, {"Target": "sandbox"}) == 5
    assert f"Verdict: {said}" in capsys.readouterr().out
    report = (tmp_path / "run" / "signoff.html").read_text()
    assert "Verdict: FORCED (went on past red checks: PRE-10)</p>" in report and "Verdict: PASSED" not in report
    assert "FORCED past a gate that was not green (--force): PRE-10" in report


def test_a_resumed_run_does_not_inherit_force(sandbox: Sandbox, tmp_path: Path) -> None:
    """--force is asked again on resume: without it, the red pre-check stops the resumed run as it stops an
    unforced one (red, nothing migrated); with it, the run says so and goes on."""
    gate, reports = _expired_pre_10(tmp_path), tmp_path / "reports"
    first = Gate(gate, cutover_target(sandbox), reports / "cutover-forced", Progress(quiet=True), force=True)
    state = first.run(only=["premigration"])
    assert state.forced_past == ["PRE-10"]
    gone = subprocess.Popen(["true"])
    gone.wait()
    state.status, state.pid = "interrupted", gone.pid  # as a killed run leaves it
    state.save()

    args = argparse.Namespace(force=False, rollback_interrupted=False)
    resumed = _resume_or_new(args, gate, cutover_target(sandbox), reports, Progress(quiet=True))
    assert not resumed.force and resumed.run_dir == reports / "cutover-forced"
    state = resumed.run()
    assert state.status == "red" and not state.forced and state.forced_past == [], state.failure
    assert [p.status for p in state.phases] == ["failed"] + ["pending"] * 7
    with psycopg.connect(sandbox.dsn) as conn:
        assert schema_state(conn, gate) == "legacy"

    state.status, state.failure, state.pid = "interrupted", None, gone.pid
    state.save()
    said = io.StringIO()
    again = _resume_or_new(argparse.Namespace(force=True, rollback_interrupted=False), gate, cutover_target(sandbox),
                           reports, Progress(stream=said))
    assert again.force and again.run_dir == reports / "cutover-forced"
    assert "--force given again: the resumed run cutover-forced goes on past red pre-checks" in said.getvalue()


def test_the_migration_refuses_without_green_gates_unless_forced(sandbox: Sandbox, tmp_path: Path) -> None:
    gate = Gate(load_config(), cutover_target(sandbox), tmp_path / "run", Progress(quiet=True))
    with pytest.raises(Refused, match="premigration, maintenance, backup not green in this run"):
        gate.run(only=["migration"])
    forced = Gate(load_config(), cutover_target(sandbox), tmp_path / "forced", Progress(quiet=True), force=True)
    with pytest.raises(Refused, match="no backup was taken in this run"):  # --force never migrates without one
        forced.run(only=["migration"])
    state = forced.run(only=["backup", "migration"])
    assert state.phase("migration").status == "passed" and state.forced


def test_a_second_cut_over_against_the_same_database_refuses(sandbox: Sandbox, tmp_path: Path) -> None:
    with psycopg.connect(sandbox.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        with pytest.raises(Refused, match="another cut-over is running"):
            run_gate(sandbox, tmp_path / "run")
    with psycopg.connect(sandbox.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"


def test_a_killed_migration_is_never_half_way_and_the_next_run_resumes(sandbox: Sandbox, tmp_path: Path) -> None:
    before = legacy_snapshot(sandbox.dsn)
    slow = tmp_path / "slow.sql"
    # a pause in the middle of the migration, after the patients table was rebuilt: the worst moment to die
    # (only for the first process, by its application_name: nothing in the database marks it, so the change
    # check before migrating sees the database exactly as backed up, and the resumed run goes through)
    pause = ("SELECT pg_sleep(CASE WHEN current_setting('application_name') = 'gate-test-pause' THEN 30 ELSE 0 END);"
             "\n-- 7. sessions_hipaa becomes")
    slow.write_text(MIGRATION.read_text().replace("-- 7. sessions_hipaa becomes", pause))
    reports = tmp_path / "reports"
    config = config_with_store(tmp_path)  # --force never migrates without a backup: the run takes one first
    backed_up = gate_cli(sandbox, "backup", "--quiet", reports=reports, config=config, migration=slow)
    assert backed_up.wait(timeout=300) == 0, backed_up.stderr.read()
    before = legacy_snapshot(sandbox.dsn)
    child = gate_cli(sandbox, "migrate", "--force", reports=reports, migration=slow, config=config,
                 extra={"PGAPPNAME": "gate-test-pause"})
    deadline = time.monotonic() + 60
    with psycopg.connect(sandbox.dsn, autocommit=True) as watch:
        while time.monotonic() < deadline and not watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(CASE%'").fetchone()[0]:
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait()
        # the server notices the dead client at its next write; end the orphaned transaction now
        watch.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE "
                      "'SELECT pg_sleep(CASE%'")
        time.sleep(0.5)
    assert legacy_snapshot(sandbox.dsn) == before, "a killed migration left the database changed"
    runs = list(reports.glob("cutover-*/state.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["status"] == "running"

    changed = gate_cli(sandbox, "migrate", reports=reports)  # another migration file than the interrupted run's
    out, err = changed.communicate(timeout=120)
    assert changed.returncode == 4 and "the migration file changed since the interrupted run" in err

    unforced = gate_cli(sandbox, "migrate", reports=reports, migration=slow)  # --force is asked again on resume
    out, err = unforced.communicate(timeout=300)
    assert unforced.returncode == 4 and "premigration, maintenance not green in this run" in err, out + err
    again = gate_cli(sandbox, "migrate", "--force", reports=reports, migration=slow)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, out + err
    assert "resuming the interrupted run" in err and "database is legacy" in err
    assert "--force given again: the resumed run" in err
    with psycopg.connect(sandbox.dsn) as conn:
        assert schema_state(conn, load_config()) == "migrated"


def test_a_migration_file_changed_after_the_run_started_is_never_run(sandbox: Sandbox, tmp_path: Path) -> None:
    """The bytes run are the bytes the run recorded: a file edited between scripts/backup and scripts/migrate
    (even with --force, in the same run folder or resumed) is refused, naming both sha256s, and nothing runs."""
    mine = tmp_path / "migration.sql"
    mine.write_bytes(MIGRATION.read_bytes())
    recorded = sha256_file(mine)
    reports, config = tmp_path / "reports", config_with_store(tmp_path)
    backed_up = gate_cli(sandbox, "backup", "--quiet", reports=reports, config=config, migration=mine)
    assert backed_up.wait(timeout=300) == 0, backed_up.stderr.read()
    run_dir = next(reports.glob("cutover-*"))
    mine.write_text(mine.read_text() + "\nCREATE TABLE gate_tampered (id int);\n")
    for args in (["--run-dir", str(run_dir)], []):  # this run's folder named, then resumed
        changed = gate_cli(sandbox, "migrate", "--force", *args, reports=reports, config=config, migration=mine)
        out, err = changed.communicate(timeout=120)
        assert changed.returncode == 4, out + err
        assert f"sha256 {recorded[:16]}... recorded, {sha256_file(mine)[:16]}... now" in err, err
    with psycopg.connect(sandbox.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"
        assert conn.execute("SELECT to_regclass('gate_tampered')").fetchone()[0] is None


def test_migration_is_all_or_nothing_under_repeated_kills(sandbox: Sandbox, tmp_path: Path) -> None:
    """Killed at arbitrary moments, the database is always exactly legacy or completely migrated."""
    config = load_config()
    before = legacy_snapshot(sandbox.dsn)
    for delay in (0.05, 0.15, 0.3):
        code = ("import sys; from pathlib import Path; from migration_gate.db import migration; "
                f"migration.run_file({sandbox.dsn!r}, Path({str(MIGRATION)!r}), {SANDBOX_KEY!r})")
        child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        time.sleep(0.3)
        with psycopg.connect(sandbox.dsn) as conn:
            state = schema_state(conn, config)
        assert state in ("legacy", "migrated")
        if state == "legacy":
            assert legacy_snapshot(sandbox.dsn) == before
        else:
            migration.run_file(sandbox.dsn, config.rollback_file, SANDBOX_KEY)
            assert legacy_snapshot(sandbox.dsn) == before


def test_budgets_are_tracked_and_downtime_over_the_limit_fails_the_run(sandbox: Sandbox, tmp_path: Path) -> None:
    import dataclasses

    from migration_gate.report import signoff
    tight = dataclasses.replace(load_config(), phase_minutes=dict.fromkeys(
        ("premigration", "backup", "migration", "deploy", "verification", "golive"), 0.0001),
        downtime_minutes=0.0001)
    state = Gate(tight, cutover_target(sandbox), tmp_path / "run", Progress(quiet=True)).run()
    assert state.status == "over-limit" and state.downtime_over_limit
    assert "exceeds the" in state.failure
    assert all(p.over_budget for p in state.phases)
    assert all(over for _, _, _, over in budget_report(state))
    report = signoff.write(state, tmp_path / "run", {}, tight.downtime_minutes).read_text()
    assert "DOWNTIME OVER THE LIMIT" in report and "OVER BUDGET" in report


# -- the gate reads the suites' results as data ------------------------------------------------------------------

def _suite(dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           keep: tuple[str, ...] = ()) -> tuple[bool, PhaseRecord]:
    """The premigration suite as the gate runs it, against `dsn`; with `keep`, only those tests run and the child
    prints the decoy's false failures and summary after its own."""
    if keep:
        monkeypatch.setenv("PYTEST_PLUGINS", "tests.support.decoy_output")
        monkeypatch.setenv("GATE_DECOY_KEEP", ",".join(keep))
    target = CutoverTarget(dsn=dsn, key=SANDBOX_KEY, api_base_url="", api_username="", api_password="",
                           hooks=ShellHooks({}))
    gate = Gate(load_config(), target, tmp_path / "run", Progress(quiet=True))
    record = gate.state.phase("premigration")
    return gate.run_suite("premigration", record), record


KEY_TEST = "test_phi_key_is_present_and_64_hex_characters"
V1_TEST = "test_every_legacy_phi_value_is_well_formed_v1_ciphertext"


def test_the_gate_reads_a_red_suite_from_its_results_not_its_text(legacy_db: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        email = PhiCodec(SANDBOX_KEY).decrypt(
            conn.execute("SELECT email_encrypted FROM clients_hipaa WHERE id = 2").fetchone()[0])
        conn.execute("UPDATE clients_hipaa SET email_encrypted = %s WHERE id = 2", (email,))
    ok, record = _suite(legacy_db, tmp_path, monkeypatch, keep=(KEY_TEST, V1_TEST))
    output = (tmp_path / "run" / "premigration" / "pytest-output.txt").read_text()
    assert DECOY.splitlines()[0] in output  # the text lies ...
    assert not ok  # ... and the gate believes the results
    assert record.detail.startswith("checks: 1 failed, 1 passed in "), record.detail
    assert f"failed: {V1_TEST}" in record.detail
    assert "clients_hipaa.email_encrypted: 1 values are not v1 ciphertext (first ids: 2)" in record.detail
    assert "decoy" not in record.detail and "99 passed" not in record.detail
    assert email.strip() not in record.detail + output
    results = json.loads((tmp_path / "run" / "premigration" / "criteria-premigration.json").read_text())
    assert results["counts"] == {"passed": 1, "failed": 1, "skipped": 0, "errors": 0}
    failed = [t for t in results["tests"] if t["outcome"] == "failed"]
    assert [(t["nodeid"].split("::")[1], t["criterion"]) for t in failed] == [(V1_TEST, "PRE-05")]
    assert failed[0]["problems"] == ["clients_hipaa.email_encrypted: 1 values are not v1 ciphertext (first ids: 2)"]
    assert [c["check"] for c in results["checks"]] == ["PHI_ENCRYPTION_KEY present and 64 hex characters",
                                                       "PHI values are v1 ciphertext"]


def test_the_gate_reads_a_green_suite_from_its_results_not_its_text(legacy_db: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ok, record = _suite(legacy_db, tmp_path, monkeypatch, keep=(KEY_TEST,))
    assert "test_decoy_that_never_ran" in (tmp_path / "run" / "premigration" / "pytest-output.txt").read_text()
    assert ok, record.detail
    assert re.fullmatch(r"checks: 1 passed in \d+\.\d s", record.detail), record.detail


@pytest.mark.rehearsal
def test_a_suite_without_results_is_red_with_its_last_line_redacted(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ok, record = _suite("postgresql://gate:s3cretpw@127.0.0.1:1/app", tmp_path, monkeypatch)
    output = (tmp_path / "run" / "premigration" / "pytest-output.txt").read_text()
    assert not ok
    assert "target database 127.0.0.1:1/app is unreachable" in record.detail, record.detail
    assert "s3cretpw" not in record.detail + output
    assert not (tmp_path / "run" / "premigration" / "criteria-premigration.json").exists()
