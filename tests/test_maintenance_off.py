"""A failed maintenance-off is red: after a verified rollback the gate switches maintenance off through the
maintenance_off hook; a hook that exits 1 there is a red rollback step with its line, and the run's verdict is
not "rolled back" alone (exit 3: the app still shuts its users out, a human acts now)."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

from migration_gate.app.hooks import ShellHooks
from migration_gate.config import load_config
from migration_gate.report import signoff
from migration_gate.report.verdict import finish_run
from sandbox.api_process import SandboxHooks
from tests.support import cutover
from tests.support.cutover import BROKEN, broken_migration, run_gate

sandbox = cutover.sandbox  # the fixture: a seeded sandbox for each test
HOOK = "echo 'the load balancer API refused the change' >&2; exit 1"


class MaintenanceOffFails(SandboxHooks):
    """The sandbox's hooks, but maintenance off is the host's shell hook, and it exits 1."""

    def maintenance(self, on: bool) -> None:
        if not on:
            ShellHooks({"maintenance_off": HOOK}).maintenance(False)
        super().maintenance(on)


def test_a_maintenance_off_that_fails_after_a_verified_rollback_is_red(sandbox, tmp_path: Path) -> None:
    broken = broken_migration(tmp_path, BROKEN["postmigration"][0])
    state = run_gate(sandbox, tmp_path / "run", broken, MaintenanceOffFails(sandbox.api))
    assert state.rollback_verified is True
    assert state.status == "rolled-back-maintenance-on", (state.status, state.failure)
    step = state.rollback_phases[-1]
    assert (step.name, step.status) == ("maintenance-off", "failed"), state.rollback_phases
    assert "hook maintenance_off failed with exit code 1" in step.detail, step.detail
    assert "the load balancer API refused the change" in step.detail
    assert state.failure.startswith("phase postmigration failed")
    assert ("rolled back and verified, but maintenance could NOT be switched off: GateError: hook maintenance_off "
            "failed with exit code 1: the load balancer API refused the change") in state.failure
    assert state.maintenance_off_at is None

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = finish_run(argparse.Namespace(json=False), load_config(), state, {})
    assert code == 3
    out = printed.getvalue()
    assert "Verdict: ROLLED-BACK-MAINTENANCE-ON - phase postmigration failed" in out, out
    assert "maintenance-off    failed" in out, out
    page = (tmp_path / "run" / "signoff.html").read_text()
    assert "FAILED - ROLLED BACK, MAINTENANCE STILL ON" in page
    assert signoff.VERDICTS["rolled-back-maintenance-on"][0] in page
