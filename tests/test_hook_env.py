"""Issue 20 item 2: a hook gets what its contract names (PATH/HOME/LANG/TZ/LC_*, its GATE_* variables, [hooks]
pass_env), never the gate's secrets; it is stopped with the run (SIGTERM, Ctrl-C) and its output is bounded."""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from migration_gate.app import logsource
from migration_gate.app.hooks import ShellHooks
from migration_gate.app.logsource import LogMarker, LogsUnseen
from migration_gate.config import ConfigError, LogsConfig, NotifyConfig, load_config
from migration_gate.core.errors import GateError
from migration_gate.core.progress import Progress
from migration_gate.rehearsal import copies
from migration_gate.run import notify
from migration_gate.run.runstate import RunState
from tests.conftest import ROOT

SHIPPED = ROOT / "migration.toml"
SECRETS = {"PHI_ENCRYPTION_KEY": "k" * 64, "GATE_API_PASSWORD": "api-pw-hookenv",
           "GATE_BACKUP_IDENTITY": "AGE-SECRET-KEY-1HOOKENV", "DATABASE_URL": "postgresql://app:db-pw-hookenv@db/app",
           "SOME_OTHER_VARIABLE": "not listed in pass_env"}
BASE = {"HOME", "LANG", "LC_ALL", "PATH", "TZ", "RENDER_API_KEY"}  # the minimal set and the pass_env name
SHELL_OWN = {"PWD", "SHLVL", "_", "OLDPWD"}  # what the shell running the command adds itself


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate's environment as in production: every secret set, and the operator's own variables."""
    for name, value in {**SECRETS, "RENDER_API_KEY": "rnd_hookenv", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                        "TZ": "UTC"}.items():
        monkeypatch.setenv(name, value)


def _printer(out: Path) -> str:
    """A hook that writes the names of its environment, sorted, one a line (its values never leave it)."""
    code = "import os,sys; open(sys.argv[1],'w').write(chr(10).join(sorted(os.environ)))"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {shlex.quote(str(out))}"


def _names(out: Path) -> set[str]:
    names = set(out.read_text().splitlines()) - SHELL_OWN
    assert not names & set(SECRETS), f"a hook saw {sorted(names & set(SECRETS))}"
    return names


@pytest.mark.parametrize("hook, call, contract", [
    ("maintenance_on", lambda h: h.maintenance(True), set()),
    ("maintenance_off", lambda h: h.maintenance(False), set()),
    ("deploy_new_schema", lambda h: h.deploy(True), set()),
    ("deploy_legacy_schema", lambda h: h.deploy(False), set()),
    ("notify", lambda h: h.notify("phase backup passed", {
        "GATE_STATUS": "s", "GATE_RUN_ID": "r", "GATE_PHASE": "p", "GATE_PHASE_STATUS": "passed",
        "GATE_DOWNTIME_MINUTES": "1"}),
     {"GATE_STATUS", "GATE_RUN_ID", "GATE_PHASE", "GATE_PHASE_STATUS", "GATE_DOWNTIME_MINUTES"}),
    ("alert", lambda h: h.alert({"GATE_ALERT_MESSAGE": "red\nround", "GATE_RUN_ID": "r", "GATE_WATCH_ROUND": "1",
                                 "GATE_WATCH_CRITERION_MET": "0"}),
     {"GATE_ALERT_MESSAGE", "GATE_RUN_ID", "GATE_WATCH_ROUND", "GATE_WATCH_CRITERION_MET"}),
    ("store_backup", lambda h: h.store_backup({
        "GATE_BACKUP_FILE": "/b/x.age", "GATE_BACKUP_NAME": "x.age", "GATE_BACKUP_SHA256": "0" * 64,
        "GATE_BACKUP_SIZE": "1", "GATE_BACKUP_ENCRYPTION": "age", "GATE_RUN_ID": "r"}),
     {"GATE_BACKUP_FILE", "GATE_BACKUP_NAME", "GATE_BACKUP_SHA256", "GATE_BACKUP_SIZE", "GATE_BACKUP_ENCRYPTION",
      "GATE_RUN_ID"}),
    ("fetch_backup", lambda h: h.fetch_backup({
        "GATE_BACKUP_FILE": "/b/x.age", "GATE_BACKUP_NAME": "x.age", "GATE_BACKUP_SHA256": "0" * 64,
        "GATE_BACKUP_SIZE": "1", "GATE_BACKUP_ENCRYPTION": "age", "GATE_RUN_ID": "r",
        "GATE_BACKUP_LOCATION": "s3://b/x.age", "GATE_BACKUP_DEST": "/b/x.age.fetched"}),
     {"GATE_BACKUP_FILE", "GATE_BACKUP_NAME", "GATE_BACKUP_SHA256", "GATE_BACKUP_SIZE", "GATE_BACKUP_ENCRYPTION",
      "GATE_RUN_ID", "GATE_BACKUP_LOCATION", "GATE_BACKUP_DEST"}),
])
def test_each_hook_sees_exactly_its_contract_and_pass_env(planted: None, tmp_path: Path, hook: str, call,
                                                          contract: set[str]) -> None:
    out = tmp_path / "names.txt"
    hooks = ShellHooks({hook: f"{_printer(out)}; echo s3://b/x.age"}, pass_env=("RENDER_API_KEY",))
    call(hooks)
    assert _names(out) == BASE | contract


def test_a_value_outside_a_hooks_contract_is_refused_not_handed_over(planted: None) -> None:
    with pytest.raises(GateError, match="PHI_ENCRYPTION_KEY is not in the hook's contract"):
        ShellHooks({"maintenance_on": "true"})._run("maintenance_on", {"PHI_ENCRYPTION_KEY": "k"})


def test_the_log_command_sees_its_window_and_pass_env_only(planted: None, tmp_path: Path) -> None:
    out = tmp_path / "names.txt"
    source = logsource.configured(LogsConfig(source="command", format="text"), {"logs_since": _printer(out)}, None,
                                  ("RENDER_API_KEY",))
    logsource.read_since(source, LogMarker(since="2026-12-01T10:00:00.000Z"))
    assert _names(out) == BASE | {"GATE_LOGS_SINCE", "GATE_LOGS_UNTIL"}


def test_copy_hooks_get_the_source_dsn_and_nothing_else_of_the_target(planted: None, tmp_path: Path) -> None:
    """create_copy: GATE_COPY_SOURCE (the one password a hook ever gets) and the owner pid; delete_copy: the
    copy's DSN and label, nothing of the target."""
    created, deleted = tmp_path / "create.txt", tmp_path / "delete.txt"
    gate = load_config()
    gate = dataclasses.replace(gate, hook_pass_env=("RENDER_API_KEY",), rehearsal=dataclasses.replace(
        gate.rehearsal, kind="hooks", create_copy=f"{_printer(created)}; echo postgresql://copy@127.0.0.1:1/c",
        delete_copy=_printer(deleted)))
    with copies.copy_of("postgresql://app:db-pw-hookenv@db/app", gate, kind="hooks", dump_copy=False):
        pass
    assert _names(created) == BASE | {"GATE_COPY_SOURCE", "GATE_COPY_OWNER_PID"}
    assert _names(deleted) == BASE | {"GATE_COPY_OWNER_PID", "GATE_COPY_DSN", "GATE_COPY_LABEL"}


