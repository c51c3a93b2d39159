"""A rollback never discards data silently (issue 10 item 3): rows written since the migration are counted before
anything is restored; a restore that would discard others' rows stops for a named decision, before go-live as
after; where the description has a rollback SQL it is preferred and carries them back, proven by key and by the
rollback checks. On the real sandbox: its API, its hooks, the suites as child processes."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from migration_gate.app.client import send
from migration_gate.checks import api as app
from migration_gate.config import load_config
from migration_gate.core.progress import Progress
from migration_gate.core.status import EXIT_OF
from migration_gate.report import signoff
from migration_gate.run.gate import Gate
from migration_gate.run.runstate import RunState, schema_state
from sandbox.api_process import SandboxHooks
from sandbox.target import Sandbox
from tests.support.cutover import config_with_store, config_without_rollback_sql, cutover_target, gate_cli

PATIENTS = 60
OTHER_USER = ("demo_therapist2", "demo-password-2")


@pytest.fixture
def sandbox(tmp_path: Path):
    box = Sandbox(workdir=tmp_path / "sandbox", patients=PATIENTS, progress=Progress(quiet=True)).start()
    yield box
    box.stop()


def _gate(rollback_file: bool):
    gate = dataclasses.replace(load_config(), deploy_wait_seconds=6)
    return gate if rollback_file else dataclasses.replace(gate, rollback_file=None)


def _live(box: Sandbox, run: Path, rollback_file: bool) -> RunState:
    state = Gate(_gate(rollback_file), cutover_target(box), run, Progress(quiet=True)).run()
    assert state.status == "green", state.failure
    return state


def _users_write(box: Sandbox) -> int:
    """After go-live: another therapist adds a patient through the API, and a session is edited in the database.
    Returns the new patient's id."""
    with httpx.Client(base_url=box.api.base_url, timeout=30) as client:
        token = app.login(client, *OTHER_USER)
        tag = uuid.uuid4().hex[:8]
        created = send(client, "POST", "/api/patients", token,
                           json={"name": f"After Golive {tag}", "contactEmail": f"after.{tag}@example.org"})
        assert created.status_code == 201, created.status_code
    with psycopg.connect(box.dsn) as conn:
        conn.execute("UPDATE clinical_sessions SET updated_at = now() "
                     "WHERE id = (SELECT min(id) FROM clinical_sessions)")
    return created.json()["data"]["id"]


def _rollback(box: Sandbox, run: Path, rollback_file: bool, decided_by: str | None = None) -> RunState:
    runner = Gate(_gate(rollback_file), cutover_target(box), run, Progress(quiet=True), state=RunState.load(run))
    if decided_by:
        runner.decision = {"by": decided_by, "reason": "the new schema loses sessions"}
    return runner.run_rollback_only()


