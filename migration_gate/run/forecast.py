"""The window, forecast before it opens: each phase of the cut-over and the downtime, against the checklist's
budgets ([budgets] phase_minutes, downtime_minutes), from an earlier run of the same migration file scaled to the
target's live size.

Source: the newest earlier run folder under the reports folder (a dress rehearsal on a copy, a scratch rehearsal,
or a cut-over: any run whose state.json has the same migration sha256 and every phase passed with its seconds).
Scaling, per phase, by what the phase's work grows with:
  - pre-checks, migration, integrity, post-checks: rows of the app's legacy tables (pg_class.reltuples, an exact
    count for a table never analyzed); every one of them reads or rewrites those rows, and before the migration
    the new side does not exist yet (integrity and the post-checks read both sides: the new side is the legacy
    data migrated, so it grows in the same proportion);
  - backup: bytes of every table of the database, any schema, with their indexes and TOAST (pg_dump dumps them
    all, and the backup checks restore them), without the system catalogs (a fixed few MB);
  - maintenance, deploy, go-live: unscaled (hooks, waits and a fixed number of requests);
  - a suite's start-up (the phase's seconds outside its JUnit suite's own time, for the phases that are only
    their suite: pre-checks, integrity, post-checks) stays unscaled too.
A run records the sizes it saw at its start in state.json ("sizes"), so that later forecasts have them; for an
older run without them, its recorded row counts stand in (rows only); without either, nothing is scaled, and the
forecast says so. No earlier run: no forecast of the phases (said, never an error).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate.config import GateConfig
from migration_gate.core import rundir
from migration_gate.db import connection as db
from migration_gate.db import sizes
from migration_gate.run.runstate import BUDGET_OF, PLAN, STATE_FILE
from migration_gate.run.suites import read_results

# What each phase's time grows with (see the module's docstring).
ROWS, DATABASE, FIXED = "rows", "bytes of the database's tables", "fixed"
GROWS_WITH = {"premigration": ROWS, "maintenance": FIXED, "backup": DATABASE, "migration": ROWS, "integrity": ROWS,
              "deploy": FIXED, "postmigration": ROWS, "golive": FIXED}
# Phases that are only their pytest suite (<phase>/criteria-<phase>.json): their time outside the suite is its start-up.
# Not the backup: its time outside the suite is the dump, stored and fetched back, which grows with the data.
SUITES = ("premigration", "integrity", "postmigration")
# The phases the maintenance window spans (maintenance goes on inside the first, off inside the last).
WINDOW = ("maintenance", "backup", "migration", "integrity", "deploy", "postmigration", "golive")


def measure(dsn: str, gate: GateConfig) -> dict:
    """The sizes a forecast scales by, as the target holds them now: rows and bytes of each of the app's legacy
    tables that exist, and the bytes of every table of the database outside the system catalogs, any schema (what
    pg_dump dumps; "database_bytes"). Rows from pg_class.reltuples; an exact count only for a table never analyzed
    (reltuples -1). The app is live: a size that needs a lock ([precheck] lock_timeout, as the pre-checks) the app
    holds is estimated from the catalog instead (relpages; the table marked "estimated"), never waited for."""
    with db.connect(dsn, connect_timeout=15, autocommit=True) as conn:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(gate.precheck.lock_timeout)))
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(gate.precheck.statement_timeout)))
        tables: dict[str, dict] = {}
        for name in sorted(gate.legacy_schema):
            found = _table_size(conn, gate.schema, name)
            if found is not None:
                tables[name] = found
        dumped = _dumped_bytes(conn)
    return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "tables": tables, "database_bytes": int(dumped)}


def _table_size(conn: psycopg.Connection, schema: str, name: str) -> dict | None:
    """Rows and bytes of one table (None: it does not exist) by the one size reader, counting at any size where
    the statistics say nothing; from the catalog when its lock is not free."""
    size = sizes.table_size(conn, schema, name)
    if size is None:
        return None
    found = {"rows": int(size.rows or 0), "bytes": size.bytes}
    return found | {"estimated": True} if size.estimated else found


def _dumped_bytes(conn: psycopg.Connection) -> int:
    """Every table of the database outside the system catalogs, with its indexes and TOAST; a table whose lock is
    taken counts by its catalog pages (the query itself never waits: lock_timeout)."""
    try:
        return conn.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') "
                            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                            "AND n.nspname NOT LIKE 'pg_toast%'").fetchone()[0]
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
        return conn.execute(
            "SELECT coalesce(sum(c.relpages + coalesce(t.relpages, 0)), 0) * current_setting('block_size')::bigint "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_class t "
            "ON t.oid = c.reltoastrelid WHERE c.relkind IN ('r', 'm', 'i') AND n.nspname NOT IN ('pg_catalog', "
            "'information_schema') AND n.nspname NOT LIKE 'pg_toast%'").fetchone()[0]


@dataclass
class PhaseForecast:
    name: str
    timebox: str
    seconds: float | None  # forecast; None: no source
    source_seconds: float | None = None  # what the source run took
    fixed_seconds: float = 0.0  # of those, kept unscaled
    scale: float | None = None  # the factor applied to the rest (None: unscaled)
    by: str = ""  # how, in words


@dataclass
class Forecast:
    source: str | None  # the source run's folder name
    source_started: str | None
    method: str  # one line: from which run, scaled how
    phases: list[PhaseForecast]
    downtime_minutes: float | None
    downtime_limit: float
    budgets: dict[str, float] = field(default_factory=dict)
    dress_rehearsal: dict | None = None  # the source's marker, when it was one
    accepted: dict | None = None  # {"by", "at"}: started although it breaks a budget (--accept-forecast)

    def timeboxes(self) -> list[tuple[str, float | None, float | None, bool]]:
        """(timebox, forecast minutes, budget minutes, over) in the checklist's order."""
        rows = []
        for box in dict.fromkeys(BUDGET_OF.values()):
            members = [p for p in self.phases if p.timebox == box]
            known = [p.seconds for p in members if p.seconds is not None]
            minutes = round(sum(known) / 60, 3) if members and len(known) == len(members) else None
            budget = self.budgets.get(box)
            rows.append((box, minutes, budget, minutes is not None and budget is not None and minutes > budget))
        return rows

    def breaks(self) -> list[str]:
        """Each budget the forecast breaks, one line each (empty: none, or no forecast)."""
        found = []
        for box, minutes, budget, over in self.timeboxes():
            if over:
                names = ", ".join(p.name for p in self.phases if p.timebox == box)
                found.append(f"timebox {box} ({names}): forecast {minutes:.2f} min > budget {budget:g} min")
        if self.downtime_minutes is not None and self.downtime_minutes > self.downtime_limit:
            found.append(f"downtime: forecast {self.downtime_minutes:.2f} min > limit {self.downtime_limit:g} min")
        return found

    def lines(self) -> list[str]:
        """The forecast as text: the method, each phase, each timebox against its budget, the downtime."""
        out = [f"Forecast: {self.method}"]
        if self.source is None:
            return out
        for p in self.phases:
            how = p.by + (f", {p.fixed_seconds:.1f} s of it fixed" if p.fixed_seconds and p.scale else "")
            out.append(f"  phase {p.name:<14} {p.seconds:8.1f} s  (was {p.source_seconds:.1f} s; {how})")
        for box, minutes, budget, over in self.timeboxes():
            shown = "-" if budget is None else f"{budget:g} min"
            out.append(f"  timebox {box:<13} {minutes:7.2f} min of {shown}" + ("  OVER BUDGET" if over else ""))
        if self.downtime_minutes is not None:
            over = self.downtime_minutes > self.downtime_limit
            out.append(f"  downtime {self.downtime_minutes:.2f} min of {self.downtime_limit:g} min"
                       + ("  OVER THE LIMIT" if over else ""))
        return out

    def to_json(self) -> dict:
        return asdict(self) | {"breaks": self.breaks(),
                               "timeboxes": [{"name": b, "minutes": m, "budget_minutes": g, "over": o}
                                             for b, m, g, o in self.timeboxes()]}

    @classmethod
    def from_json(cls, data: dict) -> Forecast:
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["phases"] = [PhaseForecast(**p) for p in data.get("phases", [])]
        return cls(**data)