def test_notify_hooks_still_mask_a_pass_env_secret_they_echo(planted: None, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_SECRET", "https://hooks.example/xyzzy-webhook-secret")
    state = RunState(run_dir=str(tmp_path), target="h:5432/db", migration_file="m.sql", migration_sha256="0")
    hooks = ShellHooks({"notify": 'echo "POST $SLACK_WEBHOOK_SECRET: 404" >&2; exit 22'},
                       pass_env=("SLACK_WEBHOOK_SECRET",))
    notifier = notify.Notifier(NotifyConfig(timeout_seconds=5), hooks, state, tmp_path, Progress(quiet=True), [])
    notifier.phase("deploy", "failed")
    notifier.close()
    assert notify.sent(tmp_path)[0]["error"].endswith("exit code 22: POST ***: 404")


@pytest.mark.parametrize("name", ["PHI_ENCRYPTION_KEY", "DATABASE_URL", "GATE_BACKUP_IDENTITY", "GATE_RUN_ID"])
def test_pass_env_cannot_hand_over_the_gates_secrets(tmp_path: Path, name: str) -> None:
    overlay = tmp_path / "m.toml"
    overlay.write_text(f'extends = "{SHIPPED}"\n\n[hooks]\npass_env = ["RENDER_API_KEY", "{name}"]\n')
    with pytest.raises(ConfigError, match=f"pass_env cannot hand {name} to the hooks"):
        load_config(overlay)


def test_pass_env_is_read_from_hooks(tmp_path: Path) -> None:
    overlay = tmp_path / "m.toml"
    overlay.write_text(f'extends = "{SHIPPED}"\n\n[hooks]\npass_env = ["RENDER_API_KEY", "RENDER_SERVICE_ID"]\n')
    gate = load_config(overlay)
    assert gate.hook_pass_env == ("RENDER_API_KEY", "RENDER_SERVICE_ID") and "pass_env" not in gate.hooks


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # killed, waiting for a reaper that is not ours


GATE_SCRIPT = {
    # the hook runs in the gate's main thread (maintenance, deploy, backup)
    "main": "ShellHooks({'maintenance_on': CMD}).maintenance(True)",
    # a notify call runs in its own thread; the gate's entry point (cli) turns SIGTERM into an unwinding
    "thread": textwrap.dedent("""\
        with sigterm_unwinds():
            threading.Thread(target=lambda: ShellHooks({'notify': CMD}).notify('x', {}), daemon=True).start()
            time.sleep(300)"""),
}


@pytest.mark.parametrize("where", sorted(GATE_SCRIPT))
def test_a_running_hooks_process_group_is_gone_after_the_gate_gets_sigterm(tmp_path: Path, where: str) -> None:
    pid_file = tmp_path / "sleep.pid"
    command = f"sleep 300 & echo $! > {shlex.quote(str(pid_file))}; wait"
    script = ("import threading, time\nfrom migration_gate.app.hooks import ShellHooks, sigterm_unwinds\n"
              f"CMD = {command!r}\n{GATE_SCRIPT[where]}\n")
    gate = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (pid_file.is_file() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline and gate.poll() is None, "the hook never started"
        time.sleep(0.05)
    sleeper = int(pid_file.read_text())
    gate.send_signal(signal.SIGTERM)
    assert gate.wait(timeout=20) != 0
    deadline = time.monotonic() + 5
    while not _gone(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _gone(sleeper):
        os.kill(sleeper, signal.SIGKILL)
        pytest.fail(f"the hook's sleep (pid {sleeper}) outlived the gate's SIGTERM ({where} thread)")


FIVE_MIB = "head -c 5242880 /dev/zero | tr '\\0' x"


def test_a_failing_hook_printing_5_mib_is_cut_and_says_so_in_one_line() -> None:
    hooks = ShellHooks({"maintenance_on": f"{FIVE_MIB} >&2; echo >&2; echo 'host refused' >&2; exit 1"})
    with pytest.raises(GateError) as failed:
        hooks.maintenance(True)
    message = str(failed.value)
    assert "\n" not in message and len(message) < 300, message[:300]
    assert message == ("hook maintenance_on failed with exit code 1 (output over 1024 KiB: only its last 1024 KiB "
                       "read): host refused")


def test_a_succeeding_hook_printing_5_mib_still_answers_with_its_last_line() -> None:
    hooks = ShellHooks({"store_backup": f"{FIVE_MIB}; echo; echo s3://bucket/run/x.age"})
    assert hooks.store_backup({"GATE_RUN_ID": "r"}) == "s3://bucket/run/x.age"


def test_a_log_command_printing_past_its_bound_is_red(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logsource, "LOG_OUTPUT_LIMIT", 1 << 20)
    source = logsource.configured(LogsConfig(source="command", format="text"), {"logs_since": FIVE_MIB}, None)
    with pytest.raises(LogsUnseen, match=r"printed more than 1 MiB since the deploy \(cut\)"):
        logsource.read_since(source, LogMarker(since="2026-12-01T10:00:00.000Z"))
