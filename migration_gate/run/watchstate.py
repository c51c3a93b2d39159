"""The watch's record on disk (<run_dir>/watch/state.json): when each round is due, and what each round found.
Its own module so that the watch (which runs rounds) and its reports (which draw them) share it without importing
each other."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from migration_gate.config import ConfigError
from migration_gate.core import rundir
from migration_gate.core.status import Round

STATE_FILE = rundir.STATE
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

    @property
    def total(self) -> int:
        return len(self.offsets)

    def due(self, number: int) -> float:
        return self.anchor + self.offsets[number - 1] / self.factor

    def worst(self) -> str:
        if any(r.criteria for r in self.rounds):
            return Round.CRITERION
        return Round.RED if any(r.verdict == Round.RED for r in self.rounds) else Round.GREEN

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
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError):
            raise ConfigError(f"{path} is not a readable watch state") from None


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
