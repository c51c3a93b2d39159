"""The app's performance before and after cut-over, endpoint by endpoint (issue 11 item 1).

A fixed budget (500 ms) says little about a migration: an endpoint that took 40 ms on the legacy schema and 400 ms
on the new one passes it, and a slow legacy endpoint fails it for no fault of the migration. So the pre-checks
measure each configured endpoint ([api] endpoints) on the legacy app (the baseline), the post-checks and go-live
measure the same requests on the new schema, and each endpoint is held to its own baseline:
red when p95_after > p95_factor * p95_before + p95_allowance_ms, or when its error rate rises ([performance]).
Without a baseline the fixed budget ([budgets] api_p95_ms) still judges, and the result says so.

Measurements are recorded in the cut-over's run folder, `<run_dir>/performance/<name>.json`
(baseline.json, postmigration.json, golive.json), numbers and paths only: never a body, a token or a password.
The requests are sent by migration_gate.app.load (one login, a warm-up request per endpoint, then a fixed count).

An endpoint over its limit is named with both p95s and the limit; where the target has pg_stat_statements
(migration_gate.db.statements), a few more requests to that endpoint alone are sent between two snapshots of the view
and the red line names the statements they ran that read the most. Without it, a note says why (never required).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from migration_gate.app.load import LoadError, LoadPlan, LoadReport, percentile, run_load
from migration_gate.config import GateConfig, PerformanceConfig
from migration_gate.core import rundir
from migration_gate.core.errors import MigrationGateError
from migration_gate.core.result import Result
from migration_gate.db import statements

FOLDER = rundir.PERFORMANCE
BASELINE = rundir.BASELINE
AFTER = ("postmigration", "golive")  # measured on the new schema, in this order
ABSENT = ("404",)  # what an endpoint the app does not have on this schema answers (said so, not an error)
TIMEOUT_S = 10.0
ATTRIBUTION_REQUESTS = 5  # timed requests to one slow endpoint alone (+ load's warm-up), between two snapshots
ATTRIBUTED = 3  # statements named per slow endpoint


class PerformanceError(MigrationGateError):
    """A recorded measurement cannot be read; the message names the file, never its content."""


@dataclass(frozen=True)
class EndpointStats:
    """One endpoint's latencies (answered requests) and errors (not 2xx, or no answer) over `requests`."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    requests: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class Measurement:
    """What one phase measured: per endpoint, and the endpoints the app did not have (path -> its status)."""

    schema: str  # "legacy" or "new"
    requests: int  # asked per endpoint
    endpoints: dict[str, EndpointStats]
    absent: dict[str, str] = field(default_factory=dict)
    measured_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    budget: dict[str, float] | None = None  # the budget an after-measurement was judged by (for the sign-off)
    statements: dict | None = None  # pg_stat_statements: {"note": why not} or {path: [statement, ...]}

    def to_json(self) -> dict:
        data: dict = {"measured_at": self.measured_at, "schema": self.schema, "requests": self.requests,
                      "endpoints": {path: {"p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms,
                                           "errors": s.errors, "requests": s.requests}
                                    for path, s in self.endpoints.items()}}
        if self.absent:
            data["absent"] = dict(self.absent)
        if self.budget is not None:
            data["budget"] = dict(self.budget)
        if self.statements is not None:
            data["statements"] = self.statements
        return data

    @classmethod
    def from_json(cls, data: dict) -> Measurement:
        return cls(schema=str(data["schema"]), requests=int(data["requests"]), measured_at=str(data["measured_at"]),
                   endpoints={str(p): EndpointStats(float(s["p50_ms"]), float(s["p95_ms"]), float(s["p99_ms"]),
                                                    int(s["errors"]), int(s["requests"]))
                              for p, s in data["endpoints"].items()},
                   absent={str(p): str(s) for p, s in data.get("absent", {}).items()}, budget=data.get("budget"),
                   statements=data.get("statements"))


def plan(gate: GateConfig, base_url: str, username: str, password: str,
         headers: dict[str, str] | None = None) -> LoadPlan:
    """The same requests on both sides: every configured endpoint, [performance] requests each, its workers."""
    settings = gate.performance
    return LoadPlan.configured(gate, base_url, username, password, headers, requests=settings.requests,
                               workers=settings.workers, max_seconds=settings.max_seconds, timeout_s=TIMEOUT_S)


def _stats(report: LoadReport, path: str) -> EndpointStats:
    latencies = report.latencies_by_path.get(path, [])
    statuses = report.statuses_by_path.get(path, {})
    errors = sum(n for s, n in statuses.items() if not (s.isdigit() and 200 <= int(s) < 300))
    return EndpointStats(round(percentile(latencies, 50), 1), round(percentile(latencies, 95), 1),
                         round(percentile(latencies, 99), 1), errors, sum(statuses.values()))


