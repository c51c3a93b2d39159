"""Every input checked before the window opens: `cutover --dry-run` lists them, and `cutover` refuses (exit 4)
before maintenance is switched on when any is missing, with the line that names it; nothing is changed."""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from migration_gate.config import ConfigError, load_config
from migration_gate.core.progress import Progress
from migration_gate.report.verdict import finish_run
from migration_gate.run import hookrehearsal
from migration_gate.run.runstate import RunState, schema_state
from sandbox.api_process import SandboxHooks
from sandbox.target import DATABASE, Sandbox
from tests.conftest import ROOT
from tests.support.cutover import cutover_target
from tests.support.preflight import cutover, environment, rehearsed, write_config

OTHER_KEY = "7e" * 32


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    sandbox = Sandbox(workdir=tmp_path_factory.mktemp("preflight") / "sandbox", patients=40,
                      progress=Progress(quiet=True)).start()
    yield sandbox
    sandbox.stop()


def test_the_dry_run_lists_every_input_ready_and_changes_nothing(box: Sandbox, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    env = environment(box, write_config(tmp_path, calls), tmp_path / "reports")
    done = cutover("--dry-run", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = json.loads(done.stdout)
    assert plan["ready"] and [i["name"] for i in plan["inputs"] if not i["ok"]] == []
    assert {i["name"] for i in plan["inputs"]} == {"database", "schema", "role privileges", "key", "pg_dump",
                                                   "reports folder", "transport", "API", "login", "hooks", "backup",
                                                   "log source", "people", "notify", "hooks rehearsal", "alert"}
    human = cutover("--dry-run", env=env)
    assert human.returncode == 0 and "Ready: the cut-over can start." in human.stdout
    assert "phase premigration" in human.stdout and "backup into" in human.stdout
    assert not calls.exists(), "a dry run ran a hook"
    with psycopg.connect(box.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"


def test_the_dry_run_with_the_shipped_placeholders_and_no_app_is_not_ready(box: Sandbox, tmp_path: Path) -> None:
    env = environment(box, ROOT / "migration.toml", tmp_path / "reports", API_BASE_URL="http://127.0.0.1:9",
                      APP_LOG_FILE=None)
    done = cutover("--dry-run", env=env)
    assert done.returncode == 4, done.stdout + done.stderr
    for line in ("MISSING API: GET /health: no answer", "MISSING login: login as the fixture user failed",
                 "MISSING hook maintenance_on: still the shipped placeholder",
                 "MISSING hook deploy_legacy_schema: still the shipped placeholder",
                 "MISSING hook store_backup: still the shipped placeholder",
                 "MISSING log source: no log source", "MISSING alert: still the shipped placeholder",
                 "Not ready: 10 inputs missing"):
        assert line in done.stdout, done.stdout


def _admin(box: Sandbox, statement: str) -> None:
    with psycopg.connect(box.cluster.admin_dsn(DATABASE), autocommit=True) as conn:
        conn.execute(statement)


BROKEN = {
    # input: (environment overrides, hook overrides, admin SQL to break, admin SQL to repair, expected line)
    "wrong key": ({"PHI_ENCRYPTION_KEY": OTHER_KEY}, {}, None, None,
                  "key: clients_hipaa.email_encrypted: "),
    "app down": ({"API_BASE_URL": "http://127.0.0.1:9"}, {}, None, None, "API: GET /health: no answer"),
    "wrong password": ({"GATE_API_PASSWORD": "not-the-password"}, {}, None, None,
                       "login: login as the fixture user failed: 401"),
    "placeholder hook": ({}, {"deploy_new_schema": "echo 'TODO(hook): deploy' >&2; exit 1"}, None, None,
                         "hook deploy_new_schema: still the shipped placeholder"),
    "missing hook": ({}, {"maintenance_off": None}, None, None, "hook maintenance_off: not configured in [hooks]"),
    "no backup store": ({}, {"store_backup": None}, None, None, "hook store_backup: not configured in [hooks]"),
    "no backup identity": ({"GATE_BACKUP_IDENTITY": None}, {}, None, None, "backup: "),
    "no log source": ({"APP_LOG_FILE": None}, {}, None, None,
                      "log source: no log source (set APP_LOG_FILE, or [logs] in migration.toml)"),
    "log file gone": ({"APP_LOG_FILE": "/nonexistent/app.log"}, {}, None, None,
                      "log source: app.log does not exist: the post-migration log check (POST-11) would go red"),
    "failing log command": ({"APP_LOG_FILE": None}, {"logs_since": "exit 3"}, None, None,
                            "log source: [hooks] logs_since exited with code 3"),
    "no alert hook": ({}, {"alert": None}, None, None,
                      "alert: not configured in [hooks]: a red watch round would tell nobody; configure [hooks] alert, "
                      "or say why not in [watch] no_alert_because"),
    "no CREATEDB": ({}, {}, "ALTER ROLE gate_owner NOCREATEDB", "ALTER ROLE gate_owner CREATEDB",
                    'role "gate_owner" lacks CREATEDB'),
    "a table of another owner": (
        {}, {}, "DO $$ BEGIN CREATE ROLE gate_stranger; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
                " ALTER TABLE drizzle.__drizzle_migrations OWNER TO gate_stranger",
        "ALTER TABLE drizzle.__drizzle_migrations OWNER TO gate_owner",
        'role "gate_owner" does not own 2 objects a restore recreates (first: "drizzle"."__drizzle_migrations"'
        ' (owner "gate_stranger"), "drizzle"."__drizzle_migrations_id_seq"'),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_missing_input_refuses_before_maintenance(box: Sandbox, tmp_path: Path, case: str) -> None:
    overrides, hooks, breaking, repair, line = BROKEN[case]
    calls = tmp_path / "calls"
    reports = tmp_path / "reports"
    env = environment(box, write_config(tmp_path, calls, **hooks), reports, **overrides)
    if breaking:
        _admin(box, breaking)
    try:
        done = cutover(env=env)
    finally:
        if repair:
            _admin(box, repair)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "refusing to start:" in done.stderr and "nothing was changed" in done.stderr
    assert line in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "not-the-password" not in done.stderr
    assert not calls.exists(), f"{case}: a hook ran ({calls.read_text() if calls.exists() else ''})"
    assert not list(reports.glob("*/state.json")), f"{case}: a run was recorded"
    with psycopg.connect(box.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"


def test_no_alert_hook_is_ready_only_when_the_description_says_why(box: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "calls", alert=None)
    config.write_text(config.read_text().replace('\nafter_golive = "start"\n', '\nafter_golive = "start"\n'
                                                 'no_alert_because = "the DBA sits at the watch report"\n'))
    done = cutover("--dry-run", "--json", env=environment(box, config, tmp_path / "reports"))
    assert done.returncode == 0, done.stdout + done.stderr
    alert = next(i for i in json.loads(done.stdout)["inputs"] if i["name"] == "alert")
    assert alert["ok"] and alert["found"].startswith(
        "no alert hook ([watch] no_alert_because: the DBA sits at the watch report); no [[escalation]]: nobody is "
        "told next")


# -- one TLS policy (issue 20 item 3): off this host, verified TLS or a recorded reason why not ---------------------

def _remote_looking(box: Sandbox, sslmode: str) -> str:
    """The sandbox's database under a name that is not this host's (hostaddr still reaches it, no network needed)."""
    return psycopg.conninfo.make_conninfo(box.dsn, host="db.example.invalid", hostaddr="127.0.0.1", sslmode=sslmode)


def _with_security(config: Path, value: str) -> Path:
    """The description with [security] allow_insecure_transport = value (a TOML value)."""
    opt_out = f"\n[security]\nallow_insecure_transport = {value}\n"
    config.write_text(config.read_text().replace("\n[security]\n", opt_out))
    return config


def test_a_remote_database_without_verify_full_refuses(box: Sandbox, tmp_path: Path) -> None:
    env = environment(box, write_config(tmp_path, tmp_path / "calls"), tmp_path / "reports",
                      DATABASE_URL=_remote_looking(box, "prefer"))
    done = cutover(env=env)
    assert done.returncode == 4, done.stdout + done.stderr
    assert ("transport: the database on db.example.invalid is reached with sslmode=prefer, not verify-full"
            in done.stderr), done.stderr
    assert not (tmp_path / "calls").exists()


def test_an_api_off_this_host_over_http_refuses(box: Sandbox, tmp_path: Path) -> None:
    env = environment(box, write_config(tmp_path, tmp_path / "calls"), tmp_path / "reports",
                      API_BASE_URL="http://api.example.invalid")
    done = cutover("--dry-run", env=env)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "MISSING transport: API_BASE_URL http://api.example.invalid is not https" in done.stdout, done.stdout


def test_the_opt_out_lets_it_start_and_the_sign_off_records_why(box: Sandbox, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    reason = "reached through an SSH tunnel (OPS-123)"
    config = _with_security(write_config(tmp_path, tmp_path / "calls"), f'"{reason}"')
    env = environment(box, config, tmp_path / "reports", DATABASE_URL=_remote_looking(box, "prefer"))
    done = cutover("--dry-run", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    transport = next(i for i in json.loads(done.stdout)["inputs"] if i["name"] == "transport")
    assert transport["ok"] and reason in transport["found"]

    run = tmp_path / "run"
    run.mkdir()
    state = RunState(run_dir=str(run), target="db.example.invalid", migration_file="m.sql", migration_sha256="0")
    finish_run(argparse.Namespace(json=False), load_config(config), state, {"Target": "db.example.invalid"})
    capsys.readouterr()
    report = (run / "signoff.html").read_text()
    assert ("<th>Transport security</th><td>verified TLS NOT required off this host ([security] "
            f"allow_insecure_transport: {reason})</td>") in report


@pytest.mark.parametrize("value", ['""', "true", '"""two\nlines"""'])
def test_an_opt_out_without_a_reason_is_one_line(tmp_path: Path, value: str) -> None:
    config = _with_security(write_config(tmp_path, tmp_path / "calls"), value)
    with pytest.raises(ConfigError, match=r"\[security\]: allow_insecure_transport must be one non-empty line"):
        load_config(config)


# -- the hooks rehearsed before the window (issue 22 item 4) ----------------------------------------------------

class StoresSomethingElse(SandboxHooks):
    """A store hook that says it stored the backup but keeps another file (a wrong path in a team's script)."""

    def store_backup(self, env: dict[str, str]) -> str:
        other = Path(env["GATE_BACKUP_FILE"]).with_name("other.bin")
        other.write_bytes(b"not the backup")
        return super().store_backup(env | {"GATE_BACKUP_FILE": str(other)})


def _rehearse(box: Sandbox, config: Path, reports: Path, hooks: SandboxHooks) -> hookrehearsal.HooksRehearsal:
    """The hooks rehearsal against the sandbox as staging, whose start command runs no migrations of the app's
    own (the new release on a legacy database then starts, reporting its schema degraded, as on staging)."""
    migrations, box.api.app_migrations = box.api.app_migrations, None
    try:
        return hookrehearsal.rehearse(dataclasses.replace(load_config(config), deploy_wait_seconds=20),
                                      cutover_target(box, hooks), reports)
    finally:
        box.api.app_migrations = migrations


def test_a_hooks_rehearsal_with_a_broken_store_hook_is_red_and_the_next_cut_over_refuses(box: Sandbox,
                                                                                          tmp_path: Path) -> None:
    calls, reports = tmp_path / "calls", tmp_path / "reports"
    config = write_config(tmp_path, calls)
    green = _rehearse(box, config, reports, SandboxHooks(box.api, offsite=tmp_path / "offsite"))
    assert green.ok, [s.line() for s in green.steps]
    assert [(s.hook, s.outcome) for s in green.steps] == [
        ("maintenance_on", "passed"), ("deploy_new_schema", "passed"), ("deploy_legacy_schema", "passed"),
        ("maintenance_off", "passed"), ("store_backup", "passed"), ("fetch_backup", "passed"),
        ("notify", "passed"), ("alert", "passed")]
    assert "503 with Retry-After" in green.steps[0].detail and "useHipaaSchema true" in green.steps[1].detail
    assert "/health 200 ok, useHipaaSchema false" in green.steps[2].detail
    assert "sha256 equal" in green.steps[5].detail
    saved = reports / "hooks-rehearsal.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    env = environment(box, config, reports, hooks_rehearsed=False)
    ready = cutover("--dry-run", "--json", env=env)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    item = next(i for i in json.loads(ready.stdout)["inputs"] if i["name"] == "hooks rehearsal")
    assert item["ok"] and item["found"].startswith(f"green at {green.at}")

    red = _rehearse(box, config, reports, StoresSomethingElse(box.api, offsite=tmp_path / "offsite"))
    assert not red.ok and [s.hook for s in red.failed] == ["store_backup", "fetch_backup"]
    assert "does not have the stored file's sha256: store_backup or fetch_backup" in red.failed[1].detail
    done = cutover(env=env)
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"hooks rehearsal: the last one (at {red.at}) was red: store_backup: " in done.stderr, done.stderr
    assert not calls.exists(), "a hook ran"
    with psycopg.connect(box.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"


def test_a_stale_hooks_rehearsal_is_refused(box: Sandbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "calls")
    reports = tmp_path / "reports"
    rehearsed(config, reports, datetime.now(UTC) - timedelta(hours=73))
    done = cutover("--dry-run", env=environment(box, config, reports, hooks_rehearsed=False))
    assert done.returncode == 4, done.stdout + done.stderr
    assert ("MISSING hooks rehearsal: the last one is 73.0 h old" in done.stdout
            and "older than [hooks] rehearsal_max_age_hours = 72" in done.stdout), done.stdout


def test_rehearse_hooks_on_the_command_line_names_the_failing_hook(box: Sandbox, tmp_path: Path) -> None:
    """Shell hooks: maintenance flips the sandbox's flag file (verified through HTTP); the deploys change nothing
    (red: the app never reports the new schema); the store hook fails."""
    flag = box.api.maintenance_file
    config = write_config(tmp_path, tmp_path / "calls", maintenance_on=f"touch {flag}",
                          maintenance_off=f"rm -f {flag}", store_backup="echo 'bucket not found' >&2; exit 3")
    config.write_text(config.read_text().replace("deploy_wait_seconds = 300", "deploy_wait_seconds = 2"))
    reports = tmp_path / "reports"
    done = cutover("--rehearse-hooks", env=environment(box, config, reports, hooks_rehearsed=False))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:-1]}
    assert list(lines) == list(hookrehearsal.HOOKS)
    assert "PASSED" in lines["maintenance_on"] and "PASSED" in lines["maintenance_off"]
    assert "FAILED" in lines["deploy_new_schema"] and "never reported useHipaaSchema true" in lines["deploy_new_schema"]
    assert "hook store_backup failed with exit code 3: bucket not found" in lines["store_backup"]
    assert "SKIPPED" in lines["fetch_backup"] and "not called: store_backup failed" in lines["fetch_backup"]
    assert done.stdout.splitlines()[-1].startswith("RED: deploy_new_schema, store_backup")
    assert not flag.exists(), "maintenance left on"
    record = hookrehearsal.last(reports)
    assert record is not None and not record.ok
