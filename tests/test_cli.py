"""The scripts as a release manager meets them: --help everywhere, one clear line and a non-zero exit for bad
input (never a traceback, nothing changed), a dry run, --json, and the rehearsal end to end."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.cli import main as cli
from migration_gate.cli.main import NEEDS
from migration_gate.config import SANDBOX_BANNER, load_config
from migration_gate.core.criteria import FAILURE_LINES, SUCCESS_LINES
from migration_gate.core.errors import GateError
from migration_gate.core.redact import describe_target, safe_message
from migration_gate.core.result import error_text
from migration_gate.core.status import EXIT_OF
from migration_gate.run.runstate import schema_state
from sandbox.synthetic import SANDBOX_KEY
from tests.support.cutover import config_with_store, rollback_run
from tests.support.scripts import one_line_error, script
from tests.support.suites import not_owner_only

SCRIPTS = ["setup", "test", "rehearse", "precheck", "backup", "migrate", "cutover", "rollback", "attest",
           "bundle", "watch"]
@pytest.mark.rehearsal
@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(name: str) -> None:
    done = script(name, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower() or "Usage" in done.stdout


@pytest.mark.rehearsal
@pytest.mark.parametrize("name", list(NEEDS))
def test_each_help_lists_its_own_options_and_the_environment_it_reads(name: str) -> None:
    text = script(name, "--help").stdout
    listed = re.findall(r"^  ([A-Z_]{6,})\s", text.split("Environment:")[1].split("Exit codes")[0], re.M)
    assert listed == list(NEEDS[name])
    options = text.split("Environment:")[0]  # the exit codes below name scripts/rollback --dry-run for everyone
    assert ("--force" in options) is (name in ("cutover", "migrate"))
    assert ("--dry-run" in options) is (name in ("cutover", "rollback", "emergency"))
    assert ("--run-dir" in text) is (name != "cutover")


@pytest.mark.rehearsal
def test_exit_codes_are_documented_in_help() -> None:
    text = script("cutover", "--help").stdout
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130"):
        assert f"  {code}" in text
    for code in sorted(set(EXIT_OF.values())):  # the one table: every verdict's code is explained, a forced run's too
        assert re.search(rf"^  {code} ", text, re.M), code
    assert re.search(r"^  5  forced: scripts/cutover --force went on past red", text, re.M)


@pytest.mark.rehearsal
def test_cutover_without_a_target_is_one_line() -> None:
    one_line_error(script("cutover"), 2, "DATABASE_URL, PHI_ENCRYPTION_KEY, API_BASE_URL")


@pytest.mark.rehearsal
def test_a_bad_key_is_one_line_without_the_key() -> None:
    key = "z" * 64
    done = script("cutover", env={"DATABASE_URL": "postgresql://x@127.0.0.1:1/x", "PHI_ENCRYPTION_KEY": key})
    one_line_error(done, 2, "PHI_ENCRYPTION_KEY must be hexadecimal")
    assert key not in done.stderr


@pytest.mark.rehearsal
def test_rehearse_refuses_bad_arguments_in_one_line() -> None:
    done = script("rehearse", "--patients", "0")
    assert done.returncode == 2 and "--patients must be between" in done.stderr and "Traceback" not in done.stderr
    done = script("rehearse", "--migration", "/nonexistent.sql")
    assert done.returncode == 2 and "no such file" in done.stderr


def test_backup_to_an_unusable_folder_is_one_line(legacy_db: str, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = script("backup", f"--run-dir={blocker / 'sub'}", env={"DATABASE_URL": legacy_db,
                                                                   "PHI_ENCRYPTION_KEY": SANDBOX_KEY})
    one_line_error(done, 1, "backup: Not a directory: ")


@pytest.mark.rehearsal
def test_backup_of_an_unreachable_database_is_one_line_and_redacted(tmp_path: Path) -> None:
    done = script("backup", f"--run-dir={tmp_path}", env={
        "DATABASE_URL": "postgresql://gate:hunter2secret@127.0.0.1:1/app", "PHI_ENCRYPTION_KEY": SANDBOX_KEY})
    one_line_error(done, 1, "backup: database unreachable or connection lost")
    assert "hunter2secret" not in done.stderr + done.stdout
    assert "Connection refused" in done.stderr and "\t" not in done.stderr  # the cause, not libpq's hint


def test_dry_run_prints_the_plan_and_changes_nothing(legacy_db: str) -> None:
    done = script("cutover", "--dry-run", "--json", env={
        "DATABASE_URL": legacy_db, "PHI_ENCRYPTION_KEY": SANDBOX_KEY, "API_BASE_URL": "http://127.0.0.1:9",
        "GATE_API_USERNAME": "demo_therapist1", "GATE_API_PASSWORD": "demo-password-1"})
    assert done.returncode == 4, done.stderr  # no app at that address, placeholder hooks: not ready
    plan = json.loads(done.stdout)
    assert not plan["ready"] and plan["statements"] > 100
    assert {i["name"]: i["ok"] for i in plan["inputs"]}["schema"] is True
    assert plan["data_steps"] == ["sandbox.data_steps:encrypt_organization_ein"]
    with psycopg.connect(legacy_db) as conn:
        assert schema_state(conn, load_config()) == "legacy"


ROLLBACK_ENV = {"PHI_ENCRYPTION_KEY": SANDBOX_KEY, "API_BASE_URL": "http://127.0.0.1:9",
                "GATE_API_USERNAME": "demo_therapist1", "GATE_API_PASSWORD": "demo-password-1"}


def test_rollback_refuses_a_backup_that_changed(legacy_db: str, tmp_path: Path) -> None:
    record = rollback_run(legacy_db, tmp_path, describe_target(legacy_db))
    with open(record.path, "ab") as handle:
        handle.write(b"tampered")
    done = script("rollback", "--run-dir", str(tmp_path / "run"), env={"DATABASE_URL": legacy_db, **ROLLBACK_ENV})
    one_line_error(done, 4, "as read, state.json recorded at backup time")
    assert re.search(r"sha256 [0-9a-f]{12} as read, state\.json recorded at backup time [0-9a-f]{12}", done.stderr)
    with psycopg.connect(legacy_db) as conn:
        assert schema_state(conn, load_config()) == "legacy"


def test_rollback_refuses_a_run_of_another_database(legacy_db: str, tmp_path: Path) -> None:
    rollback_run(legacy_db, tmp_path, "db.example.com:5432/production")
    done = script("rollback", "--run-dir", str(tmp_path / "run"), env={"DATABASE_URL": legacy_db, **ROLLBACK_ENV})
    one_line_error(done, 4, "is a run against db.example.com:5432/production")


def test_rollback_of_a_run_that_never_migrated_says_so_and_changes_nothing(legacy_db: str, tmp_path: Path) -> None:
    record = rollback_run(legacy_db, tmp_path, describe_target(legacy_db))
    state_file = tmp_path / "run" / "state.json"
    state = json.loads(state_file.read_text())
    state.update(status="red", failure="phase premigration failed: ...",
                 phases=[{"name": "premigration", "status": "failed"}, {"name": "migration", "status": "pending"}])
    state_file.write_text(json.dumps(state))
    before = state_file.read_text()
    done = script("rollback", "--run-dir", str(tmp_path / "run"), env={"DATABASE_URL": legacy_db, **ROLLBACK_ENV})
    assert done.returncode == 0, done.stderr
    assert "never migrated and the database is on the legacy schema: nothing to roll back" in done.stdout
    assert state_file.read_text() == before and Path(record.path).exists()


def test_a_backup_after_red_pre_checks_says_what_it_does_with_the_run(legacy_db: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": legacy_db, **ROLLBACK_ENV, "GATE_REPORTS_DIR": str(tmp_path),  # no app: red pre-checks
           "GATE_CONFIG": str(config_with_store(tmp_path))}
    assert script("precheck", "--quiet", env=env).returncode == 1
    done = script("backup", "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    assert "ended with red pre-checks: this backup goes into a new run" in done.stderr
    assert "scripts/migrate refuses until they are green there" in done.stderr
    migrate = script("migrate", "--quiet", env=env)
    assert migrate.returncode == 4 and "premigration, maintenance not green" in migrate.stderr
    with psycopg.connect(legacy_db) as conn:
        assert schema_state(conn, load_config()) == "legacy"


def test_rollback_of_a_run_left_in_maintenance_does_not_say_nothing_to_do(legacy_db: str, tmp_path: Path) -> None:
    """Never migrated, but maintenance went on and never off: the app must come back, so the rollback runs."""
    rollback_run(legacy_db, tmp_path, describe_target(legacy_db))
    state_file = tmp_path / "run" / "state.json"
    state = json.loads(state_file.read_text())
    state.update(status="interrupted", maintenance_on_at=1.0,
                 phases=[{"name": "maintenance", "status": "passed"}, {"name": "migration", "status": "pending"}])
    state_file.write_text(json.dumps(state))
    done = script("rollback", "--run-dir", str(tmp_path / "run"), env={"DATABASE_URL": legacy_db, **ROLLBACK_ENV})
    assert "nothing to roll back" not in done.stdout and done.returncode != 0  # the placeholder hooks refuse


def test_everything_the_rehearsal_wrote_is_owner_only(rehearsal) -> None:
    """Run folders 0700, state, reports, dumps and logs 0600, whatever the caller's umask (the test's: 022)."""
    done, reports = rehearsal
    assert done.returncode == 0, done.stderr[-2000:]
    assert not_owner_only(reports) == [], "\n".join(not_owner_only(reports))


def test_the_rehearsal_ends_green_with_a_sign_off(rehearsal) -> None:
    """In CI too (a sandbox run by definition), with a GATE_SANDBOX=1 the job set; the sign-off and every phase
    report say SANDBOX, and the sign-off never says the system is live."""
    done, tmp_path = rehearsal
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["verdict"] == "green" and summary["exit_code"] == 0 and summary["sandbox"] == SANDBOX_BANNER
    assert [p["status"] for p in summary["phases"]] == ["passed"] * 8
    signoff = Path(summary["signoff"]).read_text()
    assert "Verdict: PASSED" in signoff and "skipped" not in signoff
    assert "Gate version" in signoff and "(commit " in signoff and "sandbox-hipaa" in signoff  # app's /api/status
    assert re.search(r"Run by</t[hd]>\s*<td>[^<0-9][^<]*</td>", signoff), "the sign-off names no person"
    assert signoff.index(SANDBOX_BANNER) < signoff.index("<h1>") and "live on the new schema" not in signoff
    # the record of a rehearsal: its banner, no approval lines, the checklist's own lines each proven
    assert signoff.index("REHEARSAL: synthetic data") < signoff.index("<h1>") and "class='sign'" not in signoff
    for line in SUCCESS_LINES:
        assert re.search(re.escape(html.escape(line.text)) + r"</td><td>[^<]+</td><td class='ok'>passed<", signoff)
    for line in FAILURE_LINES:
        assert re.search(re.escape(html.escape(line.text)) + r"</td><td>[^<]+</td><td class='ok'>no<", signoff)
    assert re.search(r"<b>RB-01</b>[^<]*</td><td class='muted'>not needed<", signoff)  # a green run: no rollback
    # every sha256 the sign-off lists still matches its file now that the run is over (live files have none)
    artifacts = signoff[signoff.index("id='artifacts'"):]
    listed = re.findall(r"<tr><td>(?:<a href='([^']+)'>|([^<]+?) <span)[^\n]*?</td><td>[\d,]+</td><td>(?:<code>"
                        r"([0-9a-f]{64})</code>|<span)", artifacts)
    run_dir = Path(summary["run_dir"])
    hashed = [(link or name, digest) for link, name, digest in listed if digest]
    assert len(hashed) > 20 and all(backup.sha256_file(run_dir / html.unescape(n)) == d for n, d in hashed)
    phase_reports = list(Path(summary["run_dir"]).glob("*/*.html"))
    assert len(phase_reports) == 4 and all(SANDBOX_BANNER in p.read_text() for p in phase_reports)
    assert not list(tmp_path.glob("*/sandbox/*.flag")), "maintenance left on"
    # the post-checks read the API's log through the sandbox's log command, as a hosted app's (issue 9 item 3)
    results = json.loads(next(tmp_path.glob("*/postmigration/criteria-postmigration.json")).read_text())
    notes = [n for c in results["checks"] for n in c["notes"] if n.startswith("log source: ")]
    assert len(notes) == 1 and notes[0].startswith("log source: command [hooks] logs_since (jsonl); "), notes
    assert int(notes[0].split("; ")[1].split()[0]) > 0


def test_a_cancelled_statement_is_not_called_an_unreachable_database() -> None:
    """QueryCanceled is an OperationalError, but the database answered: the line says what happened."""
    line = cli._one_line("migrate", psycopg.errors.QueryCanceled("canceling statement due to lock timeout"))
    assert line == ("migrate: a statement was cancelled (statement_timeout or lock_timeout): canceling statement "
                    "due to lock timeout")
    refused = cli._one_line("migrate", psycopg.OperationalError("connection to server failed: Connection refused"))
    assert refused == "migrate: database unreachable or connection lost: Connection refused"


@pytest.mark.rehearsal
def test_a_bundle_of_a_folder_that_is_no_run_is_one_line(tmp_path: Path) -> None:
    one_line_error(script("bundle", "--run-dir", str(tmp_path)), 2, "has no signoff.html")


def test_every_error_to_line_form_masks_values_and_secrets() -> None:
    """One rule (redact.error_line) under the report line, a check's problem and the command's line: a database
    error's quoted value and a connection string's password never appear; the gate's own text keeps its names."""
    leak = psycopg.errors.InvalidTextRepresentation(
        'invalid input syntax for type integer: "Jane Doe" at postgresql://gate:hunter22@db/x\nDETAIL: more')
    for line in (cli._one_line("migrate", leak), error_text(leak), safe_message(leak)):
        assert "Jane" not in line and "hunter22" not in line and "DETAIL" not in line, line
        assert "invalid input syntax for type integer" in line, line
    own = GateError("the hook's contract names 'GATE_RUN_DIR' only")
    assert cli._one_line("cutover", own) == "cutover: the hook's contract names 'GATE_RUN_DIR' only"
