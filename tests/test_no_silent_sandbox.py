"""No silent sandbox (issue 9 items 1 and 2): a set-but-empty DATABASE_URL is a usage error, in CI the sandbox
runs only when asked for, every report of a sandbox run carries the banner and a real target's none, the
staging workflow checks its secrets first, and a pytest without the project's dependencies gets one line.
The suites run as a user runs them, in a child pytest (tests/test_suites.py run_suite)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from migration_gate.app.hooks import CutoverTarget
from migration_gate.config import SANDBOX_BANNER, ConfigError, load_config, load_environment
from migration_gate.core.deps import DEPENDENCIES
from migration_gate.report import signoff
from migration_gate.run.runstate import RunState
from migration_gate.run.suites import suite_env
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import ROOT
from tests.support.scripts import one_line_error, script
from tests.support.suites import run_suite

FAST = ("-m", "premigration", "-k", "reachable or key_is_present", "-q")  # two quick phase tests
WORKFLOW = ROOT / ".github" / "workflows" / "staging-premigration.yml"


def one_usage_line(done: subprocess.CompletedProcess, fragment: str) -> None:
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def reports(run_dir: Path) -> tuple[str, dict[str, str], dict]:
    """The run's HTML, its JUnit suite properties and its results JSON."""
    html = next(run_dir.glob("*.html")).read_text()
    suite = ET.parse(next(run_dir.glob("*.xml"))).getroot().find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    return html, properties, json.loads(next(run_dir.glob("criteria-*.json")).read_text())


# -- set but empty --------------------------------------------------------------------------------------------

@pytest.mark.rehearsal
@pytest.mark.parametrize("ci", ["", "true"])
def test_an_empty_database_url_is_a_usage_error_and_runs_nothing(tmp_path: Path, ci: str) -> None:
    done = run_suite(*FAST, env={"DATABASE_URL": "", "CI": ci}, run_dir=tmp_path / "run", ask_sandbox=False)
    one_usage_line(done, "migration-gate: DATABASE_URL is set but empty")
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir()), "something ran"


@pytest.mark.rehearsal
@pytest.mark.parametrize("name", ["PHI_ENCRYPTION_KEY", "API_BASE_URL", "GATE_API_PASSWORD", "BACKUP_FILE"])
def test_an_empty_target_variable_beside_a_target_is_a_usage_error(tmp_path: Path, name: str) -> None:
    env = {"DATABASE_URL": "postgresql://gate:s3cretpw@127.0.0.1:1/app", "PHI_ENCRYPTION_KEY": "ab" * 32, name: ""}
    done = run_suite(*FAST, env=env, run_dir=tmp_path)
    one_usage_line(done, f"migration-gate: {name} is set but empty")
    assert "s3cretpw" not in done.stderr


@pytest.mark.rehearsal
@pytest.mark.parametrize("name", ["precheck", "cutover"])
def test_the_scripts_refuse_an_empty_database_url_in_one_line(name: str) -> None:
    one_line_error(script(name, env={"DATABASE_URL": "", "PHI_ENCRYPTION_KEY": SANDBOX_KEY}), 2,
                   f"{name}: DATABASE_URL is set but empty")


def test_a_cut_over_hands_its_suites_no_empty_variable() -> None:
    """scripts/backup needs no API: its suites get the API variables unset, not empty (which they refuse)."""
    target = CutoverTarget(dsn="postgresql://x@127.0.0.1:1/x", key=SANDBOX_KEY, api_base_url="", api_username="",
                           api_password="", hooks=None)
    env = suite_env(target, load_config(), RunState(run_dir="r", target="t", migration_file="m", migration_sha256="0"))
    assert env["DATABASE_URL"] and not {"API_BASE_URL", "GATE_API_USERNAME", "GATE_API_PASSWORD"} & set(env)
    assert load_environment(env).api_base_url is None


# -- in CI, the sandbox only when asked for ---------------------------------------------------------------------

@pytest.mark.rehearsal
@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_without_a_target_the_run_stops_with_one_line(tmp_path: Path, ci: str) -> None:
    done = run_suite(*FAST, env={"CI": ci}, run_dir=tmp_path / "run", ask_sandbox=False)
    one_usage_line(done, "migration-gate: no target: DATABASE_URL is not set; in CI the sandbox runs only with "
                         "--gate-sandbox or GATE_SANDBOX=1")
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir()), "something ran"


