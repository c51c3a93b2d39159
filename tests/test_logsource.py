"""The log check's sources (issue 9 item 3): a JSON-lines file, a text file with its own error pattern, and a
[hooks] command that prints the lines since GATE_LOGS_SINCE. Green on clean traffic; red on error lines; red
"cannot see the logs" on a rotated, truncated or missing file, a failing or hanging command and an empty window
after requests; never a log line in a message. Real files, real processes and the real sandbox API."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migration_gate.app import logsource
from migration_gate.app.hooks import CutoverTarget, ShellHooks
from migration_gate.app.logsource import LogMarker, LogSource
from migration_gate.checks import api as checks
from migration_gate.config import ConfigError, Environment, LogsConfig, context_by_hand, load_config, load_environment
from migration_gate.config.context import SuiteContext
from migration_gate.core.progress import Progress
from migration_gate.run.gate import Gate
from migration_gate.run.runstate import RunState
from migration_gate.run.suites import suite_context
from migration_gate.run.target import RealTargets
from sandbox.api_process import SandboxHooks
from sandbox.provider import SandboxProvider
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import ROOT
from tests.support import api_sandbox
from tests.support.api_sandbox import Sandbox, green, red

hipaa = api_sandbox.hipaa  # the fixture: the migrated sandbox API, as the API checks use it
phi = api_sandbox.phi  # the fixture: the PHI and secrets no message may carry
EMAIL = "Zed.Quill@Example.org"
UNSEEN = "cannot see the logs: "


def _file(path: Path, fmt: str = "jsonl", pattern: str | None = None) -> LogSource:
    return logsource.configured(LogsConfig(source="text" if fmt == "text" else "jsonl", format=fmt,
                                           error_pattern=pattern), {}, path)


def _command(command: str, timeout: float = 10, settle: float = 0, fmt: str = "jsonl") -> LogSource:
    hooks = {"logs_since": command}
    return logsource.configured(LogsConfig(source="command", format=fmt, timeout_seconds=timeout,
                                           settle_seconds=settle), hooks, None)


def _sandbox_command(log_file: Path) -> LogSource:
    """The rehearsal's own command: python -m sandbox.logs over the API's log, since $GATE_LOGS_SINCE."""
    return _command(f"{shlex.quote(sys.executable)} -m sandbox.logs --file {shlex.quote(str(log_file))}"
                    ' --since "$GATE_LOGS_SINCE"')


def _traffic(box: Sandbox) -> int:
    with box.client() as client:
        client.get("/health")
        client.get("/api/patients", headers={"Authorization": f"Bearer {box.token}"})
        client.get("/api/clinical-sessions", headers={"Authorization": f"Bearer {box.token}"})
    return 3


def _append(path: Path, *lines: object) -> None:
    with path.open("a", encoding="utf-8") as stream:
        for line in lines:
            stream.write((json.dumps(line) if isinstance(line, dict) else str(line)) + "\n")


# ---------------------------------------------------------------------------------------------- green, each source


def test_the_jsonl_file_is_green_after_clean_traffic(hipaa: Sandbox, phi: list[str]) -> None:
    source = _file(hipaa.api.log_file)
    marker = logsource.mark(source)
    assert marker.inode == os.stat(hipaa.api.log_file).st_ino and marker.offset > 0
    result = green(checks.logs_clean(source, marker, _traffic(hipaa)), phi)
    assert result.checked >= 3
    assert result.notes[0].startswith("log source: file api.log (jsonl); ")


def test_the_command_is_green_after_clean_traffic_and_gets_the_time(hipaa: Sandbox, phi: list[str],
                                                                    tmp_path: Path) -> None:
    source = _sandbox_command(hipaa.api.log_file)
    marker = logsource.mark(source)
    assert marker.inode is None and marker.since.endswith("Z")
    result = green(checks.logs_clean(source, marker, _traffic(hipaa)), phi)
    assert 3 <= result.checked < 20, "the command printed the whole log, not the lines since the marker"
    assert result.notes[0].startswith(f"log source: command [hooks] logs_since (jsonl); {result.checked} lines "
                                      f"since {marker.since}")
    seen = tmp_path / "seen"
    green(checks.logs_clean(_command(f'echo "$GATE_LOGS_SINCE $GATE_LOGS_UNTIL" > {seen}; echo info'),
                            marker, 1), phi)
    since, until = seen.read_text().split()
    assert since == marker.since and until >= since


def test_the_text_file_is_green_on_clean_lines_and_red_on_its_own_error_pattern(tmp_path: Path,
                                                                                phi: list[str]) -> None:
    log = tmp_path / "app.log"
    _append(log, "old line: Error: before the deploy")
    source = _file(log, "text", pattern=r"^E\d{3} ")
    marker = logsource.mark(source)
    _append(log, "GET /api/patients 200 12ms", "E042 cannot decrypt row 17", "warn: slow query")
    message = red(checks.logs_clean(source, marker, 1), phi,
                  "app.log: 1 error lines since the deploy (new lines: 2; unnamed x1)")
    assert "decrypt" not in message
    # the default pattern of a text source does not know E042, but it knows the app's audit failures
    default = _file(log, "text")
    green(checks.logs_clean(default, LogMarker(offset=marker.offset), 1), phi)
    _append(log, "Audit logs table not available, skipping audit log")
    red(checks.logs_clean(default, marker, 1), phi, "app.log: 1 error lines since the deploy (new lines: 4;")


# ------------------------------------------------------------------------------------------------- red on errors


def test_an_error_line_in_the_jsonl_file_or_the_command_is_red_naming_lines_not_text(hipaa: Sandbox,
                                                                                     phi: list[str]) -> None:
    for source in (_file(hipaa.api.log_file), _sandbox_command(hipaa.api.log_file)):
        time.sleep(0.01)  # a line of the marker's millisecond counts (more lines, never fewer): none of those
        marker = logsource.mark(source)
        time.sleep(0.01)
        _traffic(hipaa)
        _append(hipaa.api.log_file,
                {"ts": logsource.utc_now(), "level": "error", "event": "audit_failed", "error": "NotNullViolation",
                 "detail": f"no audit row for {EMAIL}"})
        message = red(checks.logs_clean(source, marker, 3), phi, f"{source.name}: 1 error lines since the deploy",
                      "audit_failed/NotNullViolation x1", "1 lines hold what looks like an email address")
        assert EMAIL.lower() not in message.lower() and "no audit row" not in message


# --------------------------------------------------------------------------------------- red: cannot see the logs


def test_a_rotated_file_is_red_even_when_the_new_file_is_clean(tmp_path: Path, phi: list[str]) -> None:
    log = tmp_path / "app.log"
    _append(log, {"level": "info", "event": "startup"})
    source = _file(log)
    marker = logsource.mark(source)
    log.rename(tmp_path / "app.log.1")
    _append(log, *[{"level": "info", "event": "request"}] * 5)
    red(checks.logs_clean(source, marker, 1), phi, UNSEEN + "app.log was rotated since the deploy")


def test_a_truncated_file_is_red(tmp_path: Path, phi: list[str]) -> None:
    log = tmp_path / "app.log"
    _append(log, *[{"level": "info", "event": "request"}] * 5)
    source = _file(log)
    marker = logsource.mark(source)
    with log.open("r+") as stream:  # copytruncate: same inode, shorter
        stream.truncate(0)
    _append(log, {"level": "info", "event": "request"})
    red(checks.logs_clean(source, marker, 1), phi, UNSEEN + "app.log was truncated since the deploy (",
        f"{marker.offset} at the deploy")


def test_a_missing_file_or_no_source_is_red(tmp_path: Path, phi: list[str]) -> None:
    log = tmp_path / "app.log"
    _append(log, {"level": "info", "event": "startup"})
    source = _file(log)
    marker = logsource.mark(source)
    log.unlink()
    red(checks.logs_clean(source, marker, 1), phi, UNSEEN + "app.log does not exist")
    red(checks.logs_clean(None, None, 1), phi, UNSEEN + "no log source (set APP_LOG_FILE, or [logs]")
    assert logsource.configured(LogsConfig(), {}, None) is None  # a file source without a path


def test_a_failing_command_is_red_with_its_hook_and_exit_code_never_its_output(phi: list[str]) -> None:
    source = _command(f"echo '{{\"level\": \"info\", \"who\": \"{EMAIL}\"}}'; echo 'token rejected' >&2; exit 3")
    message = red(checks.logs_clean(source, logsource.mark(source), 1), phi,
                  UNSEEN + "[hooks] logs_since exited with code 3")
    assert "token" not in message and "Quill" not in message
    unset = logsource.configured(LogsConfig(source="command", hook="render_logs"), {}, None)
    red(checks.logs_clean(unset, logsource.mark(unset), 1), phi, UNSEEN + "[hooks] render_logs is not configured")
    red(checks.logs_clean(source, LogMarker(), 1), phi, UNSEEN + "no time to read [hooks] logs_since from: "
        "GATE_LOGS_SINCE is not set")


def test_a_hanging_command_is_red_after_its_timeout_and_its_children_are_ended(tmp_path: Path,
                                                                               phi: list[str]) -> None:
    pid_file = tmp_path / "pid"
    source = _command(f"sleep 60 & echo $! > {pid_file}; wait", timeout=1)
    began = time.monotonic()
    red(checks.logs_clean(source, logsource.mark(source), 1), phi,
        UNSEEN + "[hooks] logs_since did not finish within 1 s")
    assert time.monotonic() - began < 10
    status = Path(f"/proc/{pid_file.read_text().strip()}/status")
    deadline = time.monotonic() + 5
    while status.exists() and "State:\tZ" not in status.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not status.exists() or "State:\tZ" in status.read_text(), "the command's child still runs"


def test_an_empty_window_after_requests_is_red_and_read_again_while_the_host_lags(tmp_path: Path,
                                                                                  phi: list[str]) -> None:
    log = tmp_path / "app.log"
    _append(log, {"level": "info", "event": "startup"})
    source = _file(log)
    marker = logsource.mark(source)
    red(checks.logs_clean(source, marker, 4), phi,
        UNSEEN + "app.log shows no lines since", "although 4 request(s) were made to the app in that window")
    silent = _command("true")
    red(checks.logs_clean(silent, logsource.mark(silent), 2), phi,
        UNSEEN + "[hooks] logs_since shows no lines since 20")
    assert checks.logs_clean(silent, logsource.mark(silent), 0).ok  # no requests: nothing had to be logged
    # a host whose log API shows the lines only on the third call: settle_seconds reads again
    calls = tmp_path / "calls"
    lagging = _command(f"echo x >> {calls}; [ $(wc -l < {calls}) -ge 3 ] && echo '{{\"level\": \"info\"}}'; true",
                       settle=5)
    assert checks.logs_clean(lagging, logsource.mark(lagging), 1).expect().checked == 1
    assert len(calls.read_text().split()) == 3


# ------------------------------------------------------------------------------------------ configuration, wiring


def _absolute(text: str) -> str:
    """migration.toml's paths made absolute, so a copy elsewhere finds the migration files."""
    return text.replace('file = "sandbox/', f'file = "{ROOT}/sandbox/')


