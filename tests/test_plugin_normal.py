"""The phase suites' plugin as a pytest user expects one: ini keys beside the flags with one precedence, the
criterion id as a keyword (`-k PRE-08`) and a JUnit property, read-only invocations that write nothing, pytest-xdist
refused in one line, and public fixtures named gate_* with docstrings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.rehearsal  # every test runs the phase suites (or the console script) in a child

TARGET_VARIABLES = ("DATABASE_URL", "API_BASE_URL", "PHI_ENCRYPTION_KEY", "BACKUP_FILE", "APP_LOG_FILE", "GATE_CONFIG",
                    "BASELINE_DATABASE_URL", "GATE_API_USERNAME", "GATE_API_PASSWORD", "GATE_SANDBOX",
                    "GATE_SANDBOX_PROVIDER", "GATE_REHEARSAL", "GATE_RUN_DIR", "CI", "PYTEST_ADDOPTS")


def pytest_child(*args: str, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """pytest in a child process from the project folder, no target and no run-dir flag: the run's folder is
    wherever the options (or GATE_REPORTS_DIR, here a fresh folder under tmp_path) put it."""
    clean = {k: v for k, v in os.environ.items() if k not in TARGET_VARIABLES}
    clean |= {"GATE_REPORTS_DIR": str(tmp_path / "reports")} | (env or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=600)


def written(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("shows", ["--collect-only", "--markers", "--fixtures", "--help", "--fixtures-per-test"])
def test_a_read_only_invocation_writes_no_run_folder_or_report(tmp_path: Path, shows: str) -> None:
    done = pytest_child("-m", "premigration", shows, f"--gate-run-dir={tmp_path / 'run'}", tmp_path=tmp_path,
                        env={"GATE_SANDBOX": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert written(tmp_path) == [], f"{shows} wrote {written(tmp_path)}"
    done = pytest_child("-m", "premigration", shows, tmp_path=tmp_path, env={"GATE_SANDBOX": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert written(tmp_path) == [], f"{shows} wrote {written(tmp_path)} (GATE_REPORTS_DIR)"


def collected_criteria(tmp_path: Path, *args: str) -> dict[str, list[str]]:
    dump = tmp_path / "criteria.json"
    done = pytest_child("-p", "tests.support.criteria_dump", "--collect-only", "-q", *args, tmp_path=tmp_path,
                        env={"GATE_SANDBOX": "1", "CRITERIA_DUMP": str(dump)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {nodeid: criteria for nodeid, (_, criteria) in json.loads(dump.read_text()).items()}


def test_a_criterion_id_selects_exactly_its_tests_with_k(tmp_path: Path) -> None:
    every = collected_criteria(tmp_path, "-m", "premigration")
    wanted = sorted(n for n, criteria in every.items() if "PRE-08" in criteria)
    assert wanted, "no premigration test proves PRE-08"
    assert sorted(collected_criteria(tmp_path, "-m", "premigration", "-k", "PRE-08")) == wanted
    assert sorted(collected_criteria(tmp_path, "-m", "premigration", "-k", "PRE-08 or PRE-13")) == sorted(
        n for n, criteria in every.items() if {"PRE-08", "PRE-13"} & set(criteria))


def test_the_ini_keys_set_the_run_folder_and_the_junit_xml_names_the_criterion(tmp_path: Path) -> None:
    """`gate_run_dir` and `gate_patients` as ini keys (-o is pytest's ini override) do what their flags do."""
    run_dir = tmp_path / "from-ini"
    done = pytest_child("-m", "premigration", "-k", "PRE-01", "-o", f"gate_run_dir={run_dir}", "-o",
                        "gate_patients=20", tmp_path=tmp_path, env={"GATE_SANDBOX": "1"})
    assert done.returncode == 0, done.stdout[-3000:]
    results = json.loads((run_dir / "criteria-premigration.json").read_text())
    assert {t["criterion"] for t in results["tests"]} == {"PRE-01"}
    cases = ET.parse(run_dir / "premigration.xml").getroot().iter("testcase")
    traced = {p.get("value") for case in cases for p in case.iter("property") if p.get("name") == "criterion"}
    assert traced == {"PRE-01"}
    assert not (tmp_path / "reports").exists(), "the ini key's run folder was not used"


@pytest.mark.parametrize(("flag", "env", "ini", "named"), [
    ("flagged.provider:P", "environ.provider:P", "ini.provider:P", "flagged.provider"),
    (None, "environ.provider:P", "ini.provider:P", "environ.provider"),
    (None, None, "ini.provider:P", "ini.provider"),
])
def test_an_option_is_taken_from_the_flag_then_the_environment_then_the_ini_key(
        tmp_path: Path, flag: str | None, env: str | None, ini: str, named: str) -> None:
    """The provider's name is in its one-line error, so the line shows which of the three won."""
    args = ["-m", "premigration", "--collect-only", "-o", f"gate_sandbox_provider={ini}"]
    args += [f"--gate-sandbox-provider={flag}"] if flag else []
    done = pytest_child(*args, tmp_path=tmp_path,
                        env={"GATE_SANDBOX": "1"} | ({"GATE_SANDBOX_PROVIDER": env} if env else {}))
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:]
    assert f"sandbox provider '{named}:P': cannot import {named}" in done.stderr, done.stderr