def _database(dsn: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        where = schema_state(conn, load_config())
        counts = conn.execute("SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM audit_logs_hipaa), "
                              "(SELECT max(updated_at) FROM clinical_sessions)").fetchone()
    return where, counts


def test_after_go_live_a_restore_that_would_discard_users_rows_waits_for_a_named_decision(
        sandbox: Sandbox, tmp_path: Path) -> None:
    run = tmp_path / "reports" / "cutover-live"
    _live(sandbox, run, rollback_file=False)
    patient = _users_write(sandbox)
    before, state_file = _database(sandbox.dsn), (run / "state.json").read_bytes()
    config = config_without_rollback_sql(tmp_path)

    dry = gate_cli(sandbox, "rollback", "--run-dir", str(run), "--dry-run", reports=run.parent, config=config)
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 4, out + err
    # the gate's own writes (its probe patient, its reads' audit rows) are counted apart: only the users' are lost
    assert "public.patients: 2 inserted, 0 updated, 0 deleted (1 by the gate's own login)" in out
    assert "public.clinical_sessions: 0 inserted, 1 updated, 0 deleted" in out
    assert "discarded by this rollback: 4" in out  # the user's patient, its audit rows, the edited session
    refused = gate_cli(sandbox, "rollback", "--run-dir", str(run), reports=run.parent, config=config)
    out, err = refused.communicate(timeout=120)
    assert refused.returncode == 4 and "refusing to roll back, nothing was changed" in err, out + err
    assert "--discard-writes --decided-by NAME" in err and len(err.strip().splitlines()) == 1
    nameless = gate_cli(sandbox, "rollback", "--run-dir", str(run), "--discard-writes", reports=run.parent,
                        config=config)
    assert nameless.wait(timeout=60) == 2
    assert _database(sandbox.dsn) == before and (run / "state.json").read_bytes() == state_file

    state = _rollback(sandbox, run, rollback_file=False, decided_by="Dana Reyes (DBA)")
    assert state.status == "rolled-back" and state.rollback_verified, state.failure
    assert state.rollback_method == "restore"
    decision = state.rollback_decision
    assert decision["by"] == "Dana Reyes (DBA)" and decision["method"] == "restore"
    assert decision["discarded"] == 4 and "public.patients: 2 inserted" in decision["what"]
    with psycopg.connect(sandbox.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM clients_hipaa WHERE id = %s", (patient,)).fetchone()[0] == 0
    report = signoff.write(state, run, {}).read_text()
    assert "decided by <b>Dana Reyes (DBA)</b>" in report and "changes discarded" in report


def test_after_go_live_the_rollback_sql_carries_users_rows_back_and_proves_it(sandbox: Sandbox,
                                                                              tmp_path: Path) -> None:
    run = tmp_path / "cutover-live"
    _live(sandbox, run, rollback_file=True)
    patient = _users_write(sandbox)
    with psycopg.connect(sandbox.dsn) as conn:
        sessions = conn.execute("SELECT count(*) FROM clinical_sessions").fetchone()[0]

    plan = Gate(_gate(True), cutover_target(sandbox), run, Progress(quiet=True),
                state=RunState.load(run)).rollback_plan()
    assert (plan.method, plan.lost, plan.held) == ("sql", 0, None)  # preferred over the configured restore
    state = _rollback(sandbox, run, rollback_file=True)  # no decision needed: nothing is discarded

    assert state.status == "rolled-back" and state.rollback_verified, state.failure
    assert state.rollback_method == "sql" and state.rollback_decision is None
    restore = state.phase("restore")
    assert "rows written since the migration carried back; every key of" in restore.detail
    rb02 = json.loads(next(run.glob("rollback/criteria-*.json")).read_text())
    assert rb02["criteria"]["RB-02"]["result"] == "passed"  # compared with the backup but the carried rows
    with psycopg.connect(sandbox.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"
        assert conn.execute("SELECT therapist_id FROM clients_hipaa WHERE id = %s", (patient,)).fetchone()
        assert conn.execute("SELECT count(*) FROM sessions_hipaa").fetchone()[0] == sessions
    assert "carried back and verified by key" in signoff.write(state, run, {}).read_text()


class WriterThroughMaintenance(SandboxHooks):
    """A job that ignores maintenance mode writes after the migration; then the deploy fails."""

    def deploy(self, use_hipaa_schema: bool) -> None:
        if use_hipaa_schema:
            with psycopg.connect(self.api.database_url) as conn:
                conn.execute("UPDATE patients SET updated_at = now() WHERE id = (SELECT min(id) FROM patients)")
            raise RuntimeError("deploy failed")
        super().deploy(use_hipaa_schema)


def test_before_go_live_a_write_through_maintenance_holds_the_automatic_restore(sandbox: Sandbox,
                                                                               tmp_path: Path) -> None:
    run = tmp_path / "cutover"
    state = Gate(_gate(False), cutover_target(sandbox, WriterThroughMaintenance(sandbox.api)), run,
                 Progress(quiet=True)).run()

    assert state.status == "rollback-held" and EXIT_OF[state.status] == 3
    assert "written while maintenance mode was on" in state.failure
    assert "public.patients: 0 inserted, 1 updated, 0 deleted" in state.failure
    assert state.phase("restore").status == "held" and state.phase("redeploy-legacy").status == "pending"
    assert _database(sandbox.dsn)[0] == "migrated"  # nothing was restored
    with httpx.Client(base_url=sandbox.api.base_url, timeout=15) as client:
        assert send(client, "GET", "/api/patients").status_code == 503  # the app stays in maintenance
    assert "ROLLBACK HELD FOR A DECISION" in signoff.write(state, run, {}).read_text()

    dump = Path(state.backup["path"])
    dump.unlink()  # and the box lost the local copy meanwhile: the decided rollback fetches it back first
    state = _rollback(sandbox, run, rollback_file=False, decided_by="Sam Okafor (release manager)")
    assert state.status == "rolled-back" and state.rollback_verified, state.failure
    assert dump.is_file()
    assert "ROLLBACK HELD" not in state.failure and state.rollback_decision["discarded"] == 1


def _maintenance_config(tmp_path: Path, box: Sandbox, failing_off: bool = False) -> Path:
    """migration.toml whose maintenance hooks switch the sandbox's flag file (its API answers 503 while it is there);
    `failing_off`: maintenance_off fails as a host's API might."""
    config = config_with_store(tmp_path)
    flag = box.api.maintenance_file
    text = re.sub(r"^maintenance_on = .*$", f"maintenance_on = 'touch {flag}'", config.read_text(), flags=re.M)
    off = "echo 'host API: 502 Bad Gateway' >&2; exit 1" if failing_off else f"rm -f {flag}"
    config.write_text(re.sub(r"^maintenance_off = .*$", f'maintenance_off = "{off}"', text, flags=re.M))
    return config


def _emergency(box: Sandbox, run: Path, config: Path, *args: str) -> tuple[int, str, str]:
    child = gate_cli(box, "emergency", *args, "--run-dir", str(run), reports=run.parent, config=config)
    out, err = child.communicate(timeout=60)
    return child.returncode, out, err


def test_corruption_after_go_live_is_stopped_named_in_the_carried_rows_and_discarded_by_a_restore(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """Issue 22 item 1: users stopped at once (scripts/emergency, recorded); the plan shows both costs and the
    carried rows that fail; the SQL rollback that carries a corrupt value back is red (RB-04), named by table and id;
    --discard-writes then restores the backup although a rollback_file is configured."""
    run = tmp_path / "reports" / "cutover-live"
    _live(sandbox, run, rollback_file=True)
    patient = _users_write(sandbox)
    email = "corrupt.after.golive@example.org"
    with psycopg.connect(sandbox.dsn) as conn:  # the new app stored a contact email in the clear
        conn.execute("UPDATE patients SET patient_contact_email_encrypted = %s WHERE id = %s", (email, patient))

    config = _maintenance_config(tmp_path, sandbox, failing_off=True)
    assert _emergency(sandbox, run, config, "maintenance-on", "--by", "Dana Reyes (DBA)")[0] == 2  # no --why
    code, out, err = _emergency(sandbox, run, config, "maintenance-on", "--by", "Dana Reyes (DBA)",
                                "--why", "plaintext emails found after go-live")
    assert code == 0 and "maintenance-on by Dana Reyes (DBA) (plaintext emails found after go-live): done" in out
    with httpx.Client(base_url=sandbox.api.base_url, timeout=15) as client:
        assert send(client, "GET", "/api/patients").status_code == 503  # users stopped at once
    code, out, err = _emergency(sandbox, run, config, "maintenance-off", "--by", "Sam Okafor", "--why", "test",
                                "--dry-run")
    assert code == 0 and "would call [hooks] maintenance_off" in out
    code, out, err = _emergency(sandbox, run, config, "maintenance-off", "--by", "Sam Okafor", "--why", "too early")
    assert code == 1 and "FAILED: hook maintenance_off failed with exit code 1: host API: 502" in err, out + err
    assert len(err.strip().splitlines()) == 1

    dry = gate_cli(sandbox, "rollback", "--run-dir", str(run), "--dry-run", reports=run.parent, config=config)
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 0, out + err
    carry = next(line for line in out.splitlines() if "carry them back (the rollback SQL)" in line)
    assert "public.patients -> clients_hipaa: 2 rows" in carry, carry  # the user's and the gate's probe patient
    assert "public.clinical_sessions -> sessions_hipaa: 1 rows" in carry, carry
    assert f"fail the PHI checks (format, plaintext, decryption): public.patients: 1 (first ids: {patient})" in carry
    assert ("discard them (restore the backup, --discard-writes --decided-by NAME): loses public.audit_logs_hipaa: "
            "2 changes; public.clinical_sessions: 1 changes; public.patients: 1 changes") in out  # the gate's own kept
    assert email not in out + err

    state = _rollback(sandbox, run, rollback_file=True)  # carries the corrupt row back: red, named
    assert state.rollback_method == "sql" and state.status == "rollback-failed", state.failure
    results = json.loads(next(run.glob("rollback/criteria-*.json")).read_text())["criteria"]
    assert results["RB-02"]["result"] == "passed" and results["RB-04"]["result"] == "failed"
    detail = state.phase("rollback").detail
    assert "public.clients_hipaa.email_encrypted" in detail and f"first ids: {patient}" in detail, detail
    assert email not in detail + (run / "state.json").read_text()

    state = _rollback(sandbox, run, rollback_file=True, decided_by="Dana Reyes (DBA)")  # --discard-writes
    assert state.status == "rolled-back" and state.rollback_verified, state.failure
    assert state.rollback_method == "restore" and state.rollback_decision["by"] == "Dana Reyes (DBA)"
    assert state.carried is None and state.rollback_decision["discarded"] >= 3
    results = json.loads(next(run.glob("rollback/criteria-*.json")).read_text())["criteria"]
    assert results["RB-02"]["result"] == "passed" and results["RB-04"]["result"] == "passed"  # legacy == backup
    with psycopg.connect(sandbox.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM clients_hipaa WHERE id = %s", (patient,)).fetchone()[0] == 0
    report = signoff.write(state, run, {}).read_text()
    assert "Emergency maintenance switches" in report and "plaintext emails found after go-live" in report
    assert "FAILED: hook maintenance_off failed" in report
