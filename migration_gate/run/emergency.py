"""Emergency maintenance (the checklist's "Emergency Procedures"): stop users at once, through the configured
[hooks] maintenance_on (or let them back in with maintenance_off), without a rollback and without waiting for a
cut-over's lock, e.g. when corrupt data is found after go-live and the choice between carrying the users' rows back
and discarding them is still being made. Every switch, and every attempt that failed, is recorded in the run's
folder (who, why, when, what the hook said) in its own append-only file, never in state.json, which a running
gate may be writing; the sign-off lists them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from migration_gate.app.hooks import Hooks
from migration_gate.config import ConfigError
from migration_gate.core import rundir
from migration_gate.core.redact import failure_line, one_line

ACTIONS = {"maintenance-on": True, "maintenance-off": False}  # the command's word -> maintenance on?


@dataclass(frozen=True)
class Switch:
    """One emergency switch as recorded: the action, who, why, when (UTC), whether the hook succeeded and its line."""

    action: str
    by: str
    why: str
    at: str
    ok: bool
    detail: str

    def line(self) -> str:
        done = "done" if self.ok else f"FAILED: {self.detail}"
        return f"{self.at} {self.action} by {self.by} ({self.why}): {done}"


def check_request(run_dir: Path, action: str, by: str, why: str) -> None:
    """A usable request, or one line saying what is wrong (ConfigError): a run folder, a known action, a name and
    a reason (an emergency switch without who and why is not a record)."""
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    if not rundir.state_file(run_dir).is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {rundir.STATE})")
    if not by.strip():
        raise ConfigError("--by NAME is required: an emergency switch records who made it")
    if not why.strip():
        raise ConfigError("--why TEXT is required: an emergency switch records why (a few words, never PHI)")


def switch(hooks: Hooks, run_dir: Path, action: str, by: str, why: str) -> Switch:
    """Call the maintenance hook now and record the switch in the run (also when the hook failed: the attempt,
    its time and its line are part of the record)."""
    check_request(run_dir, action, by, why)
    try:
        hooks.maintenance(ACTIONS[action])
        ok, detail = True, ""
    except Exception as exc:  # noqa: BLE001 - recorded and said in one line, never a traceback
        ok, detail = False, failure_line(exc)
    done = Switch(action, one_line(by.strip()), one_line(why.strip()),
                  datetime.now(UTC).isoformat(timespec="seconds"), ok, detail)
    with rundir.emergency_file(run_dir).open("a", encoding="utf-8") as out:
        out.write(json.dumps(asdict(done)) + "\n")
    return done


def recorded(run_dir: Path) -> list[Switch]:
    """The run's emergency switches in the order they were made (a line that cannot be read says so)."""
    path = rundir.emergency_file(run_dir)
    if not path.is_file():
        return []
    found = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            found.append(Switch(**json.loads(text)))
        except (ValueError, TypeError):
            found.append(Switch("?", "?", "?", "?", False, f"a line of {rundir.EMERGENCY} could not be read"))
    return found