@pytest.mark.parametrize(("env", "ini", "refused"), [
    ({}, "true", False),  # the ini key asks for the sandbox in CI
    ({"GATE_SANDBOX": "0"}, "true", True),  # the environment wins over the ini key
    ({}, "false", True),
])
def test_the_sandbox_asked_for_by_ini_key_and_overruled_by_the_environment(tmp_path: Path, env: dict, ini: str,
                                                                            refused: bool) -> None:
    done = pytest_child("-m", "premigration", "--collect-only", "-q", "-o", f"gate_sandbox={ini}", tmp_path=tmp_path,
                        env={"CI": "true"} | env)
    if refused:
        assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:]
        assert "no target: DATABASE_URL is not set" in done.stderr
    else:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_a_bad_ini_number_is_one_line(tmp_path: Path) -> None:
    done = pytest_child("-m", "premigration", "--collect-only", "-o", "gate_patients=many", tmp_path=tmp_path,
                        env={"GATE_SANDBOX": "1"})
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: migration-gate: ini gate_patients must be a whole number" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_xdist_workers_are_refused_for_the_phase_suites_in_one_line(tmp_path: Path) -> None:
    done = pytest_child("-m", "premigration", "-n", "2", tmp_path=tmp_path, env={"GATE_SANDBOX": "1"})
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:]
    assert done.stderr.strip().splitlines() == [
        "ERROR: migration-gate: the phase suites run in one pytest process; drop -n (pytest-xdist) or give -n 0 "
        "(their checks use GATE_WORKERS processes themselves)"]
    assert written(tmp_path) == []
    assert pytest_child("-m", "premigration", "-n", "0", "--collect-only", tmp_path=tmp_path,
                        env={"GATE_SANDBOX": "1"}).returncode == 0


PUBLIC_FIXTURES = ("gate_session", "gate_config", "gate_run_dir", "gate_codec", "gate_target", "gate_db",
                   "gate_catalog", "gate_baseline_db", "gate_legacy", "gate_api", "gate_api_credentials",
                   "gate_api_user_id")


def test_the_public_fixtures_are_named_gate_and_say_what_they_give(tmp_path: Path) -> None:
    done = pytest_child("-m", "premigration", "--fixtures", tmp_path=tmp_path, env={"GATE_SANDBOX": "1"})
    assert done.returncode == 0, done.stdout[-2000:]
    shown = done.stdout.split("fixtures defined from migration_gate.suite.plugin", 1)[1].split("\n---", 1)[0]
    entries = {line.split()[0]: next_line.strip() for line, next_line in
               zip(shown.splitlines(), shown.splitlines()[1:], strict=False)
               if " -- migration_gate/suite/plugin.py" in line}
    assert sorted(entries) == sorted(PUBLIC_FIXTURES)
    assert [name for name, doc in entries.items() if not doc or "no docstring" in doc] == []


def test_one_console_script_runs_every_command() -> None:
    """`migration-gate <command>` (pyproject [project.scripts]) dispatches as `python -m migration_gate.cli` does."""
    command = Path(sys.executable).parent / "migration-gate"
    done = subprocess.run([command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: migration-gate {cutover,rehearse,precheck,"), done.stderr
    done = subprocess.run([command, "bundle", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--run-dir" in done.stdout, done.stderr