def _runs(reports: Path, sha256: str, exclude: Path | None) -> list[tuple[Path, dict]]:
    """Earlier run folders of this migration file whose every phase passed with its seconds, newest first. Read as
    plain JSON: a run written by another version of the gate (more or fewer fields) still counts."""
    found = []
    for state_file in reports.glob(f"*/{STATE_FILE}"):
        if exclude is not None and state_file.parent.resolve() == exclude.resolve():
            continue
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(state_file.read_text())
            phases = {p.get("name"): p for p in data.get("phases", []) if isinstance(p, dict)}
            if data.get("migration_sha256") == sha256 and all(
                    phases.get(name, {}).get("status") == "passed"
                    and isinstance(phases[name].get("seconds"), int | float) for name in PLAN):
                found.append((state_file.parent, data))
    found.sort(key=lambda item: (str(item[1].get("started", "")), item[0].name), reverse=True)
    return found


def _suite_startup(run_dir: Path, phase: str, seconds: float) -> float:
    """A suite phase's seconds outside its session (the pytest process starting): not data-bound. The session's
    own time from the results the suite wrote as data (suites.read_results), not from its JUnit text."""
    results = read_results(rundir.criteria_file(run_dir / phase, phase))
    duration = results.get("duration") if results else None
    if not isinstance(duration, int | float):
        return 0.0
    return max(0.0, min(seconds, seconds - float(duration)))


