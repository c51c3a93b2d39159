"""What the watch leaves on disk: one running HTML report of every round (self-contained, with inline SVG trend
charts of p95 latency and error rate, so it can be attached or mailed as it is), and one JUnit XML file per round
(each check a testcase) for a CI dashboard or a pager that reads JUnit.

Both are rebuilt from the watch's state after each round, so a round run again (a crash, a resumed watch) leaves
exactly one entry. They hold check names, problem lines (tables, ids, counts), timings and verdicts: never values.

JUnit is written with the standard library's xml.etree: the format needed here is one testsuite of testcases with
a failure element, which ElementTree writes correctly escaped in 20 lines, and a PHI tool that adds no dependency
for it has one less package to vet (junitparser, in the package lists, would do the same job). It is the only JUnit
writer of ours: the phase suites' JUnit is pytest's own (--junitxml, its testcases built from pytest's reports, which
a watch round has none of), so the two cannot share a writer without faking pytest reports.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from markupsafe import Markup

from migration_gate.config import SANDBOX_BANNER, GateConfig
from migration_gate.core import rundir
from migration_gate.core.status import Round
from migration_gate.report.render import render
from migration_gate.run.watchstate import RoundRecord, WatchState

REPORT = rundir.WATCH_REPORT
COLOURS = ("#0969da", "#8250df", "#bf3989", "#1a7f37", "#9a6700", "#cf222e", "#57606a")
WIDTH, HEIGHT, PAD = 720, 200, 40


def junit_path(folder: Path, number: int) -> Path:
    return rundir.round_junit(folder, number)


def write_junit(record: RoundRecord, folder: Path, total: int, sandbox: bool) -> Path:
    """One round as a JUnit testsuite: each check a testcase, a red one with a failure naming its problems."""
    failed = sum(not c.ok for c in record.checks)
    suite = ET.Element("testsuite", name=f"watch round {record.number:02d} of {total}", tests=str(len(record.checks)),
                       failures=str(failed), errors="0", skipped="0", time=f"{record.seconds:.3f}",
                       timestamp=record.started)
    properties = ET.SubElement(suite, "properties")
    for name, value in (("round", record.number), ("due", record.due), ("verdict", record.verdict),
                        ("error_rate", f"{record.error_rate:.4f}"), ("requests", record.requests),
                        *(("rollback_criterion", line) for line in record.criteria),
                        *((("sandbox", SANDBOX_BANNER),) if sandbox else ())):
        ET.SubElement(properties, "property", name=name, value=str(value))
    for check in record.checks:
        case = ET.SubElement(suite, "testcase", classname=f"watch.{check.group}", name=check.name,
                             time=f"{check.seconds:.3f}")
        if not check.ok:
            failure = ET.SubElement(case, "failure", message=check.problems[0][:500], type="CheckFailed")
            failure.text = "\n".join(check.problems)
        if check.notes:
            ET.SubElement(case, "system-out").text = "\n".join(check.notes)
    path = junit_path(folder, record.number)
    tree = ET.ElementTree(ET.Element("testsuites"))
    tree.getroot().append(suite)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
    return path


def _chart(title: str, series: dict[str, list[tuple[int, float]]], unit: str, total: int,
           limit: float | None = None) -> Markup:
    """A line chart as inline SVG (templates/trend.svg.j2): one polyline per series over the round numbers, an
    optional dashed limit. Here: the scale and each point's coordinates."""
    values = [v for points in series.values() for _, v in points] + ([limit] if limit is not None else [])
    top = max(values, default=1.0) * 1.15 or 1.0

    def x(n: int) -> float:
        return PAD + (WIDTH - 2 * PAD) * (n - 1) / max(total - 1, 1)

    def y(v: float) -> float:
        return HEIGHT - PAD + (-(HEIGHT - 2 * PAD) * v / top)
    lines = [{"name": name, "colour": COLOURS[i % len(COLOURS)], "points": [(x(n), y(v)) for n, v in points]}
             for i, (name, points) in enumerate(sorted(series.items()))]
    return render("trend.svg.j2", title=title, width=WIDTH, height=HEIGHT, pad=PAD, top=top, unit=unit, total=total,
                  limit=None if limit is None else y(limit), lines=lines)


def write(state: WatchState, folder: Path, gate: GateConfig, decision_maker: str, budgets_note: str) -> Path:
    """The running report and the latest round's JUnit file, from the state (idempotent)."""
    if state.rounds:
        write_junit(state.rounds[-1], folder, state.total, state.sandbox)
    total = state.total
    paths = sorted({p for r in state.rounds for p in r.p95_ms})
    latency = {p: [(r.number, r.p95_ms[p]) for r in state.rounds if p in r.p95_ms] for p in paths}
    errors = {"error rate (%)": [(r.number, 100 * r.error_rate) for r in state.rounds]}
    criteria = [r for r in state.rounds if r.criteria]
    red = sum(r.verdict == Round.RED for r in state.rounds)
    if criteria:
        verdict, colour = f"ROLLBACK CRITERION MET at round {criteria[0].number}", "#cf222e"
    elif red:
        verdict, colour = f"{red} RED ROUND(S)", "#b35900"
    else:
        verdict, colour = "GREEN SO FAR" if len(state.rounds) < total else "GREEN: THE WATCH IS OVER", "#1a7f37"
    rules = gate.watch
    budget_line = min((r.budget_ms[p] for r in state.rounds for p in r.budget_ms), default=None)
    criteria_text = ("any database invariant red; " if rules.invariant_red else "") + (
        f"error rate over {rules.error_rate_over:.1%} for {rules.error_rate_rounds} rounds in a row") + (
        f"; p95 over budget for {rules.p95_over_budget_rounds} rounds in a row" if rules.p95_over_budget_rounds else "")
    rounds = [{"record": r, "failed": ", ".join(c.name for c in r.checks if not c.ok),
               "criteria": "; ".join(r.criteria), "p95_max": max(r.p95_ms.values(), default=0),
               "colour": "#cf222e" if r.criteria else "#b35900" if r.verdict == "red" else "#1a7f37"}
              for r in state.rounds]
    html = render(
        "watch.html.j2", state=state, total=total, sandbox=state.sandbox, banner=SANDBOX_BANNER,
        title=f"{(SANDBOX_BANNER + ' - ') if state.sandbox else ''}Watch after go-live: {Path(state.run_dir).name}",
        verdict=verdict, colour=colour, schedule=", ".join(f"every {m:g} min to {h:g} h" for h, m in rules.schedule),
        anchor=_iso(state.anchor), budgets_note=budgets_note, criteria_text=criteria_text,
        decision_maker=decision_maker, now=datetime.now(UTC).isoformat(timespec="seconds"),
        latest=criteria[-1] if criteria else None,
        latest_criteria="; ".join(criteria[-1].criteria) if criteria else "",
        latency_chart=_chart("p95 latency per endpoint (ms)", latency, " ms", total, budget_line),
        error_chart=_chart("error rate per round (%)", errors, " %", total, 100 * rules.error_rate_over),
        rounds=rounds)
    path = folder / REPORT
    tmp = path.with_suffix(".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
