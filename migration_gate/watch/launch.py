"""After go-live the 48-hour watch starts with the cut-over, or the cut-over prints its exact command and says the
run is not complete without it ([watch] after_golive = "start" | "print"): a watch is never silently absent.

"start" runs the watch's own command (`migration-gate watch --run-dir RUN`) detached, in its own session, its
output in <run>/watch/watch.log; what was started is recorded in <run>/watch/started.json, and the sign-off says
from the run folder whether the watch ran, is running, or never started (run.watchstate.watch_status)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from migration_gate.config import GateConfig
from migration_gate.core import rundir
from migration_gate.core.paths import ROOT
from migration_gate.run.watchstate import iso, watch_command

SETTLE_SECONDS = 3.0  # a watch that cannot start (no target in the environment) exits at once: looked at after this


def start_after_golive(gate: GateConfig, run_dir: Path) -> list[str]:
    """Start the run's watch (or not, by [watch] after_golive); the lines for the operator. Never raises: a watch
    that does not start is said, with its command, and the sign-off says it never started."""
    command = watch_command(run_dir)
    ack = f"a red round is acknowledged with: {command} --ack ROUND --by NAME"
    if gate.watch.after_golive == "print":
        return [f"THE RUN IS NOT COMPLETE until the 48-hour watch runs ([watch] after_golive = \"print\"): start it "
                f"now: {command}   (see scripts/watch --help for a cron line; {ack})"]
    folder = Path(run_dir) / rundir.WATCH
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / rundir.WATCH_LOG
    argv = [sys.executable, "-m", "migration_gate.cli", "watch", "--run-dir", str(run_dir), "--config",
            str(gate.path), "--quiet"]
    try:
        with open(log, "a", encoding="utf-8") as out:
            child = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # detached: it outlives the cut-over's terminal
    except OSError as exc:
        return [f"THE RUN IS NOT COMPLETE: the watch could not be started ({exc.__class__.__name__}): start it now: "
                f"{command}"]
    (folder / rundir.WATCH_STARTED).write_text(json.dumps(
        {"pid": child.pid, "command": command, "log": str(log), "started": iso(time.time())}, indent=1))
    try:
        code = child.wait(SETTLE_SECONDS)
    except subprocess.TimeoutExpired:
        return [f"Watch started (pid {child.pid}, detached; its output in {log}): {command}", f"Then {ack}"]
    return [f"THE RUN IS NOT COMPLETE: the watch exited at once (exit {code}; see {log}): start it now: {command}"]
