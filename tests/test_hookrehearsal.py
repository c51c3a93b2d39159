"""The pre-flight's judgement of the last hooks rehearsal (run/hookrehearsal.py), without a cluster: none, red,
stale, made with other [hooks] commands, green; the override a forced start leaves in the run; the new key."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from migration_gate.app.hooks import CutoverTarget
from migration_gate.config import ConfigError, load_config
from migration_gate.core.progress import Progress
from migration_gate.run import hookrehearsal
from migration_gate.run.gate import Gate
from sandbox.synthetic import SANDBOX_KEY
from tests.support.preflight import rehearsed, write_config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, tmp_path / "calls")


def test_none_recorded_is_refused_with_what_to_run(config: Path, tmp_path: Path) -> None:
    found, problems = hookrehearsal.problems(load_config(config), tmp_path / "reports")
    assert found == "" and problems == [
        "hooks rehearsal: none recorded (hooks-rehearsal.json in the reports folder): run scripts/cutover "
        "--rehearse-hooks against staging before the window (or --force, recorded in the run)"]


def test_a_red_one_names_the_hook(config: Path, tmp_path: Path) -> None:
    rehearsed(config, tmp_path, fetch_backup="failed")
    assert hookrehearsal.problems(load_config(config), tmp_path)[1][0].endswith("was red: fetch_backup: test")


def test_a_stale_one_and_a_fresh_one(config: Path, tmp_path: Path) -> None:
    config.write_text(config.read_text().replace("\n[hooks]\n", "\n[hooks]\nrehearsal_max_age_hours = 24\n"))
    gate = load_config(config)
    rehearsed(config, tmp_path, datetime.now(UTC) - timedelta(hours=25))
    assert "older than [hooks] rehearsal_max_age_hours = 24" in hookrehearsal.problems(gate, tmp_path)[1][0]
    rehearsed(config, tmp_path, datetime.now(UTC) - timedelta(hours=23))
    found, problems = hookrehearsal.problems(gate, tmp_path)
    assert problems == [] and found.startswith("green at ") and "23.0 h ago" in found


def test_a_hook_changed_since_the_rehearsal_is_not_rehearsed(config: Path, tmp_path: Path) -> None:
    rehearsed(config, tmp_path)
    gate = load_config(config)
    changed = dataclasses.replace(gate, hooks=gate.hooks | {"store_backup": "aws s3 cp ..."})
    assert hookrehearsal.problems(changed, tmp_path)[1] == [
        f"hooks rehearsal: the [hooks] commands changed since the last one (at {hookrehearsal.last(tmp_path).at}): "
        "rehearse them again"]


def test_a_forced_start_records_the_override_in_the_run(config: Path, tmp_path: Path) -> None:
    run = tmp_path / "cutover-1"
    run.mkdir()
    assert hookrehearsal.overridden(run) == []
    hookrehearsal.keep_in_run(run, ["hooks rehearsal: none recorded"], "Test Operator")
    assert hookrehearsal.overridden(run) == ["hooks rehearsal: none recorded"]
    assert (run / "hooks-rehearsal.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("value", ["0", '"soon"', "-1"])
def test_rehearsal_max_age_hours_must_be_positive(config: Path, value: str) -> None:
    config.write_text(config.read_text().replace("\n[hooks]\n", f"\n[hooks]\nrehearsal_max_age_hours = {value}\n"))
    with pytest.raises(ConfigError, match=r"\[hooks\]: rehearsal_max_age_hours must be a positive number of hours"):
        load_config(config)


def test_a_run_started_without_a_valid_rehearsal_is_forced_never_green(config: Path, tmp_path: Path) -> None:
    run = tmp_path / "cutover-1"
    hookrehearsal.keep_in_run(run, ["hooks rehearsal: none recorded"], "Test Operator")
    target = CutoverTarget(dsn="postgresql://x@127.0.0.1:1/x", key=SANDBOX_KEY, api_base_url="", api_username="",
                           api_password="", hooks=None, app_log_file=tmp_path / "app.log")
    runner = Gate(load_config(config), target, run, Progress(quiet=True))
    runner._take_in_overrides()  # what the run does first
    assert runner.state.forced and runner.state.forced_past == ["hooks not rehearsed (hooks rehearsal: none recorded)"]
