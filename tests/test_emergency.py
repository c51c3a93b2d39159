"""scripts/emergency (issue 22 item 1): maintenance on or off at once through the configured hook, recorded in the
run with who, why and when, also when the hook failed; listed in the sign-off. One line and exit 2 for bad usage.
Real shell hooks, no cluster (the cut-over with the sandbox's page: tests/test_rollback_writes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migration_gate.cli.main import main
from migration_gate.config import load_config
from migration_gate.report import signoff
from migration_gate.run import emergency
from migration_gate.run.runstate import RunState
from tests.support.preflight import write_config


@pytest.fixture
def run(tmp_path: Path) -> Path:
    folder = tmp_path / "reports" / "cutover-live"
    folder.mkdir(parents=True)
    RunState(run_dir=str(folder), target="db.example:5432/app", migration_file="m.sql", migration_sha256="0",
             status="green").save()
    return folder


def _emergency(config: Path, run: Path, *args: str) -> int:
    return main(["emergency", *args, "--run-dir", str(run), "--config", str(config)])


def test_emergency_maintenance_is_switched_at_once_and_recorded_with_who_why_and_when(tmp_path: Path, run: Path,
                                                                                     capsys) -> None:
    flag = tmp_path / "maintenance.flag"
    config = write_config(tmp_path, tmp_path / "calls", maintenance_on=f"touch {flag}",
                          maintenance_off="echo 'host API: 502 Bad Gateway' >&2; exit 1")
    signoff.write(RunState.load(run), run, {})  # a finished run: its sign-off follows the record

    assert _emergency(config, run, "maintenance-on", "--by", "Dana Reyes (DBA)", "--why", "corrupt rows",
                      "--dry-run") == 0
    assert not flag.exists() and emergency.recorded(run) == []  # a dry run changes and records nothing
    assert _emergency(config, run, "maintenance-on", "--by", "Dana Reyes (DBA)", "--why", "corrupt rows") == 0
    assert flag.exists()
    assert "maintenance-on by Dana Reyes (DBA) (corrupt rows): done" in capsys.readouterr().out
    assert _emergency(config, run, "maintenance-off", "--by", "Sam Okafor", "--why", "fixed") == 1
    err = capsys.readouterr().err
    assert "FAILED: hook maintenance_off failed with exit code 1: host API: 502" in err
    assert len(err.strip().splitlines()) == 1

    first, second = emergency.recorded(run)
    assert (first.action, first.by, first.why, first.ok) == ("maintenance-on", "Dana Reyes (DBA)", "corrupt rows", True)
    assert (second.action, second.ok) == ("maintenance-off", False) and first.at <= second.at
    page = (run / "signoff.html").read_text()
    assert "Emergency maintenance switches" in page and "Dana Reyes (DBA)" in page and "FAILED: hook" in page
    assert json.loads((run / "emergency.jsonl").read_text().splitlines()[0])["why"] == "corrupt rows"


@pytest.mark.parametrize(("args", "fragment"), [
    (["maintenance-on", "--by", "Dana", "--why", " "], "--why TEXT is required"),
    (["maintenance-on", "--by", " ", "--why", "x"], "--by NAME is required"),
    (["maintenance-on", "--by", "Dana", "--why", "x", "--run-dir", "nowhere"], "is not a run folder"),
    (["maintenance-off", "--by", "Dana", "--why", "x", "--dry-run"], "no [hooks] maintenance_off command"),
])
def test_a_bad_emergency_request_is_one_line_and_exit_2(tmp_path: Path, run: Path, capsys, args, fragment) -> None:
    config = write_config(tmp_path, tmp_path / "calls", maintenance_off="")
    assert main(["emergency", "--run-dir", str(run), "--config", str(config), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1, err
    assert emergency.recorded(run) == [] and load_config(config).hooks.get("maintenance_on")
