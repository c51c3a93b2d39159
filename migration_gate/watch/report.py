"""What the watch leaves on disk: one running HTML report of every round (self-contained, with inline SVG trend
charts of p95 latency and error rate, so it can be attached or mailed as it is), and one JUnit XML file per round
(each check a testcase) for a CI dashboard or a pager that reads JUnit.

Both are rebuilt from the watch's state after each round, so a round run again (a crash, a resumed watch) leaves
exactly one entry. They hold check names, problem lines (tables, ids, counts), timings and verdicts: never values.

JUnit is written with the standard library's xml.etree: the format needed here is one testsuite of testcases with
a failure element, which ElementTree writes correctly escaped in 20 lines, and a PHI tool that adds no dependency
for it has one less package to vet (junitparser, in the package lists, would do the same job).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from migration_gate.config import SANDBOX_BANNER, GateConfig
from migration_gate.core import rundir
from migration_gate.core.status import Round
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
           limit: float | None = None) -> str:
    """A line chart as inline SVG: one polyline per series over the round numbers, an optional dashed limit."""
    values = [v for points in series.values() for _, v in points] + ([limit] if limit is not None else [])
    top = max(values, default=1.0) * 1.15 or 1.0

    def x(n: int) -> float:
        return PAD + (WIDTH - 2 * PAD) * (n - 1) / max(total - 1, 1)

    def y(v: float) -> float:
        return HEIGHT - PAD + (-(HEIGHT - 2 * PAD) * v / top)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' role='img' "
             f"aria-label='{escape(title)}'>",
             f"<text x='{PAD}' y='16' font-size='13' font-weight='600'>{escape(title)}</text>",
             f"<line x1='{PAD}' y1='{HEIGHT - PAD}' x2='{WIDTH - PAD}' y2='{HEIGHT - PAD}' stroke='#8c959f'/>",
             f"<line x1='{PAD}' y1='{PAD}' x2='{PAD}' y2='{HEIGHT - PAD}' stroke='#8c959f'/>",
             f"<text x='4' y='{PAD + 4}' font-size='10'>{top:.3g}{escape(unit)}</text>",
             f"<text x='4' y='{HEIGHT - PAD}' font-size='10'>0</text>",
             f"<text x='{PAD}' y='{HEIGHT - PAD + 14}' font-size='10'>round 1</text>",
             f"<text x='{WIDTH - PAD - 40}' y='{HEIGHT - PAD + 14}' font-size='10'>round {total}</text>"]
    if limit is not None:
        parts.append(f"<line x1='{PAD}' y1='{y(limit):.1f}' x2='{WIDTH - PAD}' y2='{y(limit):.1f}' stroke='#cf222e' "
                     f"stroke-dasharray='4 3'/><text x='{WIDTH - PAD + 2}' y='{y(limit) + 3:.1f}' font-size='9' "
                     "fill='#cf222e'>limit</text>")
    for i, (name, points) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in points)
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{coords}'/>")
        parts += [f"<circle cx='{x(n):.1f}' cy='{y(v):.1f}' r='2' fill='{colour}'/>" for n, v in points]
        parts.append(f"<text x='{PAD + 8 + 150 * i}' y='{HEIGHT - 6}' font-size='10' fill='{colour}'>"
                     f"{escape(name)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _round_rows(state: WatchState) -> str:
    rows = []
    for r in state.rounds:
        failed = [c.name for c in r.checks if not c.ok]
        colour = "#cf222e" if r.criteria else "#b35900" if r.verdict == Round.RED else "#1a7f37"
        rows.append(
            f"<tr><td>{r.number}</td><td>{escape(r.due)}</td><td>{escape(r.started)}</td><td>{r.seconds:.1f} s</td>"
            f"<td style='color:{colour};font-weight:600'>{r.verdict.upper()}</td>"
            f"<td>{max(r.p95_ms.values(), default=0):.0f} ms</td><td>{r.error_rate:.1%}</td>"
            f"<td>{escape(', '.join(failed)) or '-'}</td><td>{escape('; '.join(r.criteria)) or '-'}</td></tr>")
    return "".join(rows)


def _details(record: RoundRecord, total: int) -> str:
    checks = "".join(
        f"<tr><td>{'ok' if c.ok else '<b style=color:#cf222e>RED</b>'}</td><td>{escape(c.group)}</td>"
        f"<td>{escape(c.name)}</td><td>{c.seconds:.2f} s</td><td>{'<br>'.join(escape(p) for p in c.problems)}"
        f"{'<br>' if c.problems and c.notes else ''}<span class='note'>"
        f"{'<br>'.join(escape(n) for n in c.notes)}</span></td></tr>" for c in record.checks)
    extra = ""
    if record.criteria:
        extra = (f"<p class='criterion'>ROLLBACK CRITERION MET: {escape('; '.join(record.criteria))}<br>"
                 f"A rollback would discard: {escape(record.rollback_cost or 'not counted')}</p>")
    if record.alert:
        extra += f"<p>Alert: {escape(record.alert)}</p>"
    return (f"<details{' open' if record.verdict == 'red' else ''}><summary>Round {record.number}/{total} "
            f"({record.verdict}, due {escape(record.due)})</summary>{extra}<table><tr><th></th><th>group</th>"
            f"<th>check</th><th>time</th><th>problems and notes</th></tr>{checks}</table></details>")


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
    decision = ""
    if criteria:
        latest = criteria[-1]
        decision = (f"<div class='criterion'><b>Rollback criterion met</b> (round {latest.number}): "
                    f"{escape('; '.join(latest.criteria))}.<br>Decision maker: {escape(decision_maker)}.<br>"
                    f"A rollback would discard: {escape(latest.rollback_cost or 'not counted')}.<br>The watch never "
                    f"rolls back by itself. What a rollback would do, changing nothing: "
                    f"<code>scripts/rollback --run-dir {escape(state.run_dir)} --dry-run</code></div>")
    rules = gate.watch
    schedule = ", ".join(f"every {m:g} min to {h:g} h" for h, m in rules.schedule)
    banner = f"<p class='banner'>{escape(SANDBOX_BANNER)}</p>" if state.sandbox else ""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    budget_line = min((r.budget_ms[p] for r in state.rounds for p in r.budget_ms), default=None)
    title = f"{(SANDBOX_BANNER + ' - ') if state.sandbox else ''}Watch after go-live: {Path(state.run_dir).name}"
    criteria_text = ("any database invariant red; " if rules.invariant_red else "") + (
        f"error rate over {rules.error_rate_over:.1%} for {rules.error_rate_rounds} rounds in a row") + (
        f"; p95 over budget for {rules.p95_over_budget_rounds} rounds in a row" if rules.p95_over_budget_rounds else "")
    html = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#1f2328;max-width:1100px}}
table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #d0d7de;padding:3px 8px;font-size:13px;
vertical-align:top;text-align:left}}.verdict{{color:#fff;padding:8px 12px;font-weight:700;display:inline-block}}
.banner{{background:#9a6700;color:#fff;padding:6px 10px;font-weight:700}}.note{{color:#57606a}}
.criterion{{border:2px solid #cf222e;padding:8px;margin:8px 0}}code{{background:#f6f8fa;padding:1px 4px}}
</style></head><body>{banner}
<h1>Watch after go-live</h1>
<p class="verdict" style="background:{colour}">{escape(verdict)}</p>
<table><tr><th>run</th><td>{escape(state.run_dir)}</td></tr><tr><th>target</th><td>{escape(state.target)}</td></tr>
<tr><th>rounds</th><td>{len(state.rounds)} of {total} done ({escape(schedule)}; from {escape(_iso(state.anchor))}
{'' if state.factor == 1 else f', time compressed {state.factor:g} times'})</td></tr>
<tr><th>latency budgets</th><td>{escape(budgets_note)}</td></tr>
<tr><th>rollback criteria</th><td>{escape(criteria_text)}</td></tr>
<tr><th>decision maker</th><td>{escape(decision_maker)}</td></tr><tr><th>updated</th><td>{now}</td></tr></table>
{decision}
<h2 id="trends">Trends</h2>
{_chart("p95 latency per endpoint (ms)", latency, " ms", total, budget_line)}
{_chart("error rate per round (%)", errors, " %", total, 100 * rules.error_rate_over)}
<h2 id="rounds">Rounds</h2>
<table><tr><th>#</th><th>due</th><th>ran</th><th>took</th><th>verdict</th><th>p95 max</th><th>error rate</th>
<th>red checks</th><th>rollback criteria met</th></tr>{_round_rows(state)}</table>
<h2 id="checks">Every round's checks</h2>
{''.join(_details(r, total) for r in state.rounds)}
<p class="note">Each round's JUnit XML: round-NN.xml beside this file. Problem lines name tables, ids, paths and
counts, never values.</p></body></html>
"""
    path = folder / REPORT
    tmp = path.with_suffix(".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