@pytest.mark.parametrize(("logs", "message"), [
    ('source = "syslog"', "[logs]: source must be one of jsonl, text, command"),
    ('source = "command"', '[logs]: source "command" needs the command [hooks] logs_since'),
    ('source = "text"\nerror_pattern = "(unclosed"', "[logs]: error_pattern is not a valid regular expression"),
    ('source = "jsonl"\nerror_pattern = "E42"', "[logs]: error_pattern applies to text lines only"),
    ('source = "text"\nformat = "jsonl"', "[logs]: format must be text for source text"),
    ('source = "jsonl"\nlevel = "error"', "[logs]: unknown key level"),
    ('source = "command"\nhook = "x"\ntimeout_seconds = 0', "[logs]: timeout_seconds must be positive"),
])
def test_a_bad_logs_section_is_one_line(tmp_path: Path, logs: str, message: str) -> None:
    config = tmp_path / "migration.toml"
    text = (ROOT / "migration.toml").read_text().replace('\nsource = "jsonl"\n', f"\n{logs}\n", 1)
    config.write_text(_absolute(text).replace("[hooks]\n", '[hooks]\nx = "true"\n', 1))
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_logs_section_reads_each_source(tmp_path: Path) -> None:
    config = tmp_path / "migration.toml"
    text = _absolute((ROOT / "migration.toml").read_text())
    assert load_config().logs == LogsConfig()  # the default: APP_LOG_FILE as JSON lines, as before
    config.write_text(text.replace('\nsource = "jsonl"\n', '\nsource = "text"\npath = "logs/app.log"\n'
                                   "error_pattern = '^E\\d+'\n", 1))
    logs = load_config(config).logs
    assert (logs.source, logs.format, logs.path, logs.error_pattern) == ("text", "text", tmp_path / "logs/app.log",
                                                                         r"^E\d+")
    assert logsource.configured(logs, {}, None).path == str(tmp_path / "logs/app.log")
    assert logsource.configured(logs, {}, Path("/var/log/app.log")).path == "/var/log/app.log"  # APP_LOG_FILE wins
    config.write_text(text.replace('\nsource = "jsonl"\n', '\nsource = "command"\nformat = "text"\n'
                                   "settle_seconds = 30\n", 1).replace("[hooks]\n", "[hooks]\nlogs_since = 'render"
                                                                                        " logs'\n", 1))
    gate = load_config(config)
    source = logsource.configured(gate.logs, gate.hooks, Path("/ignored.log"))
    assert (source.kind, source.format, source.command, source.settle_seconds) == ("command", "text", "render logs",
                                                                                    30)


