"""The watch's record on disk (<run_dir>/watch/state.json): when each round is due, and what each round found.
Its own module so that the watch (which runs rounds) and its reports (which draw them) share it without importing
each other."""

from __future__ import annotations

import fcntl
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from migration_gate.config import ConfigError
from migration_gate.core import rundir
from migration_gate.core.status import Round, Verdict
from migration_gate.run.runstate import RunState

STATE_FILE = rundir.STATE
ACKS_FILE = rundir.WATCH_ACKS
API, INVARIANT = "api", "invariant"


def round_offsets(schedule: tuple[tuple[float, float], ...]) -> list[float]:
    """Seconds after go-live of every round: each segment (until_hours, every_minutes) steps from the previous
    segment's end. The checklist's 15 min to 2 h, hourly to 24 h, 4-hourly to 48 h gives 8 + 22 + 6 = 36."""
    offsets: list[float] = []
    start = 0.0
    for until_hours, every_minutes in schedule:
        step, end, at = every_minutes * 60, until_hours * 3600, start
        while at + step <= end + 1e-6:
            at += step
            offsets.append(round(at, 3))
        start = end
    return offsets


@dataclass
class CheckRecord:
    name: str
    group: str  # API (the app) or INVARIANT (the database: a rollback criterion)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @classmethod
    def judged(cls, name: str, group: str, summary: dict, problems: list[str], seconds: float) -> CheckRecord:
        """A judged Result as the watch keeps it: from its summary (Result.summary(), what the suites' results
        carry: what was checked, its notes), with the problem lines themselves (its alert and JUnit name them)."""
        return cls(name, group, list(problems), list(summary["notes"]), summary["checked"], seconds)


@dataclass
class RoundRecord:
    number: int
    due: str
    started: str
    seconds: float = 0.0
    verdict: str = Round.GREEN  # green or red
    checks: list[CheckRecord] = field(default_factory=list)
    p95_ms: dict[str, float] = field(default_factory=dict)
    budget_ms: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    errors: int = 0  # answered 5xx or not at all
    db_mark: int | None = None  # oldest running xid at the round's start: the next round's scope
    log_marker: str | None = None  # the log's marker taken before this round read it: the next round's start
    criteria: list[str] = field(default_factory=list)  # rollback criteria met at this round
    rollback_cost: str | None = None
    alert: str | None = None  # what became of the alert
    ended_at: float | None = None  # epoch seconds the round ended: a red one's escalation counts from here
    acknowledged_by: str | None = None  # scripts/watch --ack: who took a red round on (its escalation stops)
    acknowledged_at: str | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def latency_over(self) -> bool:
        return any(self.p95_ms[p] > self.budget_ms.get(p, float("inf")) for p in self.p95_ms)

    @property
    def invariants_red(self) -> list[str]:
        return [c.name for c in self.checks if c.group == INVARIANT and not c.ok]

    @classmethod
    def from_json(cls, data: dict) -> RoundRecord:
        data = dict(data)
        data["checks"] = [CheckRecord(**c) for c in data.get("checks", [])]
        return cls(**data)


@dataclass
class Escalated:
    """One [[escalation]] step called for a red round nobody acknowledged in time: to whom, when, and the outcome."""

    round: int
    step: int  # 1-based, in [[escalation]] order
    name: str
    at: str
    outcome: str


@dataclass
class WatchState:
    """The watch of one run, on disk: when rounds are due, what each found."""

    run_dir: str
    target: str
    anchor: float  # epoch seconds the schedule counts from: go-live (maintenance off)
    factor: float  # time compression (1: real time)
    offsets: list[float]
    sandbox: bool = False
    write_mark: dict | None = None  # the watch's own mark, when the run has none from its migration
    rounds: list[RoundRecord] = field(default_factory=list)
    escalations: list[Escalated] = field(default_factory=list)  # each [[escalation]] step called, in order

    @property
    def total(self) -> int:
        return len(self.offsets)

    def due(self, number: int) -> float:
        return self.anchor + self.offsets[number - 1] / self.factor

    def worst(self) -> str:
        if any(r.criteria for r in self.rounds):
            return Round.CRITERION
        return Round.RED if any(r.verdict == Round.RED for r in self.rounds) else Round.GREEN

    def escalation_due(self, number: int, after_minutes: float) -> float | None:
        """When a red, unacknowledged round's escalation step is due (epoch; the minutes compressed as the
        schedule is), None for a green or acknowledged round."""
        record = self.rounds[number - 1]
        if record.verdict != Round.RED or record.acknowledged_by or record.ended_at is None:
            return None
        return record.ended_at + after_minutes * 60 / self.factor

    def take_acks(self, folder: Path) -> None:
        """The acknowledgements scripts/watch --ack appended (acks.jsonl, apart from the state a running watch
        rewrites): each marks the red rounds up to its round as taken on (an earlier red round is part of it)."""
        path = folder / ACKS_FILE
        lines = path.read_text().splitlines() if path.is_file() else []
        for line in lines:
            try:
                ack = json.loads(line)
                number, by, at = int(ack["round"]), str(ack["by"]), str(ack["at"])
            except (ValueError, TypeError, KeyError):
                continue  # a torn last line: the next one is whole
            for record in self.rounds[:number]:
                if record.verdict == Round.RED and not record.acknowledged_by:
                    record.acknowledged_by, record.acknowledged_at = by, at

    def save(self, folder: Path) -> None:
        """Atomically (temporary file, then rename): a crash never leaves half a state."""
        tmp = folder / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(folder / STATE_FILE)

    @classmethod
    def load(cls, folder: Path) -> WatchState | None:
        path = folder / STATE_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            data["rounds"] = [RoundRecord.from_json(r) for r in data.get("rounds", [])]
            data["escalations"] = [Escalated(**e) for e in data.get("escalations", [])]
            state = cls(**data)
        except (OSError, ValueError, TypeError, KeyError):
            raise ConfigError(f"{path} is not a readable watch state") from None
        state.take_acks(folder)
        return state


