"""Status updates during a run: one short PHI-free line to the host's `notify` hook at every phase change, at the
run's end, and at least every [notify] interval_minutes while the maintenance window is open.

The line is built only from the run id, a phase name, a status and the downtime so far: never a phase's detail,
so no value from the database or a hook's output can reach a chat channel. The hook is called from a worker
thread, one call at a time, each stopped (or abandoned) after [notify] timeout_seconds: a failing or hanging hook
is recorded in the run's notifications.jsonl and the cut-over goes on without waiting for it.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from migration_gate.app.hooks import Hooks, ShellHooks
from migration_gate.config import NotifyConfig
from migration_gate.core.progress import Progress
from migration_gate.core.redact import mask_values, safe_message
from migration_gate.run.runstate import RunState

RECORD_FILE = "notifications.jsonl"
SHOWN = {"running": "started"}  # a phase record's status as the line says it


def configured(hooks: Hooks) -> bool:
    """A notify hook exists: a [hooks] notify command, or a notify method of hooks that are code."""
    if isinstance(hooks, ShellHooks):
        return bool((hooks.commands.get("notify") or "").strip())
    return callable(getattr(hooks, "notify", None))


def downtime(state: RunState) -> str:
    """The downtime so far (maintenance on to off, or to now while it is on)."""
    if not state.maintenance_on_at:
        return "no downtime yet"
    end = state.maintenance_off_at or time.time()
    return f"downtime {(end - state.maintenance_on_at) / 60:.1f} min"


def window_open(state: RunState) -> bool:
    return bool(state.maintenance_on_at) and not state.maintenance_off_at


class Notifier:
    """Sends the status lines of one run through its hooks without ever holding the run up."""

    def __init__(self, settings: NotifyConfig, hooks: Hooks, state: RunState, run_dir: Path, progress: Progress,
                 secrets: list[str]) -> None:
        self.settings = settings
        self.hooks = hooks
        self.state = state
        self.run_id = run_dir.name
        self.record_path = run_dir / RECORD_FILE
        self.progress = progress
        self.secrets = secrets
        self.enabled = configured(hooks)
        if isinstance(hooks, ShellHooks):
            hooks.notify_timeout = settings.timeout_seconds
        self._queue: queue.Queue[tuple[str, dict[str, str]] | None] = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._write = threading.Lock()
        self._starting = threading.Lock()  # the phase changes and the timer may send at the same moment
        self._last_sent = time.monotonic()

    # -- what is sent ------------------------------------------------------------------------------------------
    def line(self, phase: str, status: str) -> tuple[str, dict[str, str]]:
        """The status line and the hook's environment; only names, statuses and minutes (no quotes, no PHI)."""
        shown = SHOWN.get(status, status)
        text = f"migration-gate {self.run_id}: {phase} {shown}; {downtime(self.state)}"
        minutes = ("" if not self.state.maintenance_on_at else
                   f"{((self.state.maintenance_off_at or time.time()) - self.state.maintenance_on_at) / 60:.1f}")
        return text, {"GATE_STATUS": text, "GATE_RUN_ID": self.run_id, "GATE_PHASE": phase,
                      "GATE_PHASE_STATUS": shown, "GATE_DOWNTIME_MINUTES": minutes}

    def phase(self, name: str, status: str) -> None:
        """A phase started, passed, failed (or was held)."""
        self._send(*self.line(f"phase {name}", status))

    def verdict(self, said: str) -> None:
        """The run's end as the terminal says it: GREEN, FORCED (and what it went past, by criterion id), or its
        red verdict."""
        self._send(*self.line("run", f"ended {said}"))

    # -- the window's timer ------------------------------------------------------------------------------------
    def start(self) -> None:
        """The background timer: a line at least every interval while the maintenance window is open."""
        if not self.enabled or self._heartbeat is not None:
            return
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="notify-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        interval = self.settings.interval_minutes * 60
        while not self._stop.wait(min(interval / 4, 5.0)):
            if window_open(self.state) and time.monotonic() - self._last_sent >= interval:
                running = next((p.name for p in self.state.phases + self.state.rollback_phases
                                if p.status == "running"), None)
                what = f"maintenance window open, phase {running}" if running else "maintenance window"
                self._send(*self.line(what, "in progress" if running else "open"))

    def close(self) -> None:
        """Stop the timer and give the last lines up to one timeout to go out; what is left is recorded."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=10)
            self._heartbeat = None
        with self._starting:
            if self._worker is None:
                return
            self._queue.put(None)
        self._worker.join(timeout=self.settings.timeout_seconds + 2)
        if self._worker.is_alive():
            left = self._queue.qsize()
            self._record({"ok": False, "error": f"the notify hook was still busy when the run ended: {left} "
                                                "status line(s) not sent"})
        self._worker = None

    # -- delivery ----------------------------------------------------------------------------------------------
    def _send(self, text: str, env: dict[str, str]) -> None:
        if not self.enabled:
            return
        with self._starting:
            self._last_sent = time.monotonic()
            if self._worker is None:
                self._queue = queue.Queue()
                self._worker = threading.Thread(target=self._deliver, args=(self._queue,), name="notify",
                                                daemon=True)
                self._worker.start()
            self._queue.put((text, env))

    def _deliver(self, lines: queue.Queue[tuple[str, dict[str, str]] | None]) -> None:
        while (item := lines.get()) is not None:
            text, env = item
            began = time.monotonic()
            error = self._call(text, env)
            entry = {"line": text, "ok": error is None, "seconds": round(time.monotonic() - began, 2)}
            if error:
                entry["error"] = error
                self.progress.say(f"notify hook: {error} (recorded; the run goes on)")
            self._record(entry)

    def _call(self, text: str, env: dict[str, str]) -> str | None:
        """One call in its own thread, abandoned after the timeout (a shell hook's process is stopped by then)."""
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                self.hooks.notify(text, env)  # type: ignore[attr-defined]
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - any failure of the hook is recorded, never raised
                outcome.append(exc)
        thread = threading.Thread(target=call, name="notify-call", daemon=True)
        thread.start()
        thread.join(self.settings.timeout_seconds + (1 if isinstance(self.hooks, ShellHooks) else 0))
        if not outcome:
            return f"notify hook did not finish within {self.settings.timeout_seconds:g} s ([notify] timeout_seconds)"
        if outcome[0] is None:
            return None
        return mask_values(safe_message(outcome[0]), self.secrets)

    def _record(self, entry: dict) -> None:
        entry = {"at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **entry}
        with self._write, self.record_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")


def sent(run_dir: Path) -> list[dict]:
    """The run's recorded notify calls (for the sign-off)."""
    path = run_dir / RECORD_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