def test_the_gate_hands_the_source_and_marker_to_the_suite_and_the_target_reads_them(tmp_path: Path) -> None:
    source = _command("true")
    marker = logsource.mark(source)
    state = RunState(run_dir=str(tmp_path), target="t", migration_file="m", migration_sha256="s",
                     log_source=source.to_json(), log_marker=marker.to_json())
    target = CutoverTarget(dsn="postgresql://u@h/db", key="0" * 64, api_base_url="http://h", api_username="u",
                           api_password="p", hooks=ShellHooks({}))
    handed = SuiteContext.read(suite_context(target, load_config(), state).write(tmp_path / "context.json"))
    assert LogSource.from_json(handed.log_source) == source
    assert LogMarker.from_json(handed.log_marker) == marker
    env = Environment(database_url="postgresql://u@h/db", api_base_url=None, phi_key=None, api_username=None,
                      api_password=None, reports_dir=tmp_path, app_log_file=None, backup_file=None, baseline_url=None)
    seen = RealTargets(env, handed)
    assert (seen.state("postmigration").log_source, seen.state("postmigration").log_marker) == (source, marker)
    by_hand = RealTargets(env, context_by_hand(load_environment({"APP_LOG_OFFSET": "42"}), tmp_path))
    assert by_hand.state("postmigration").log_marker == LogMarker(offset=42)  # APP_LOG_OFFSET keeps working
    with pytest.raises(ConfigError):
        LogSource.from_json('{"kind": "ftp"}')


