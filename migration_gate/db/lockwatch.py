"""Watches the target's sessions while the gate works beside the live app: did any other session wait on a lock
a gate session held?

A thread samples pg_stat_activity with pg_blocking_pids() every few tens of milliseconds on its own connection.
Gate sessions are told apart by their application_name (migration_gate.db.connection.application_name: the pre-checks
name theirs); every other session is the app's or someone else's. A wait shorter than the interval can slip
between two samples: the watch proves what it saw, and says how often it looked.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg

from migration_gate.db import connection as db
from migration_gate.db.connection import APPLICATION_PREFIX

# One row per session but the watch's own; pg_blocking_pids only where the session waits on a heavyweight lock
# (cheap otherwise). application_name and usename are visible for every role's sessions.
_SAMPLE = """
SELECT pid, usename, coalesce(application_name, ''), wait_event_type,
       CASE WHEN wait_event_type = 'Lock' OR wait_event_type IS NULL THEN pg_blocking_pids(pid) END
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
"""


@dataclass(frozen=True)
class Wait:
    """One sampled session waiting on a lock: who waited, and the sessions that held it up."""

    at_s: float  # seconds since the watch started
    pid: int
    role: str
    application: str
    blockers: tuple[int, ...]
    gate_blockers: tuple[int, ...]  # those of the blockers that were gate sessions


@dataclass
class LockReport:
    samples: int = 0
    seconds: float = 0.0
    gate_sessions_max: int = 0  # the most gate sessions seen at once (0: the gate was never seen working)
    other_sessions_max: int = 0
    app_sessions_max: int = 0  # sessions of the app's role, when one was named
    gate_pids: set[int] = field(default_factory=set)
    waits: list[Wait] = field(default_factory=list)  # every non-gate session seen waiting on a lock
    errors: int = 0  # samples that failed (the watch goes on)

    @property
    def blocked_by_gate(self) -> list[Wait]:
        return [w for w in self.waits if w.gate_blockers]

    @property
    def interval_ms(self) -> float:
        return self.seconds * 1000 / self.samples if self.samples else 0.0

    def line(self) -> str:
        return (f"{self.samples} samples over {self.seconds:.1f} s (one per {self.interval_ms:.0f} ms): "
                f"up to {self.gate_sessions_max} gate sessions at once ({len(self.gate_pids)} in all), "
                f"{len(self.waits)} lock waits of other sessions, {len(self.blocked_by_gate)} on a gate session")


class LockWatch:
    """Samples in a thread from start() to stop(); usable as a context manager. app_role names the app's
    database role, only to count its sessions (every non-gate session is watched either way)."""

    def __init__(self, dsn: str, interval_s: float = 0.05, app_role: str | None = None,
                 gate_prefix: str = APPLICATION_PREFIX) -> None:
        self.dsn, self.interval_s, self.app_role, self.gate_prefix = dsn, interval_s, app_role, gate_prefix
        self.report = LockReport()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None

    def start(self) -> LockWatch:
        self._conn = db.connect(self.dsn, autocommit=True, application_name="lock-watch", connect_timeout=10)
        self._thread = threading.Thread(target=self._run, name="lock-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> LockReport:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._conn is not None:
            self._conn.close()
        return self.report

    def __enter__(self) -> LockWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        began = time.monotonic()
        while not self._stop.is_set():
            tick = time.monotonic()
            try:
                self._sample(tick - began)
            except psycopg.Error:
                self.report.errors += 1
            self.report.seconds = time.monotonic() - began
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - tick)))

    def _sample(self, at_s: float) -> None:
        assert self._conn is not None
        rows = self._conn.execute(_SAMPLE).fetchall()
        report = self.report
        gate = {pid for pid, _, app, _, _ in rows if app.startswith(self.gate_prefix)}
        report.samples += 1
        report.gate_pids |= gate
        report.gate_sessions_max = max(report.gate_sessions_max, len(gate))
        report.other_sessions_max = max(report.other_sessions_max, len(rows) - len(gate))
        if self.app_role:
            report.app_sessions_max = max(report.app_sessions_max, sum(role == self.app_role for _, role, *_ in rows))
        for pid, role, app, _, blockers in rows:
            if pid in gate or not blockers:
                continue
            report.waits.append(Wait(at_s=round(at_s, 3), pid=pid, role=role or "", application=app,
                                     blockers=tuple(blockers),
                                     gate_blockers=tuple(b for b in blockers if b in report.gate_pids)))
