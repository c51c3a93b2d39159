"""The people's part of the checklist and the status updates (issue 11 items 4 and 5): scripts/attest records
and lists; the cut-over refuses while a required item is missing (exit 4, nothing changed) and --force records the
override, which the sign-off shows with every attestation; the notify hook gets one PHI-free line at every phase
change and on a timer while the window is open, and a failing or hanging one never stops the cut-over."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from migration_gate.app.hooks import CutoverTarget, ShellHooks
from migration_gate.cli.main import _preflight_or_refuse
from migration_gate.config import ConfigError, NotifyConfig, load_config
from migration_gate.core.progress import Progress
from migration_gate.report import signoff
from migration_gate.run import attest, notify
from migration_gate.run.gate import Gate
from migration_gate.run.runstate import PLAN, RunState, forced_label, forced_verdict, schema_state
from sandbox.api_process import SandboxHooks
from sandbox.synthetic import CANARY, SANDBOX_KEY
from sandbox.target import Sandbox
from tests.conftest import ROOT
from tests.support.preflight import cutover, environment, write_config

SHIPPED = ("team-briefed", "users-notified", "decision-maker", "emergency-contacts")  # required before


def attest_cli(*args: str, reports: Path, config: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GATE_CONFIG")}
    env["GATE_REPORTS_DIR"] = str(reports)
    if config:
        env["GATE_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "migration_gate.cli", "attest", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def one_line(done: subprocess.CompletedProcess, fragment: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("attest: "), done.stderr


@pytest.mark.rehearsal
def test_attest_records_lists_and_the_next_cut_over_takes_them_in(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    done = attest_cli("team-briefed", "--by", "Dana Reyes (release manager)", "--note", "runbook v3, 10:00 call",
                      reports=reports)
    assert done.returncode == 0 and "attested team-briefed by Dana Reyes" in done.stdout, done.stderr
    done = attest_cli("decision-maker", "--by", "Dana Reyes (release manager)", "--name", "Sam Okafor (DBA)",
                      reports=reports)
    assert done.returncode == 0, done.stderr
    listed = json.loads(attest_cli("--list", "--json", reports=reports).stdout)
    rows = {row["id"]: row for row in listed["items"]}
    assert rows["team-briefed"]["attestation"]["by"] == "Dana Reyes (release manager)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows["team-briefed"]["attestation"]["at"])
    assert rows["team-briefed"]["attestation"]["note"] == "runbook v3, 10:00 call"
    assert listed["missing_required"] == ["users-notified", "emergency-contacts"] and not listed["ready"]
    assert rows["stakeholders-informed"]["required_before_cutover"] is False
    human = attest_cli("--list", reports=reports).stdout
    assert "MISSING users-notified" in human and "by Sam" not in human and "names Sam Okafor (DBA)" in human

    # the cut-over takes the pending ones into its run: the decision maker is then the run's
    gate = load_config()
    run = reports / "cutover-20261204T000000Z"
    run.mkdir()
    assert attest.adopt_pending(reports, run, "127.0.0.1:5432/app") == 2
    assert not (reports / attest.PENDING_FILE).exists()
    assert attest.decision_maker(gate, run) == "Sam Okafor (DBA)"
    assert [i.id for i in attest.missing_required(gate, attest.collected(run))] == ["users-notified",
                                                                                    "emergency-contacts"]


@pytest.mark.rehearsal
@pytest.mark.parametrize("args, fragment", [
    (["no-such-item", "--by", "Dana"], "unknown item 'no-such-item' (known: team-briefed, users-notified"),
    (["team-briefed", "--by", "  "], "--by NAME is required"),
    (["team-briefed"], "--by NAME is required"),
    ([], "name the ITEM to attest"),
    (["emergency-contacts", "--by", "Dana", "--note", "call 555-0199-4242"], "--note holds what looks like"),
    (["users-notified", "--by", "Dana", "--note", f"mailed {CANARY.email}"], "an email address"),
])
def test_a_bad_attestation_is_one_line_and_records_nothing(tmp_path: Path, args: list[str], fragment: str) -> None:
    done = attest_cli(*args, reports=tmp_path)
    one_line(done, fragment)
    assert CANARY.email not in done.stderr and "555-0199" not in done.stderr
    assert not (tmp_path / attest.PENDING_FILE).exists()


@pytest.mark.rehearsal
def test_a_second_checklist_with_its_own_items(tmp_path: Path) -> None:
    """Nothing is hard-coded: another team's items, ids and decision maker come from its configuration."""
    text = (ROOT / "migration.toml").read_text().replace('file = "sandbox/', f'file = "{ROOT}/sandbox/')
    text = re.sub(r"\[\[people\]\].*?(?=\n\[budgets\])", "", text, flags=re.S) + """
[[people]]
id = "dpo-approved"
text = "Privacy officer approved the change window"
[[people]]
id = "pager_rota"
text = "On-call rota published"
decision_maker = true
[[people]]
id = "retro-booked"
text = "Retrospective booked"
required_before_cutover = false
"""
    config = tmp_path / "other.toml"
    config.write_text(text)
    gate = load_config(config)
    assert [i.id for i in gate.people] == ["dpo-approved", "pager_rota", "retro-booked"]
    one_line(attest_cli("team-briefed", "--by", "Dana", reports=tmp_path, config=config),
             "unknown item 'team-briefed' (known: dpo-approved, pager_rota, retro-booked)")
    assert attest_cli("pager_rota", "--by", "Kim Lee", reports=tmp_path, config=config).returncode == 0
    listed = json.loads(attest_cli("--list", "--json", reports=tmp_path, config=config).stdout)
    assert listed["missing_required"] == ["dpo-approved"]
    entries = attest.collected(None, tmp_path, None)
    assert attest.missing_lines(gate, entries) == [
        "people: dpo-approved not attested (Privacy officer approved the change window): "
        "scripts/attest dpo-approved --by NAME"]
    for bad, message in (('id = "Bad Id"\ntext = "x"', "id must be lower-case"),
                         ('id = "x"\ntext = "x"\ndecision_maker = 1', "must be true or false"),
                         ('id = "x"\ntext = "x"\ncolour = "red"', "unknown key colour"),
                         ('id = "dpo-approved"\ntext = "again"', "item id dpo-approved appears twice")):
        config.write_text(f"{text}[[people]]\n{bad}\n")
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(config)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    sandbox = Sandbox(workdir=tmp_path_factory.mktemp("people") / "sandbox", patients=40,
                      progress=Progress(quiet=True)).start()
    yield sandbox
    sandbox.stop()