@pytest.mark.rehearsal
@pytest.mark.parametrize("how", ["option", "variable"])
def test_in_ci_the_sandbox_runs_when_asked_and_every_report_says_so(tmp_path: Path, how: str) -> None:
    args, env = ((*FAST, "--gate-sandbox"), {"CI": "true"}) if how == "option" else (FAST, {"CI": "true",
                                                                                         "GATE_SANDBOX": "1"})
    done = run_suite(*args, env=env, run_dir=tmp_path, ask_sandbox=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    tail = done.stdout.strip().splitlines()[-4:]
    assert any(SANDBOX_BANNER in line for line in tail), tail  # beside the counts, where "2 passed" is read
    html, properties, results = reports(tmp_path)
    assert f"<title id=\"head-title\">{SANDBOX_BANNER}" in html and f"<h1 id=\"title\">{SANDBOX_BANNER}" in html
    assert "class='gate-sandbox'" in html  # and again above the summary's counts
    assert properties["sandbox"] == SANDBOX_BANNER
    assert results["sandbox"] is True and results["counts"]["passed"] == 2


@pytest.mark.rehearsal
def test_outside_ci_the_sandbox_needs_no_asking_and_still_says_so(tmp_path: Path) -> None:
    done = run_suite(*FAST, env={"CI": ""}, run_dir=tmp_path, ask_sandbox=False)
    assert done.returncode == 0, done.stdout[-2000:]
    assert SANDBOX_BANNER in done.stdout and reports(tmp_path)[1]["sandbox"] == SANDBOX_BANNER


@pytest.mark.rehearsal
@pytest.mark.parametrize("how", ["option", "variable"])
def test_asking_for_the_sandbox_beside_a_target_is_a_usage_error(tmp_path: Path, how: str) -> None:
    env = {"DATABASE_URL": "postgresql://gate:s3cretpw@127.0.0.1:1/app", "PHI_ENCRYPTION_KEY": "ab" * 32}
    done = (run_suite(*FAST, "--gate-sandbox", env=env, run_dir=tmp_path) if how == "option" else
            run_suite(*FAST, env=env | {"GATE_SANDBOX": "1"}, run_dir=tmp_path))
    one_usage_line(done, "asks for the sandbox but DATABASE_URL names a target")


def test_a_real_target_run_has_no_banner(legacy_db: str, tmp_path: Path) -> None:
    done = run_suite(*FAST, env={"DATABASE_URL": legacy_db, "PHI_ENCRYPTION_KEY": SANDBOX_KEY, "CI": "true"},
                     run_dir=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    html, properties, results = reports(tmp_path)
    assert "SANDBOX" not in done.stdout + done.stderr + html and "sandbox" not in properties
    assert results["sandbox"] is False and results["counts"]["passed"] == 2


@pytest.mark.parametrize("env, expected", [
    ({}, (False, False)), ({"CI": "true"}, (True, False)), ({"CI": "false"}, (False, False)),
    ({"CI": "woodpecker"}, (True, False)), ({"CI": "1", "GATE_SANDBOX": "1"}, (True, True)),
    ({"GATE_SANDBOX": "0"}, (False, False)),
])
def test_ci_and_the_sandbox_request_are_read_as_runners_set_them(env: dict, expected: tuple) -> None:
    read = load_environment(env)
    assert (read.ci, read.sandbox_requested) == expected
    assert (read.sandbox_refused(asked=False) is not None) == (expected == (True, False))


def test_a_sandbox_flag_with_another_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="GATE_SANDBOX must be 1 or 0"):
        load_environment({"GATE_SANDBOX": "please"})


# -- the sign-off -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["green", "over-limit"])
def test_a_sandbox_sign_off_opens_with_the_banner_and_never_reads_as_live(tmp_path: Path, status: str) -> None:
    state = RunState(run_dir=str(tmp_path), target="127.0.0.1:5432/app", migration_file="m", migration_sha256="0",
                     status=status)
    sandbox = signoff.render(state, tmp_path, {"Target": "embedded sandbox"}, sandbox=True)
    real = signoff.render(state, tmp_path, {"Target": "db.example.com:5432/app"})
    assert sandbox.index(SANDBOX_BANNER) < sandbox.index("<h1>") and f"<title>{SANDBOX_BANNER}" in sandbox
    assert "live on the new schema" not in sandbox and "live on the new schema" in real
    assert "SANDBOX" not in real


# -- the staging workflow ----------------------------------------------------------------------------------

def _steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["premigration"]["steps"]


def _secrets(step: dict) -> dict[str, str]:
    """The step's env variables that come from secrets: variable -> secret."""
    found = {}
    for name, value in (step.get("env") or {}).items():
        match = re.fullmatch(r"\$\{\{\s*secrets\.(\w+)\s*\}\}", str(value))
        if match:
            found[name] = match.group(1)
    return found


def _check_step() -> tuple[dict, set[str]]:
    steps = _steps()
    pytest_step = next(i for i, s in enumerate(steps) if "pytest" in str(s.get("run", "")))
    used = set(_secrets(steps[pytest_step]).values())
    checks = [s for s in steps[:pytest_step] if set(_secrets(s).values()) >= used and s.get("run")]
    assert used and checks, "no step before pytest checks the secrets it uses"
    return checks[0], used


def test_the_staging_workflow_checks_every_secret_before_pytest() -> None:
    step, used = _check_step()
    assert used == {"STAGING_DATABASE_URL", "STAGING_PHI_ENCRYPTION_KEY", "STAGING_API_BASE_URL",
                    "STAGING_API_USERNAME", "STAGING_API_PASSWORD"}
    assert all(name == secret for name, secret in _secrets(step).items())  # the line names the secret to set


@pytest.mark.parametrize("missing", [["STAGING_API_PASSWORD"], ["STAGING_DATABASE_URL", "STAGING_PHI_ENCRYPTION_KEY"],
                                     []])
def test_the_secrets_step_fails_naming_each_missing_secret(missing: list[str]) -> None:
    step, used = _check_step()
    env = {"PATH": os.environ["PATH"]} | {name: "" if name in missing else "set" for name in _secrets(step)}
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == (1 if missing else 0), done.stdout + done.stderr
    named = set(re.findall(r"secret (\w+) is not set", done.stdout))
    assert named == set(missing), done.stdout


# -- a pytest without the project's dependencies ---------------------------------------------------------------

@pytest.mark.rehearsal
def test_a_pytest_without_the_dependencies_says_what_to_run_in_one_line(tmp_path: Path) -> None:
    """As a system pytest meets the project: psycopg and httpx cannot be imported (blocked at start-up)."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules.update(psycopg=None, httpx=None)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"} | {"PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "premigration", "--gate-sandbox"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    one_usage_line(done, "migration-gate: this pytest")
    assert "lacks the project's dependencies (psycopg, httpx): run `bash scripts/setup`, then " \
           "`.venv/bin/pytest -m premigration --gate-sandbox`" in done.stderr


def test_the_dependency_check_knows_every_dependency_of_the_project() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower() for spec in declared}
    assert names == set(DEPENDENCIES)
