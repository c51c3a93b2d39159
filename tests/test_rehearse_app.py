"""Rehearse with your own app ([rehearsal] app_new): the rehearsal starts a team's app by its command in place of
the reference API from the deploy on, hands it only the database, the key and a port, reads its output as the app
log, stops its whole process group, and the sign-off says which app answered.

"An app we did not write in this test" is the reference API started through the generic command; the small apps
that misbehave (exit at once, never healthy, report their environment) are python one-liners. Real processes,
real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from migration_gate.app.appserver import AppServer, AppStartError
from migration_gate.config import TARGET_VARIABLES, AppServerConfig, ConfigError, load_config
from tests.conftest import ROOT

PYTHON = sys.executable
REFERENCE_API = {"command": f"{PYTHON} -m sandbox.api", "cwd": str(ROOT),
                 "env": {"USE_HIPAA_SCHEMA": "true", "JWT_SECRET": "app-new-test-jwt-secret-not-for-production-0123"}}
# an app that serves GET /health 200 on $PORT after writing the names in its environment, and forks a sleeper
# (which only a kill of the whole process group ends)
REPORTING_APP = """
import http.server, os, subprocess, sys
open(sys.argv[1], "w").write("\\n".join(sorted(os.environ)))
open(sys.argv[2], "w").write(str(subprocess.Popen(["sleep", "300"]).pid))
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health).serve_forever()
"""
SHELL_ADDED = {"PWD", "SHLVL", "_", "OLDPWD", "LC_CTYPE"}  # what sh and python add to any environment


def _overlay(tmp_path: Path, app: dict) -> Path:
    """migration.toml with [rehearsal.app_new] added (its relative paths made absolute: the copy is elsewhere)."""
    return _described(tmp_path, "".join(f"{key} = {_table(value) if isinstance(value, dict) else json.dumps(value)}\n"
                                        for key, value in app.items()))


def _described(tmp_path: Path, app_section: str) -> Path:
    text = (ROOT / "migration.toml").read_text().replace('"sandbox/migrations/', f'"{ROOT}/sandbox/migrations/')
    path = tmp_path / "migration.toml"
    path.write_text(f"{text}\n[rehearsal.app_new]\n{app_section}\n")
    return path


def _table(values: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + " }"


def _rehearse(config: Path, reports: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if k not in TARGET_VARIABLES + ("GATE_CONFIG",)}
    done = subprocess.run([str(ROOT / "scripts" / "rehearse"), "--patients", "150", "--quiet", "--config",
                           str(config), "--reports", str(reports)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    [state_file] = reports.glob("rehearsal-*/state.json")
    return done, json.loads(state_file.read_text())


def _gone(pid: int) -> bool:
    """No process with this pid, and no process group it led."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return not Path(f"/proc/{pid}").exists()
    return False


@pytest.mark.rehearsal
def test_a_rehearsal_with_your_app_on_the_new_side_ends_green_and_says_so(tmp_path: Path) -> None:
    done, state = _rehearse(_overlay(tmp_path, REFERENCE_API), tmp_path / "r")
    assert done.returncode == 0 and state["status"] == "green", (state["status"], state["failure"], done.stderr[-800:])
    label = f"your app: {PYTHON} -m sandbox.api in {ROOT}"
    assert f"App on the new side: {label}" in done.stdout
    assert "App on the legacy side: the reference API" in done.stdout
    run = Path(state["run_dir"])
    assert f"new side: {label}" in (run / "signoff.html").read_text()
    log = run / "sandbox" / "app-new.log"  # its output is the app log POST-11 read, owner-only
    assert log.stat().st_mode & 0o777 == 0o600
    assert "log source: file app-new.log (text)" in (run / "postmigration" / "criteria-postmigration.json").read_text()
    started = [json.loads(line) for line in log.read_text().splitlines() if '"startup"' in line]
    assert started and all(_gone(line["pid"]) for line in started)  # its process group ended with the run