def test_the_cut_over_refuses_while_a_required_item_is_missing(box: Sandbox, tmp_path: Path) -> None:
    calls, reports = tmp_path / "calls", tmp_path / "reports"
    config = write_config(tmp_path, calls)
    env = environment(box, config, reports, attested=False)
    gate = load_config(config)
    attest.record(gate, "team-briefed", "Dana Reyes", reports=reports)  # the day before: pending
    attest.record(gate, "users-notified", "Dana Reyes", reports=reports)
    done = cutover("--quiet", env=env)
    assert done.returncode == 4, done.stdout + done.stderr
    errors = done.stderr.splitlines()
    assert errors[0] == "cutover: refusing to start: 2 inputs missing or unusable, nothing was changed", errors
    assert errors[1:] == ["  - people: decision-maker not attested (Rollback decision maker identified (their name "
                          "is recorded)): scripts/attest decision-maker --by NAME",
                          "  - people: emergency-contacts not attested (Emergency contacts available): "
                          "scripts/attest emergency-contacts --by NAME"]
    dry = cutover("--dry-run", env=env)
    assert dry.returncode == 4 and "MISSING people: decision-maker not attested" in dry.stdout
    assert "notify: not configured ([hooks] notify): no status updates will be sent (optional)" in dry.stdout
    assert not calls.exists() and not list(reports.glob("*/state.json"))
    assert len(attest.read(reports / attest.PENDING_FILE)) == 2  # still pending for the next try
    with psycopg.connect(box.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"


class FlakyNotify(SandboxHooks):
    """A chat service that is down for one line and hangs on another; every line is written first."""

    def notify(self, line: str, env: dict[str, str]) -> None:
        super().notify(line, env)
        if (env["GATE_PHASE"], env["GATE_PHASE_STATUS"]) == ("phase backup", "started"):
            raise RuntimeError("chat service answered 503")
        if (env["GATE_PHASE"], env["GATE_PHASE_STATUS"]) == ("phase integrity", "started"):
            time.sleep(4)


LINE = re.compile(r"\d\d:\d\d:\d\dZ migration-gate cutover-people: (phase [a-z-]+ (started|passed)|maintenance "
                  r"window (open, phase [a-z-]+ in progress|open)|run ended GREEN|run ended FORCED \(went on "
                  r"past missing attestations: [a-z-, ]+\): every phase after them passed); "
                  r"(no downtime yet|downtime \d+\.\d min)")


def test_a_forced_cut_over_records_the_override_notifies_and_signs_off(box: Sandbox, tmp_path: Path) -> None:
    gate = dataclasses.replace(load_config(), deploy_wait_seconds=6,
                               notify=NotifyConfig(interval_minutes=0.5 / 60, timeout_seconds=1))
    reports = tmp_path / "reports"
    run = reports / "cutover-people"
    attest.record(gate, "team-briefed", "Dana Reyes (release manager)", "briefing 3 Dec", reports=reports)
    attest.record(gate, "decision-maker", "Dana Reyes (release manager)", name="Sam Okafor (DBA)", reports=reports)
    hooks = FlakyNotify(box.api)
    target = CutoverTarget(dsn=box.dsn, key=SANDBOX_KEY, api_base_url=box.api.base_url,
                           api_username=gate.sandbox_username, api_password=gate.sandbox_password, hooks=hooks,
                           app_log_file=box.api.log_file, api_headers=box.api.bypass_headers, allow_writes=True)
    runner = Gate(gate, target, run, Progress(quiet=True))
    with pytest.raises(Exception, match="people: users-notified not attested"):
        _preflight_or_refuse(gate, target, run, Progress(quiet=True))
    run.mkdir(exist_ok=True)  # the refusal removed the empty folder
    _preflight_or_refuse(gate, target, run, Progress(quiet=True), force=True)
    (forced,) = attest.overrides(run)
    assert forced.missing == ["users-notified", "emergency-contacts"] and forced.by
    assert attest.decision_maker(gate, run) == "Sam Okafor (DBA)"

    state = runner.run()
    assert state.status == "forced", state.failure  # went on past missing attestations: never GREEN
    assert forced_label(state) == ("FORCED (went on past missing attestations: users-notified, "
                                   "emergency-contacts)")

    lines = hooks.notify_file.read_text().splitlines()
    assert all(LINE.fullmatch(line) for line in lines), [x for x in lines if not LINE.fullmatch(x)]
    said = [line.split(": ", 1)[1].split(";")[0] for line in lines]
    for phase in PLAN:
        assert f"phase {phase} started" in said and f"phase {phase} passed" in said, phase
    assert said[-1] == f"run ended {forced_verdict(state)}"
    assert sum("maintenance window open" in x for x in said) >= 3  # the timer, every 0.5 s here
    last_beat = max(i for i, x in enumerate(said) if "maintenance window open" in x)
    assert last_beat < said.index("phase golive passed") + 2  # it stops when the window closes
    secrets = [SANDBOX_KEY, gate.sandbox_password, *CANARY.phi.values(), *box.api.bypass_headers.values(),
               box.dsn, "therapist", "patient"]
    text = hooks.notify_file.read_text() + (run / notify.RECORD_FILE).read_text()
    assert not [s for s in secrets if s.lower() in text.lower()]

    recorded = notify.sent(run)
    failed = {r["line"].split(": ", 1)[1].split(";")[0]: r["error"] for r in recorded if not r["ok"]}
    assert failed == {"phase backup started": "RuntimeError: chat service answered 503",
                      "phase integrity started": "notify hook did not finish within 1 s ([notify] timeout_seconds)"}

    report = signoff.write(state, run, {"Target": "sandbox"}, people=gate.people).read_text()
    assert "FORCED to start without required checklist items" in report
    assert "Started WITHOUT the required items users-notified, emergency-contacts: FORCED (--force)" in report
    assert "<td class='bad' colspan='3'>MISSING</td>" in report and "briefing 3 Dec" in report
    assert "Rollback decision maker:</b> Sam Okafor (DBA)" in report
    assert "failed or timed out" in report


def test_a_shell_notify_hook_gets_the_line_and_a_failing_or_hanging_one_is_recorded(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """[hooks] notify as a team writes it: the line in $GATE_STATUS and $1; a failure's output masked, a hang
    stopped after [notify] timeout_seconds, and the caller never waits for either."""
    monkeypatch.setenv("SLACK_WEBHOOK_SECRET", "https://hooks.example/T000/B000/xyzzy-webhook-secret")
    out = tmp_path / "channel.txt"
    command = (f'echo "$1|$GATE_STATUS|$GATE_PHASE|$GATE_PHASE_STATUS" >> {out}; '
               'case "$GATE_PHASE_STATUS" in failed) echo "POST $SLACK_WEBHOOK_SECRET: 404" >&2; exit 22;; '
               'passed) sleep 30;; esac')
    state = RunState(run_dir=str(tmp_path), target="h:5432/db", migration_file="m.sql", migration_sha256="0",
                     maintenance_on_at=time.time() - 90)
    hooks = ShellHooks({"notify": command}, pass_env=("SLACK_WEBHOOK_SECRET",))  # as [hooks] pass_env names it
    notifier = notify.Notifier(NotifyConfig(timeout_seconds=1), hooks, state, tmp_path, Progress(quiet=True),
                               secrets=[])
    began = time.monotonic()
    for status in ("running", "failed", "passed"):
        notifier.phase("deploy", status)
    assert time.monotonic() - began < 0.5  # the run goes on at once
    notifier.close()
    lines = out.read_text().splitlines()
    assert lines[0] == (f"migration-gate {tmp_path.name}: phase deploy started; downtime 1.5 min|migration-gate "
                        f"{tmp_path.name}: phase deploy started; downtime 1.5 min|phase deploy|started")
    recorded = notify.sent(tmp_path)
    assert [r["ok"] for r in recorded] == [True, False, False]
    assert recorded[1]["error"].startswith("GateError: hook notify failed with exit code 22: POST ***: 404")
    assert "did not finish within 1 s" in recorded[2]["error"]
    assert "xyzzy" not in (tmp_path / notify.RECORD_FILE).read_text()