def measure(load_plan: LoadPlan, schema: str) -> Measurement:
    """`load_plan.requests` requests per endpoint that answers 2xx (after one untimed warm-up each); the others
    are named with their status. Raises LoadError when no login or no endpoint answers."""
    per_path = load_plan.requests
    report = run_load(load_plan, requests_per_path=True)
    return Measurement(schema=schema, requests=per_path, endpoints={p: _stats(report, p) for p in report.paths},
                       absent=dict(report.skipped))


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / FOLDER


def save(measurement: Measurement, run_dir: Path, name: str) -> Path:
    """<run_dir>/performance/<name>.json, written atomically (another process may be reading it)."""
    path = rundir.performance_file(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(measurement.to_json(), indent=2))
    tmp.replace(path)
    return path


def load(run_dir: Path, name: str) -> Measurement | None:
    """The recorded measurement, or None when there is none."""
    path = rundir.performance_file(run_dir, name)
    try:
        return Measurement.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PerformanceError(f"{FOLDER}/{path.name} cannot be read as a measurement "
                               f"({exc.__class__.__name__})") from None


def limit_ms(before_p95: float, budget: PerformanceConfig) -> float:
    """The highest p95 an endpoint may reach after cut-over: factor x its baseline + the allowance."""
    return budget.p95_factor * before_p95 + budget.p95_allowance_ms


def _rate(stats: EndpointStats) -> str:
    return f"{stats.errors}/{stats.requests} ({stats.error_rate:.1%})"


def _line(stats: EndpointStats) -> str:
    return f"p50/p95/p99 {stats.p50_ms:.1f}/{stats.p95_ms:.1f}/{stats.p99_ms:.1f} ms, errors {_rate(stats)}"


def compare(before: Measurement | None, after: Measurement, budget: PerformanceConfig, fallback_p95_ms: float,
            label: str = "new schema") -> Result:
    """Each endpoint after cut-over against its baseline: p95 within factor x before + allowance, error rate not
    higher. An endpoint the legacy app did not have is said so and held to the fixed budget; one the new app lacks
    is red (it answered before). Without a baseline every endpoint is held to the fixed budget, and a note says so."""
    if before is None:
        result = Result(f"API p95 latency within {fallback_p95_ms:g} ms (no baseline: the fixed budget)")
        result.notes.append(f"no performance baseline in the run folder ({FOLDER}/{BASELINE}.json): judged against "
                            f"the fixed budget [budgets] api_p95_ms = {fallback_p95_ms:g} ms")
    else:
        result = Result(f"API p95 per endpoint within {budget.p95_factor:g} x the legacy baseline + "
                        f"{budget.p95_allowance_ms:g} ms, error rate not higher")
    for path, stats in after.endpoints.items():
        result.checked += 1
        base = before.endpoints.get(path) if before else None
        if base is None:
            if before is not None:
                why = f"answered {before.absent[path]}" if path in before.absent else "was not measured"
                result.notes.append(f"GET {path}: only on the {label} (the legacy app {why}): no baseline, "
                                    f"judged against the fixed budget {fallback_p95_ms:g} ms")
            result.notes.append(f"GET {path}: {_line(stats)} on the {label}")
            if stats.p95_ms > fallback_p95_ms:
                result.add(f"GET {path}: p95 {stats.p95_ms:.1f} ms on the {label} exceeds the fixed budget "
                           f"{fallback_p95_ms:g} ms")
            if stats.errors:
                result.add(f"GET {path}: {_rate(stats)} requests failed on the {label}")
            continue
        limit = limit_ms(base.p95_ms, budget)
        result.notes.append(f"GET {path}: p95 {stats.p95_ms:.1f} ms on the {label}, {base.p95_ms:.1f} ms on the "
                            f"legacy baseline (limit {limit:.1f} ms); errors {_rate(stats)} after, {_rate(base)} "
                            "before")
        if stats.p95_ms > limit:
            result.add(f"GET {path}: p95 {stats.p95_ms:.1f} ms on the {label} exceeds {budget.p95_factor:g} x "
                       f"{base.p95_ms:.1f} ms (legacy baseline) + {budget.p95_allowance_ms:g} ms = {limit:.1f} ms")
        if stats.error_rate > base.error_rate:
            result.add(f"GET {path}: error rate rose from {_rate(base)} on the legacy baseline to {_rate(stats)} "
                       f"on the {label}")
    for path, status in after.absent.items():
        if status in ABSENT and (before is None or path not in before.endpoints):
            result.notes.append(f"GET {path}: answered {status} on the {label}: not measured"
                                + ("" if before is None else " (nor before)"))
        elif before is not None and path in before.endpoints:
            result.add(f"GET {path}: answered {status} on the {label}, but 2xx on the legacy baseline "
                       f"({before.endpoints[path].p95_ms:.1f} ms p95)")
        else:
            result.add(f"GET {path}: answered {status} on the {label} (expected 2xx): not measured")
    return result


