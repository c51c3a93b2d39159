"""The one channel from the gate to a phase suite: the run state in a context file beside the phase, the secrets
in the suite's environment only (migration_gate.config.context, migration_gate.run.suites)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migration_gate.app.hooks import CutoverTarget, ShellHooks
from migration_gate.config import ConfigError, context_by_hand, load_config, load_environment
from migration_gate.config.context import SECRET_VARIABLES, SuiteContext
from migration_gate.config.environment import CONTEXT_VARIABLES
from migration_gate.run.runstate import RunState
from migration_gate.run.suites import suite_context, suite_env

KEY = "ab" * 32
DSN_PASSWORD, API_PASSWORD, BYPASS = "dsn-pw-7Qx", "api-pw-9Zk", "bypass-token-3Lm"


def _handed(tmp_path: Path) -> tuple[CutoverTarget, RunState]:
    target = CutoverTarget(dsn=f"postgresql://gate:{DSN_PASSWORD}@db.internal:5432/app", key=KEY,
                           api_base_url="http://127.0.0.1:9", api_username="fixture-user-5Tq",
                           api_password=API_PASSWORD, hooks=ShellHooks({}), app_log_file=tmp_path / "app.log",
                           api_headers={"X-Maintenance-Bypass": BYPASS}, allow_writes=True)
    state = RunState(run_dir=str(tmp_path), target="t", migration_file="m", migration_sha256="s", log_offset=7,
                     backup={"path": str(tmp_path / "backup.dump.age")}, carried=str(tmp_path / "carried.json"))
    return target, state


def test_the_context_file_holds_the_run_state_and_none_of_the_secrets(tmp_path: Path) -> None:
    target, state = _handed(tmp_path)
    path = suite_context(target, load_config(), state).write(tmp_path / "premigration" / "context.json")
    text = path.read_text()
    for secret in (DSN_PASSWORD, target.dsn, KEY, target.api_username, API_PASSWORD, BYPASS):
        assert secret not in text, "a secret is in the context file"
    assert not set(json.loads(text)) & {name.lower() for name in SECRET_VARIABLES}
    handed = SuiteContext.read(path)
    assert (handed.run_dir, handed.log_offset, handed.backup_file, handed.carried_rows, handed.allow_writes) == (
        tmp_path, 7, tmp_path / "backup.dump.age", tmp_path / "carried.json", True)


def test_the_secrets_stay_in_the_suites_environment_and_nothing_else_steers_it(tmp_path: Path,
                                                                                monkeypatch) -> None:
    gate = load_config()
    for name in CONTEXT_VARIABLES:  # a caller's stale run state never reaches the suite beside its context
        monkeypatch.setenv(name, "stale")
    target, state = _handed(tmp_path)
    env = suite_env(target, gate, state)
    assert (env["DATABASE_URL"], env["PHI_ENCRYPTION_KEY"], env["GATE_API_PASSWORD"]) == (target.dsn, KEY,
                                                                                           API_PASSWORD)
    assert BYPASS in env["GATE_API_HEADERS"]
    assert not [name for name in CONTEXT_VARIABLES if name in env]


def test_a_suite_run_by_hand_builds_its_context_from_the_environment(tmp_path: Path) -> None:
    env = load_environment({"DATABASE_URL": "postgresql://u@h/db", "PHI_ENCRYPTION_KEY": KEY,
                            "API_BASE_URL": "http://h/", "APP_LOG_OFFSET": "42", "BACKUP_FILE": "/b.dump",
                            "GATE_ALLOW_WRITES": "1"})
    context = context_by_hand(env, tmp_path)
    assert (context.run_dir, context.reports_dir, context.api_base_url, context.log_offset, context.backup_file,
            context.allow_writes) == (tmp_path, tmp_path, "http://h", 42, Path("/b.dump"), True)


@pytest.mark.parametrize("text, said", [("{", "not JSON"), ("[]", r"not a context the gate wrote \(no run_dir\)"),
                                        ('{"run_dir": "/r", "password": "x"}', "unknown key password")])
def test_a_context_file_the_gate_did_not_write_is_one_line(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "context.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"gate context {path}: {said}"):
        SuiteContext.read(path)