@pytest.mark.rehearsal
def test_the_sandbox_log_command_prints_the_lines_since_the_time(tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    _append(log, {"ts": "2026-12-01T10:00:00.000Z", "event": "before"}, {"ts": "2026-12-01T10:00:01.500Z",
            "event": "after"}, "not json", {"ts": "2026-12-01T10:00:03.000Z", "event": "later"})

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sandbox.logs", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("GATE_LOGS")}
                              | env)
    done = run("--file", str(log), GATE_LOGS_SINCE="2026-12-01T10:00:01Z", GATE_LOGS_UNTIL="2026-12-01T10:00:02Z")
    assert done.returncode == 0 and [json.loads(x)["event"] if x.startswith("{") else x
                                     for x in done.stdout.splitlines()] == ["after", "not json"]
    assert len(run("--file", str(log), "--since", "2026-12-01T09:00:00Z").stdout.splitlines()) == 4
    assert run("--file", str(tmp_path / "none.log"), "--since", "2026-12-01T09:00:00Z").returncode == 3
    assert run("--file", str(log)).returncode == 2


def test_probe_says_before_the_window_whether_the_source_answers(hipaa: Sandbox, tmp_path: Path) -> None:
    """What a pre-flight asks: the file is there, the command exits 0 in time; else why not, in one line."""
    assert logsource.probe(_file(hipaa.api.log_file)).startswith("file api.log (jsonl), ")
    found = logsource.probe(_sandbox_command(hipaa.api.log_file))
    assert found.startswith("command [hooks] logs_since (jsonl), ") and found.endswith(" lines in the last five"
                                                                                     " minutes")
    for source, why in ((None, "no log source"), (_file(tmp_path / "none.log"), "none.log does not exist"),
                        (_file(tmp_path), f"{tmp_path.name} is a directory"),
                        (_command("exit 3"), "[hooks] logs_since exited with code 3"),
                        (_command("sleep 5", timeout=0.5), "[hooks] logs_since did not finish within 0.5 s")):
        with pytest.raises(logsource.LogsUnseen, match=re.escape(why)):
            logsource.probe(source)


