"""The sign-off's "Performance" section, from the measurements migration_gate.app.performance recorded in the run
folder: the chart (p95 per endpoint, baseline vs after, inline SVG) and a table with p50/p95/p99 and errors of each
measurement, the limit and the verdict. Paths and numbers only.

It lives here, not beside the measuring (app is below report in the package order): the sign-off is its only
reader, and its markup belongs with the other templates (report/templates/signoff/performance.html.j2).
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from migration_gate.app.performance import AFTER, BASELINE, Measurement, PerformanceError, load
from migration_gate.db import statements
from migration_gate.report.render import render

COLOURS = {BASELINE: "#8c959f", "postmigration": "#0969da", "golive": "#1a7f37"}
LABELS = {BASELINE: "baseline (legacy)", "postmigration": "post-migration (new)", "golive": "go-live (new)"}


def _chart(paths: list[str], found: dict[str, Measurement]) -> dict:
    """The chart's geometry: one group of horizontal bars per endpoint (p95 per measurement), the limit as a red
    tick; the template draws it."""
    names = [n for n in (BASELINE, *AFTER) if n in found]
    bar, gap, left, width = 14, 12, 210, 420
    budget = next((found[n].budget for n in AFTER if n in found and found[n].budget), None)
    limits: dict[str, float] = {}  # against the baseline; the fixed budget (no baseline) is drawn only if in scale
    fixed: dict[str, float] = {}
    for path in paths:
        base = found[BASELINE].endpoints.get(path) if BASELINE in found else None
        if budget and base is not None:
            limits[path] = budget["p95_factor"] * base.p95_ms + budget["p95_allowance_ms"]
        elif budget:
            fixed[path] = float(budget["fallback_p95_ms"])
    values = [m.endpoints[p].p95_ms for m in found.values() for p in paths if p in m.endpoints]
    top = max([*values, *limits.values(), 1.0]) * 1.15
    limits |= {p: v for p, v in fixed.items() if v <= top}
    items: list[dict] = []
    y = 10
    for path in paths:
        items.append({"kind": "path", "y": y + len(names) * bar / 2 + 4, "path": path})
        for name in names:
            stats = found[name].endpoints.get(path)
            if stats is None:
                items.append({"kind": "absent", "x": left, "y": y + bar - 3, "label": LABELS[name],
                              "status": found[name].absent.get(path, "not measured")})
            else:
                items.append({"kind": "bar", "x": left, "y": y, "w": max(1.0, stats.p95_ms / top * width),
                              "h": bar - 2, "colour": COLOURS[name], "label": LABELS[name], "p95": stats.p95_ms})
            y += bar
        if path in limits:
            items.append({"kind": "limit", "x": left + limits[path] / top * width, "y1": y - len(names) * bar - 2,
                          "y2": y, "limit": limits[path]})
        elif path in fixed:
            items.append({"kind": "fixed", "x": left + width + 4, "y": y - bar + 10, "limit": fixed[path]})
        y += gap
    items += [{"kind": "legend", "x": left + i * 150, "y": y + 4, "colour": COLOURS[n], "label": LABELS[n]}
              for i, n in enumerate(names)]
    items.append({"kind": "legend-limit", "x": left + len(names) * 150, "y": y + 4})
    return {"width": left + width + 130, "height": len(paths) * (len(names) * bar + gap) + 40, "marks": items}


def _rows(paths: list[str], found: dict[str, Measurement], budget: dict | None) -> list[dict]:
    """Each endpoint's line per measurement: its figures, the limit it is held to and whether it kept it."""
    rows = []
    for path in paths:
        base = found[BASELINE].endpoints.get(path) if BASELINE in found else None
        for name, measured in found.items():
            stats = measured.endpoints.get(path)
            row = {"path": path, "label": LABELS[name], "stats": stats, "limit": "-", "ok": None,
                   "status": measured.absent.get(path, "not measured")}
            if stats is not None and name != BASELINE and budget:
                cap = (budget["p95_factor"] * base.p95_ms + budget["p95_allowance_ms"] if base is not None
                       else float(budget["fallback_p95_ms"]))
                row["ok"] = stats.p95_ms <= cap and (stats.error_rate <= base.error_rate if base is not None
                                                     else stats.errors == 0)
                row["limit"] = f"{cap:.1f}" + ("" if base is not None else " (fixed)")
            rows.append(row)
    return rows


def _statements(found: dict[str, Measurement]) -> list[dict]:
    """What pg_stat_statements said for each after-measurement: the note why not, or per slow endpoint the
    statements that read the most (normalized texts only, see migration_gate.db.statements)."""
    shown = []
    for name in AFTER:
        info = found[name].statements if name in found else None
        if not info:
            continue
        if not info.get("available"):
            shown.append({"label": LABELS[name], "note": str(info.get("note", ""))})
            continue
        shown += [{"label": LABELS[name], "note": None, "path": path, "rows": rows}
                  for path, rows in info.get("endpoints", {}).items()]
    return shown


def section(run_dir: Path) -> Markup:
    """The sign-off's "Performance" section; nothing when no measurement was recorded."""
    found: dict[str, Measurement] = {}
    for name in (BASELINE, *AFTER):
        try:
            measured = load(run_dir, name)
        except PerformanceError as exc:
            return render("signoff/performance.html.j2", error=str(exc))
        if measured is not None:
            found[name] = measured
    if not found:
        return Markup()
    paths = list(dict.fromkeys(p for m in found.values() for p in [*m.endpoints, *m.absent]))
    budget = next((found[n].budget for n in AFTER if n in found and found[n].budget), None)
    how = (f"limit per endpoint: {budget['p95_factor']:g} x the baseline's p95 + {budget['p95_allowance_ms']:g} ms "
           f"(without a baseline: the fixed {budget['fallback_p95_ms']:g} ms); the error rate may not rise"
           if budget else "not yet compared: no measurement on the new schema")
    measured = [{"label": LABELS[n], "requests": m.requests, "at": m.measured_at} for n, m in found.items()]
    return render("signoff/performance.html.j2", error=None, how=how, measured=measured, chart=_chart(paths, found),
                  rows=_rows(paths, found, budget), statements=_statements(found), extension=statements.EXTENSION)