@pytest.mark.rehearsal
def test_your_app_that_exits_at_once_rolls_the_cutover_back_with_one_line(tmp_path: Path) -> None:
    done, state = _rehearse(_overlay(tmp_path, {"command": "echo starting; exit 3", "cwd": str(tmp_path)}),
                            tmp_path / "r")
    assert done.returncode == 1 and state["status"] == "rolled-back", (state["status"], done.stderr[-800:])
    deploy = next(p for p in state["phases"] if p["name"] == "deploy")
    assert deploy["status"] == "failed"
    assert deploy["detail"] == (f"AppStartError: your app: echo starting; exit 3 in {tmp_path}: exited with code 3 "
                                f"before GET /health answered; its log (1 line): "
                                f"{Path(state['run_dir']) / 'sandbox' / 'app-new.log'}; rolling back: [deploy] "
                                f"retries = 0 (no redeploy allowed) (diagnosis in the run)")
    assert [p["status"] for p in state["rollback_phases"]] == ["passed", "passed", "passed"]


def _app(tmp_path: Path, command: str, **settings: object) -> AppServer:
    spec = AppServerConfig(command=command, cwd=tmp_path, **settings)
    return AppServer(spec, "host=127.0.0.1 port=1 user=app dbname=db", "11" * 32, tmp_path / "run" / "app.log")


def test_your_app_gets_only_what_the_gate_hands_over_and_its_group_is_stopped(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app.py").write_text(REPORTING_APP)
    monkeypatch.setenv("GATE_BACKUP_IDENTITY", "AGE-SECRET-KEY-1-not-for-the-app")
    monkeypatch.setenv("SESSION_SECRET", "passed-on-purpose")
    app = _app(tmp_path, f"{PYTHON} app.py names.txt sleeper.txt", env={"NODE_ENV": "production"},
               pass_env=("SESSION_SECRET",), start_timeout_seconds=20)
    app.start()
    try:
        names = set((tmp_path / "names.txt").read_text().split()) - SHELL_ADDED
        expected = {"DATABASE_URL", "PHI_ENCRYPTION_KEY", "PORT", "NODE_ENV", "SESSION_SECRET", "PATH", "HOME"}
        assert names - {"LANG"} == expected
        assert app.child_env()["DATABASE_URL"] == "postgresql://app@127.0.0.1:1/db"  # a URL: what Node's drivers take
        group, sleeper = app.pid, int((tmp_path / "sleeper.txt").read_text())
    finally:
        app.stop()
    assert _gone(group) and not Path(f"/proc/{sleeper}").exists()
    assert app.log_file.stat().st_mode & 0o777 == 0o600


def test_your_app_that_never_answers_health_is_one_line_naming_its_log_lines_not_their_text(tmp_path: Path) -> None:
    app = _app(tmp_path, f"{PYTHON} -u -c \"print('patient ' + 'x' * 3); print('two'); import time; time.sleep(60)\"",
               start_timeout_seconds=2)
    with pytest.raises(AppStartError) as caught:
        app.start()
    message = str(caught.value)
    assert "GET /health did not answer 2xx within 2 s (last: ConnectError); its log (2 lines)" in message
    assert "\n" not in message and "patient xxx" not in message
    assert app.pid is None


@pytest.mark.parametrize(("lines", "fragment"), [
    ('command = "x"\ncwd = "/nonexistent-folder"', "cwd /nonexistent-folder is not a folder"),
    ('command = "x"\npass_env = ["DATABASE_URL"]', "DATABASE_URL is handed over by the gate"),
    ('command = "x"\nhealth = "health"', "health must be a path starting with /"),
    ('cwd = "."', "command must be a shell command"),
])
def test_a_bad_app_section_is_one_line(tmp_path: Path, lines: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_described(tmp_path, lines))
    assert fragment in str(caught.value) and "app_new" in str(caught.value)