def acknowledge(folder: Path, number: int, by: str, now: float) -> list[int]:
    """scripts/watch --ack ROUND --by NAME: a person takes red round ROUND (and the red ones before it) on, so
    [[escalation]] tells nobody further. Appended to acks.jsonl, which a running watch reads before each
    escalation (its own state file it rewrites). Returns the rounds newly acknowledged."""
    state = WatchState.load(folder)
    if state is None:
        raise ConfigError(f"{folder} holds no watch state: no round has run")
    if not 1 <= number <= len(state.rounds):
        raise ConfigError(f"round {number} has not run ({len(state.rounds)} rounds so far)")
    if state.rounds[number - 1].verdict != Round.RED:
        raise ConfigError(f"round {number} is {state.rounds[number - 1].verdict}: only a red round is acknowledged")
    if not by.strip():
        raise ConfigError("--by needs the name of whoever takes the round on")
    taken = [r.number for r in state.rounds[:number] if r.verdict == Round.RED and not r.acknowledged_by]
    with open(folder / ACKS_FILE, "a", encoding="utf-8") as out:
        out.write(json.dumps({"round": number, "by": " ".join(by.split())[:120], "at": iso(now)}) + "\n")
    return taken


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


NEVER_STARTED, RUNNING, RAN, STOPPED, NOT_LIVE = "never started", "running", "ran", "stopped", "not live"
NOT_WATCHED = "rehearsal"  # a sandbox rehearsal without its compressed watch (scripts/rehearse --watch)


@dataclass
class WatchStatus:
    """Whether the watch of a run ran, is running, or never started (the sign-off says which, never nothing)."""

    status: str
    line: str
    command: str

    @property
    def ok(self) -> bool:
        return self.status in (RUNNING, RAN, NOT_LIVE, NOT_WATCHED)


def watch_command(run_dir: Path) -> str:
    """The exact command that starts (or resumes) the watch of a run."""
    return f"scripts/watch --run-dir {run_dir}"


def watch_running(folder: Path) -> bool:
    """A watch process holds the folder's lock now (it holds it while it waits for the next round too)."""
    lock = folder / "lock"
    if not lock.is_file():
        return False
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def went_live(run: RunState) -> bool:
    """The run went live (green, forced or over the downtime limit; maintenance off): it has 48 hours to watch."""
    return run.status in (Verdict.GREEN, Verdict.FORCED, Verdict.OVER_LIMIT) and run.maintenance_off_at is not None


def watch_status(run_dir: Path, live: bool) -> WatchStatus:
    """From the run folder alone: the watch's state on disk and whether a watch holds its lock. `live`: the run
    went live (a run that did not has nothing to watch)."""
    folder, command = Path(run_dir) / rundir.WATCH, watch_command(run_dir)
    if not live:
        return WatchStatus(NOT_LIVE, "no watch: the run did not go live", command)
    state = WatchState.load(folder)
    running = watch_running(folder)
    done = len(state.rounds) if state else 0
    if state is not None and done >= state.total:
        return WatchStatus(RAN, f"the watch ran: all {state.total} rounds", command)
    if running:
        return WatchStatus(RUNNING, "the watch is running: " + (f"{done} of {state.total} rounds so far" if state
                                                                  else "its first round is not due yet"), command)
    if state is not None and done:
        return WatchStatus(STOPPED, f"the watch is not running: {done} of {state.total} rounds so far (stopped, or "
                                    f"run by cron between ticks); {command} resumes it", command)
    return WatchStatus(NEVER_STARTED, f"the watch NEVER STARTED: the run is not complete until it runs: {command}",
                       command)
