"""The deploy's own schema changes are part of the model (issue 19 item 5): the sandbox's start runs the app's own
migrations on the new schema, as the real app's deploy does, so every cut-over meets tables with foreign keys to
organizations, patients, users_auth and clinical_sessions. The post-checks hold them to the description; the SQL
rollback drops the empty ones and keeps the others, detached, before its file; no rollback drops a user's task
silently. On the real sandbox: its API, its hooks, the suites as child processes."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import psycopg
import pytest

from migration_gate.checks import grants, schema
from migration_gate.config import ConfigError, load_config
from migration_gate.core.progress import Progress
from migration_gate.db.catalog import inspect
from migration_gate.report import signoff
from migration_gate.run.gate import Gate
from migration_gate.run.runstate import RunState, schema_state
from sandbox.deploy import run_app_migrations
from sandbox.roles import as_role
from sandbox.target import Sandbox
from tests.support.cutover import config_with_store, config_without_rollback_sql, cutover_target, gate_cli

PATIENTS = 40
SANDBOX_TABLES = {"organization_invites", "document_templates", "documents", "meeting_types", "meetings", "tasks"}


@pytest.fixture
def sandbox(tmp_path: Path):
    box = Sandbox(workdir=tmp_path / "sandbox", patients=PATIENTS, progress=Progress(quiet=True)).start()
    yield box
    box.stop()


def _gate(rollback_file: bool = True, method: str = "restore"):
    gate = dataclasses.replace(load_config(), deploy_wait_seconds=6, rollback_method=method)
    return gate if rollback_file else dataclasses.replace(gate, rollback_file=None, rollback_method="restore")


def _live(box: Sandbox, run: Path, rollback_file: bool = True) -> RunState:
    state = Gate(_gate(rollback_file), cutover_target(box), run, Progress(quiet=True)).run()
    assert state.status == "green", state.failure
    return state


def _rollback(box: Sandbox, run: Path, **gate) -> RunState:
    return Gate(_gate(**gate), cutover_target(box), run, Progress(quiet=True),
                state=RunState.load(run)).run_rollback_only()


def _users_task(box: Sandbox) -> int:
    """After go-live a therapist adds a task for a patient and a session, as the app (its own role) writes it."""
    with psycopg.connect(as_role(box.dsn, box.gate.app_role.name)) as conn:
        return conn.execute(
            "INSERT INTO tasks (organization_id, created_by_user_id, patient_id, session_id, title) "
            "SELECT p.organization_id, p.primary_therapist_id, p.id, s.id, 'call back' FROM patients p "
            "JOIN clinical_sessions s ON s.patient_id = p.id ORDER BY p.id LIMIT 1 RETURNING id").fetchone()[0]


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return inspect(conn, ["public"]).names("public")


def _references(dsn: str, table: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        found = inspect(conn, ["public"]).table(table, "public")
        return {c.references for c in found.foreign_keys()}


def test_a_cutover_meets_the_deploys_tables_stays_green_and_its_sql_rollback_passes(sandbox, tmp_path: Path):
    run = tmp_path / "cutover"
    _live(sandbox, run)
    assert _tables(sandbox.dsn) >= SANDBOX_TABLES  # the deploy ran the app's migrations
    post = json.loads(next(run.glob("postmigration/criteria-*.json")).read_text())["criteria"]
    assert post["POST-01"]["result"] == post["POST-18"]["result"] == "passed"
    assert run_app_migrations(sandbox.dsn, sandbox.gate.app_role, sandbox.gate.app_tables) == [
        "0001_practice_tables.sql"]  # every start runs them again: nothing changes, nothing fails

    state = _rollback(sandbox, run, method="sql")  # the operator rolls back after go-live, by the rollback SQL

    assert state.status == "rolled-back" and state.rollback_verified, state.failure
    assert state.rollback_method == "sql"
    with psycopg.connect(sandbox.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"
    assert not SANDBOX_TABLES & _tables(sandbox.dsn)  # all empty: dropped
    steps = state.deploy_steps
    assert len(steps) == len(SANDBOX_TABLES) and all(s.endswith(": dropped (empty)") for s in steps)
    order = [s.split(":")[0] for s in steps]  # a table goes before the tables it references
    assert order.index("public.meetings") < order.index("public.meeting_types")
    assert order.index("public.documents") < order.index("public.document_templates")
    assert "public.tasks: empty, dropped" in state.phase("restore").detail


def test_a_users_task_written_after_go_live_is_kept_by_the_rollback_and_named_per_table(sandbox, tmp_path: Path):
    run = tmp_path / "reports" / "cutover-live"
    _live(sandbox, run)
    task = _users_task(sandbox)

    dry = gate_cli(sandbox, "rollback", "--run-dir", str(run), "--dry-run", reports=run.parent)
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 0, out + err  # nothing is lost: the rollback SQL keeps the table
    kept = ("public.tasks: 1 row, kept, detached from public.clinical_sessions, public.organizations, "
            "public.patients (the legacy release does not read it)")
    assert "run the rollback SQL" in out and kept in out and "public.meetings: empty, dropped" in out

    state = _rollback(sandbox, run)

    assert state.status == "rolled-back" and state.rollback_verified, state.failure
    assert state.rollback_method == "sql"  # chosen over the configured restore: a user's row is at stake
    with psycopg.connect(sandbox.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM tasks WHERE id = %s", (task,)).fetchone()[0] == 1
    assert _references(sandbox.dsn, "tasks") == {"public.users_auth"}  # detached from what the rollback dropped
    assert "public.tasks: foreign key tasks_organization_id_fkey -> public.organizations dropped (1 rows kept)" in \
        state.deploy_steps
    assert kept in state.phase("restore").detail
    report = signoff.write(state, run, {}).read_text()
    assert "Tables the app's deploy created" in report and "public.tasks: 1 row, kept" in report


def test_a_restore_that_would_drop_a_users_task_holds_and_names_the_table_and_count(sandbox, tmp_path: Path):
    run = tmp_path / "reports" / "cutover-live"
    _live(sandbox, run, rollback_file=False)
    _users_task(sandbox)
    config = config_without_rollback_sql(tmp_path)

    dry = gate_cli(sandbox, "rollback", "--run-dir", str(run), "--dry-run", reports=run.parent, config=config)
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 4, out + err
    assert "public.tasks: 1 row, dropped by the restore" in out
    assert "of them in the tables the app's deploy created: public.tasks: 1 row, dropped by the restore" in out
    state = _rollback(sandbox, run, rollback_file=False)  # no decision: held, nothing changed
    assert state.status == "rollback-held"
    assert "public.tasks: 1 row, dropped by the restore" in state.failure
    with psycopg.connect(sandbox.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1
    assert "public.tasks: 1 row, dropped by the restore" in signoff.write(state, run, {}).read_text()


def test_an_undeclared_table_and_a_missing_grant_after_the_deploy_are_red(sandbox, tmp_path: Path):
    _live(sandbox, tmp_path / "cutover")
    gate = sandbox.gate
    with psycopg.connect(sandbox.dsn) as conn:
        catalog = inspect(conn, [gate.schema])
    green = schema.only_described_tables(catalog, list(gate.new_schema), list(gate.app_tables))
    assert green.ok and f"6 of the {len(gate.app_tables)} declared exist" in green.notes[0], green.problems
    assert grants.deploy_privileges(catalog, gate.app_role, list(gate.app_tables)).ok

    with psycopg.connect(sandbox.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE scratch_notes (id serial PRIMARY KEY)")
        conn.execute(f"REVOKE INSERT ON tasks FROM {gate.app_role.name}")
        catalog = inspect(conn, [gate.schema])

    red = schema.only_described_tables(catalog, list(gate.new_schema), list(gate.app_tables))
    assert red.problems == ['table "public"."scratch_notes" is in the database but neither in [new_schema] nor in '
                            '[deploy] app_tables (what created it?)']
    red = grants.deploy_privileges(catalog, gate.app_role, list(gate.app_tables))
    assert red.problems == ['the app cannot insert into "public"."tasks": role "app_user" lacks INSERT']


@pytest.mark.parametrize("value, fragment", [
    ('["tasks", "patients"]', "app_tables names patients, a table of the migration's own schema"),
    ('"tasks"', "app_tables must be a list of table names"),
    ('["tasks", "tasks"]', "app_tables names a table twice"),
])
def test_a_wrong_deploy_declaration_is_one_line(tmp_path: Path, value: str, fragment: str):
    config = config_with_store(tmp_path)
    text = re.sub(r"^app_tables = \[[^\]]*\]", f"app_tables = {value}", config.read_text(), flags=re.M)
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_config(config)