def _ratio(now: dict, then: dict | None, counts: list[dict], measure_of: str) -> tuple[float | None, str]:
    """now / then for a phase's measure, and how it was taken (rows of the tables both saw, else the database's
    bytes; an older run without sizes: its recorded row counts)."""
    tables_now = now.get("tables", {})
    if then and measure_of == DATABASE and then.get("database_bytes") and now.get("database_bytes"):
        ratio = now["database_bytes"] / then["database_bytes"]
        return ratio, f"x{ratio:.2f} by bytes of the database's tables ({_mb(then['database_bytes'])} -> " \
                      f"{_mb(now['database_bytes'])})"
    if then and then.get("tables"):
        common = [t for t in then["tables"] if t in tables_now]
        before = sum(then["tables"][t]["rows"] for t in common)
        after = sum(tables_now[t]["rows"] for t in common)
        if before > 0 and after > 0:
            return after / before, f"x{after / before:.2f} by rows of {len(common)} tables ({before:,} -> {after:,})"
    recorded = {c.get("legacy"): c.get("legacy_rows") for c in counts if isinstance(c.get("legacy_rows"), int)}
    common = [t for t in recorded if t in tables_now]
    before = sum(recorded[t] for t in common)
    after = sum(tables_now[t]["rows"] for t in common)
    if before > 0 and after > 0:
        return after / before, (f"x{after / before:.2f} by rows of {len(common)} tables ({before:,} -> {after:,}; "
                                "the source recorded no sizes at its start: its row counts at backup)")
    return None, "unscaled: the source run recorded no sizes or counts"


def _mb(size: int) -> str:
    return f"{size / 1_048_576:,.1f} MB"


def make(gate: GateConfig, reports: Path, sha256: str, now: dict | None, exclude: Path | None = None) -> Forecast:
    """The forecast of each phase and of the downtime from the newest matching earlier run under `reports`,
    scaled to `now` (measure()'s sizes; None: the target could not be measured, nothing is scaled)."""
    budgets = {BUDGET_OF[name]: gate.phase_minutes[BUDGET_OF[name]] for name in PLAN
               if BUDGET_OF[name] in gate.phase_minutes}
    runs = _runs(reports, sha256, exclude) if reports.is_dir() else []
    if not runs:
        return Forecast(None, None, f"none: no earlier run of this migration file (sha256 {sha256[:12]}...) with "
                        f"every phase passed under {reports} (a rehearsal or dress rehearsal there gives one)",
                        [PhaseForecast(p, BUDGET_OF[p], None) for p in PLAN], None, gate.downtime_minutes, budgets)
    run_dir, data = runs[0]
    then = data.get("sizes") if isinstance(data.get("sizes"), dict) else None
    seconds = {p["name"]: float(p["seconds"]) for p in data["phases"]}
    phases = []
    for name in PLAN:
        grows = GROWS_WITH[name]
        was = seconds[name]
        if grows == FIXED:
            phases.append(PhaseForecast(name, BUDGET_OF[name], was, was, was, None, "unscaled (hooks, waits, "
                                        "a fixed number of requests)"))
            continue
        ratio, how = _ratio(now, then, data.get("counts") or [], grows) if now else (
            None, "unscaled: the target's size could not be measured")
        fixed = _suite_startup(run_dir, name, was) if name in SUITES else 0.0
        forecast = was if ratio is None else fixed + (was - fixed) * ratio
        phases.append(PhaseForecast(name, BUDGET_OF[name], round(forecast, 2), was, round(fixed, 2),
                                    None if ratio is None else round(ratio, 4), how))
    downtime = None
    if isinstance(data.get("downtime_minutes"), int | float):  # the source's own window, the scaled phases' growth
        grown = sum(p.seconds - p.source_seconds for p in phases if p.name in WINDOW)
        downtime = round(data["downtime_minutes"] + grown / 60, 3)
    else:
        downtime = round(sum(p.seconds for p in phases if p.name in WINDOW) / 60, 3)
    marker = data.get("dress_rehearsal") if isinstance(data.get("dress_rehearsal"), dict) else None
    kind = (f"dress rehearsal on {marker.get('copy', 'a copy')} (data as of {marker.get('as_of', '?')})" if marker
            else "run")
    scaled = sorted({p.by.split(" (")[0] for p in phases if p.scale is not None})
    method = (f"from {kind} {run_dir.name} of {data.get('started', '?')} ({run_dir.parent}); "
              + (f"scaled {'; '.join(scaled)}" if scaled else "not scaled (no sizes to compare)")
              + "; maintenance, deploy and go-live unscaled")
    return Forecast(run_dir.name, data.get("started"), method, phases, downtime, gate.downtime_minutes, budgets,
                    marker)


def against_actual(forecast: dict | None, phases: list, downtime: float | None) -> list[dict]:
    """Forecast and actual per phase and for the downtime (the sign-off's rows): name, forecast, actual seconds
    (minutes for the downtime) and the actual over the forecast."""
    if not forecast or forecast.get("source") is None:
        return []
    known = {p["name"]: p.get("seconds") for p in forecast.get("phases", [])}
    rows = []
    for record in phases:
        if record.name in known:
            rows.append(_row(record.name, known[record.name], record.seconds, "s"))
    rows.append(_row("downtime", forecast.get("downtime_minutes"), downtime, "min"))
    return rows


def _row(name: str, forecast: float | None, actual: float | None, unit: str) -> dict:
    ratio = round(actual / forecast, 2) if forecast and actual is not None else None
    return {"name": name, "forecast": forecast, "actual": actual, "unit": unit, "actual_over_forecast": ratio}