def record_baseline(load_plan: LoadPlan, run_dir: Path) -> Result:
    """The pre-checks' part: measure the legacy app and record it as the run's baseline. Endpoints the legacy app
    does not have are named (not errors); an app that cannot be measured at all is red."""
    result = Result("the app's performance baseline measured on the legacy schema and recorded")
    try:
        measured = measure(load_plan, "legacy")
    except LoadError as exc:
        result.add(f"no baseline: {exc}")
        return result
    path = save(measured, run_dir, BASELINE)
    result.notes.append(f"recorded in {FOLDER}/{path.name}: {measured.requests} requests per endpoint")
    for name, stats in measured.endpoints.items():
        result.checked += 1
        result.notes.append(f"GET {name}: {_line(stats)} on the legacy schema")
    for name, status in measured.absent.items():
        result.notes.append(f"GET {name}: answered {status} on the legacy schema: not measured"
                            + (" (the legacy app does not have it)" if status in ABSENT else ""))
    return result


def over_limit(before: Measurement | None, after: Measurement, budget: PerformanceConfig,
               fallback_p95_ms: float) -> list[str]:
    """The endpoints whose p95 is over their limit (factor x baseline + allowance, or the fixed budget)."""
    slow = []
    for path, stats in after.endpoints.items():
        base = before.endpoints.get(path) if before else None
        if stats.p95_ms > (limit_ms(base.p95_ms, budget) if base is not None else fallback_p95_ms):
            slow.append(path)
    return slow


def attribute(load_plan: LoadPlan, path: str, dsn: str) -> tuple[list[statements.Statement], str | None]:
    """The statements ATTRIBUTION_REQUESTS requests to this endpoint alone ran, most blocks read first, or a note
    why pg_stat_statements could not tell."""
    alone = dataclasses.replace(load_plan, paths=(path,), requests=ATTRIBUTION_REQUESTS, workers=1)
    try:
        _report, found, note = statements.ran_during(dsn, lambda: run_load(alone, requests_per_path=True),
                                                     limit=ATTRIBUTED)
    except LoadError as exc:
        return [], f"statements not attributed: {exc}"
    return found, note


def _statements(result: Result, after: Measurement, load_plan: LoadPlan, slow: list[str], dsn: str | None) -> None:
    """Record whether pg_stat_statements serves on the target (a note why not, in the measurement and the result),
    and append to each slow endpoint's red line the statements its requests ran that read the most."""
    note = (f"{statements.EXTENSION} not consulted: no database connection was given" if dsn is None
            else statements.availability(dsn))
    if note is not None:
        after.statements = {"available": False, "note": note}
        result.notes.append(note)
        return
    by_path: dict[str, list[dict]] = {}
    for path in slow:
        found, note = attribute(load_plan, path, dsn)
        if note is not None:
            result.notes.append(f"GET {path}: {note}")
            continue
        by_path[path] = [s.to_json() for s in found]
        if found:
            named = " ".join(f"({i}) {s.line()}" for i, s in enumerate(found, 1))
            how = (f"; the statements {ATTRIBUTION_REQUESTS + 1} requests to it alone (one a warm-up) ran that read "
                   "the most "
                   f"({statements.EXTENSION}): {named}")
            result.problems[:] = [line + how if line.startswith(f"GET {path}: p95 ") else line
                                  for line in result.problems]
    after.statements = {"available": True, "endpoints": by_path}


def check_after(load_plan: LoadPlan, run_dir: Path, gate: GateConfig, name: str, dsn: str | None = None) -> Result:
    """The post-checks' and go-live's part: measure the new schema, record it as <name>.json beside the baseline,
    and judge it against the baseline (or the fixed budget when the run has none). With the target's dsn, a slow
    endpoint's red line also names the statements it ran that read the most (where pg_stat_statements serves)."""
    budget = gate.performance
    try:
        before = load(run_dir, BASELINE)
        after = measure(load_plan, "new")
    except (LoadError, PerformanceError) as exc:
        result = Result("API p95 latency against the baseline")
        result.add(f"not measured: {exc}")
        return result
    after.budget = {"p95_factor": budget.p95_factor, "p95_allowance_ms": budget.p95_allowance_ms,
                    "fallback_p95_ms": gate.api_p95_ms, "baseline": before is not None}
    result = compare(before, after, budget, gate.api_p95_ms)
    _statements(result, after, load_plan, over_limit(before, after, budget, gate.api_p95_ms), dsn)
    path = save(after, run_dir, name)
    result.notes.insert(0, f"recorded in {FOLDER}/{path.name}: {after.requests} requests per endpoint")
    return result