# ---------------------------------------------------------------------------------------------- the whole cut-over


class ErrorsAfterTheDeploy(SandboxHooks):
    """The deploy succeeds and the app is healthy, but it logs an error once it runs on the new schema."""

    def deploy(self, use_hipaa_schema: bool) -> None:
        super().deploy(use_hipaa_schema)
        if use_hipaa_schema:
            _append(self.api.log_file, {"ts": logsource.utc_now(), "level": "error", "event": "startup_check",
                                        "error": "RuntimeError", "detail": f"for {EMAIL}"})


@pytest.mark.sandbox
def test_a_cut_over_whose_app_logs_errors_after_the_deploy_is_rolled_back(tmp_path: Path) -> None:
    """The app is a separate process whose log the gate reaches only through the log command (the rehearsal's
    provider): the error it logs after the deploy makes the post-checks red and the rollback verified."""
    gate = load_config()
    rehearsal = SandboxProvider().rehearsal(tmp_path / "sandbox", 150, 1, Progress(quiet=True)).start()
    try:
        assert rehearsal.app_log_file is None and rehearsal.log_source.kind == "command"
        target = CutoverTarget(dsn=rehearsal.dsn, key=SANDBOX_KEY, api_base_url=rehearsal.api_base_url,
                               api_username=gate.sandbox_username, api_password=gate.sandbox_password,
                               hooks=ErrorsAfterTheDeploy(rehearsal.box.api), api_headers=rehearsal.api_headers,
                               allow_writes=True)
        state = Gate(gate, target, tmp_path / "run", Progress(quiet=True), log_source=rehearsal.log_source).run()
    finally:
        rehearsal.stop()
    assert state.status == "rolled-back" and state.rollback_verified is True, (state.status, state.failure)
    assert state.failure.startswith("phase postmigration failed"), state.failure
    assert "failed: test_no_error_lines_in_the_application_log_since_the_deploy;" in state.failure
    assert "[hooks] logs_since: 1 error lines since the deploy" in state.failure
    assert "startup_check/RuntimeError x1" in state.failure and "Quill" not in state.failure
    assert LogSource.from_json(state.log_source) == rehearsal.log_source
    assert LogMarker.from_json(state.log_marker).since.endswith("Z")
