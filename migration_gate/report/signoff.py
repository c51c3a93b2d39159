"""The sign-off report: one self-contained HTML file a compliance officer can read, attach and sign.

Built only from the run's state and the phase reports' criteria files: names, counts, timings and digests,
never data values. Every artifact of the run is listed with its sha256, so any later edit shows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from migration_gate.app.performance import signoff_section as performance_section
from migration_gate.backup import is_plaintext_dump, sha256_file
from migration_gate.config import SANDBOX_BANNER, ConfigError, GateConfig, PeopleItem
from migration_gate.core import rundir
from migration_gate.core.criteria import (
    CRITERIA,
    DOWNTIME_LINE,
    FAILURE_LINES,
    NOT_APPLICABLE,
    NOT_CHECKED,
    PARTLY_CHECKED,
    ROLLBACK_ONLY,
    SUCCESS_LINES,
    ChecklistLine,
)
from migration_gate.db.deploytables import DeployTable
from migration_gate.db.writes import TableWrites
from migration_gate.report.bundle import KEPT_BACK_FOLDERS, kept_back
from migration_gate.run import attest, notify
from migration_gate.run.forecast import Forecast, against_actual
from migration_gate.run.runstate import RunState, budget_report, forced_label
from migration_gate.run.watchstate import WatchState

REHEARSAL = "REHEARSAL: synthetic data"
PHI_WORDS = ("PHI", "decrypt", "ciphertext", "IV", "hash", "plaintext")
VERDICTS = {
    "green": ("PASSED", "#1a7f37", "The migration passed every gate. The system is live on the new schema."),
    "forced": ("FORCED", "#9a6700",
               "Every phase after the forced ones passed and the system is live on the new schema, but the run went "
               "on past red checks (--force): this is not a PASSED sign-off. What was red is in the Timeline."),
    "rolled-back": ("FAILED - ROLLED BACK", "#b35900",
                    "A gate failed after the migration started, or an operator decided to roll back. The database "
                    "was rolled back and the rollback verified (how, and what it kept or discarded: Rollback)."),
    "rolled-back-maintenance-on": (
        "FAILED - ROLLED BACK, MAINTENANCE STILL ON", "#cf222e",
        "A gate failed; the database was rolled back and the rollback verified, but switching maintenance mode off "
        "failed (the maintenance-off step in Rollback): the app still shuts its users out. Switch it off by hand "
        "now and check the app."),
    "rollback-held": ("FAILED - ROLLBACK HELD FOR A DECISION", "#cf222e",
                      "A rollback is needed but would discard rows written since the migration by others than the "
                      "gate. Nothing was rolled back: the database is on the new schema and the app stays in "
                      "maintenance until a named person decides (see Rollback)."),
    "over-limit": ("FAILED - DOWNTIME OVER THE LIMIT", "#cf222e",
                   "Every gate passed and the system is live on the new schema, but the downtime exceeded the "
                   "checklist's limit: the migration counts as failed. Decide on a rollback with the approvers."),
    "red": ("FAILED - NOT MIGRATED", "#b35900", "A gate failed before the migration; the database was not changed."),
    "rollback-failed": ("FAILED - ROLLBACK NOT VERIFIED", "#cf222e",
                        "A gate failed and the rollback could not be verified. Manual intervention is required."),
    "refused": ("REFUSED", "#cf222e", "The gate refused to proceed."),
    "interrupted": ("INTERRUPTED", "#cf222e", "The run was interrupted; the next invocation resumes or rolls back."),
    "running": ("INCOMPLETE", "#cf222e", "The run has not finished."),
}
# A rehearsal's verdicts: the same gates, but nothing real went live (issue 11 reworks the sign-off further).
SANDBOX_SENTENCES = {
    "green": "The rehearsal passed every gate on the sandbox. Nothing real was migrated: this is not a sign-off of "
             "your database.",
    "over-limit": "Every gate passed on the sandbox, but the downtime exceeded the checklist's limit: the rehearsal "
                  "counts as failed.",
}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#1f2328;line-height:1.4}h1{margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;
margin-top:1.6em}table{border-collapse:collapse;width:100%;margin:.5em 0}th,td{border:1px solid #d0d7de;
padding:4px 8px;text-align:left;vertical-align:top;font-size:14px}th{background:#f6f8fa}.verdict{color:#fff;
padding:.6em 1em;border-radius:6px;font-size:1.3em;font-weight:600}.ok{color:#1a7f37;font-weight:600}
.bad{color:#cf222e;font-weight:600}.muted{color:#59636e}.waived{color:#9a6700;font-weight:600}
td a,td code{word-break:break-all}.sign td{height:3em}code{font-size:13px;word-break:break-all}
@media print{body{margin:0}}
"""


def _cls(ok: bool) -> str:
    return "ok" if ok else "bad"


def _criteria(run_dir: Path) -> tuple[dict[str, dict], list[dict]]:
    merged: dict[str, dict] = {}
    checks: list[dict] = []
    for path in sorted(run_dir.glob(rundir.CRITERIA_GLOB)):
        data = json.loads(path.read_text())
        checks.extend(dict(c, phase=path.parent.name) for c in data.get("checks", []))
        for cid, entry in data["criteria"].items():
            entry = dict(entry, report=str(path.parent.relative_to(run_dir)))
            if cid in merged and merged[cid]["result"] == "failed":
                continue
            merged[cid] = entry
    return merged, checks


def waivers(run_dir: Path) -> list[dict]:
    """Every waiver of the description as the run's suites judged it ("waivers" of each phase's results), merged
    over the phases: its findings from all of them; red (expired, matched nothing) when any phase said so."""
    merged: dict[tuple[str, str], dict] = {}
    for path in sorted(run_dir.glob(rundir.CRITERIA_GLOB)):
        for entry in json.loads(path.read_text()).get("waivers", []):
            key = (entry["criterion"], entry["waiver"])
            found = merged.setdefault(key, dict(entry, matched=[]))
            found["matched"] += [dict(hit, phase=path.parent.name) for hit in entry.get("matched", [])]
            rank = ("not judged", "matched", "unused", "expired")
            if rank.index(entry["status"]) > rank.index(found["status"]):
                found.update(status=entry["status"], red=entry["red"], message=entry["message"])
    for found in merged.values():  # a phase that judged it "not judged" never hides another's matches
        if found["status"] == "not judged" and found["matched"]:
            found.update(status="matched", message=f"waiver {found['waiver']}: waived {len(found['matched'])} "
                                                    "finding(s)")
    return list(merged.values())


def waived_findings(run_dir: Path) -> list[dict]:
    """The run's waived findings, one per finding, with the waiver's reason, who decided and its expiry."""
    return [{"criterion": w["criterion"], "finding": hit["finding"], "test": hit["test"], "phase": hit["phase"],
             "waiver": w["waiver"], "reason": w["reason"], "decided_by": w["decided_by"], "expires": w["expires"]}
            for w in waivers(run_dir) for hit in w["matched"]]


def _waivers_section(run_dir: Path) -> list[str]:
    """Each waiver (criterion, finding, reason, who decided, expiry) with the findings it waived in this run; one
    that expired or matched nothing in red. None when the description has no waivers."""
    found = waivers(run_dir)
    if not found:
        return []
    parts = ["<h2 id='waivers'>Waivers</h2><p class='muted'>Known faults gone live with knowingly ([[waivers]] of "
             "the description): each finding a waiver matched is listed, never hidden. A waiver that expired or "
             "matched nothing is red.</p><table><tr><th>Criterion</th><th>Finding waived</th><th>Reason</th>"
             "<th>Decided by</th><th>Expires</th><th>In this run</th></tr>"]
    for w in found:
        if w["matched"]:
            shown = "<td class='waived'>" + "<br>".join(
                f"waived: <code>{escape(h['finding'])}</code> ({escape(h['phase'])}, "
                f"<code>{escape(h['test'].split('::', 1)[-1])}</code>)" for h in w["matched"]) + "</td>"
        elif w["status"] == "expired":
            shown = f"<td class='bad'>EXPIRED on {escape(w['expires'])}</td>"
        elif w["status"] == "unused":
            shown = "<td class='bad'>matched nothing</td>"
        else:
            shown = f"<td class='muted'>{escape(w['message'].split(': ', 1)[-1])}</td>"
        if w["matched"] and w["status"] == "expired":
            shown = shown[:-5] + f"<br><span class='bad'>EXPIRED on {escape(w['expires'])}</span></td>"
        waived = (f"<code>{escape(w['finding'])}</code>" if w.get("finding") else
                  f"any line matching <code>{escape(w.get('finding_regex') or w['waiver'])}</code>")
        parts.append(f"<tr><td>{escape(w['criterion'])}</td><td>{waived}</td><td>{escape(w['reason'])}</td><td>{escape(w['decided_by'])}</td>"
                     f"<td>{escape(w['expires'])}</td>{shown}</tr>")
    return [*parts, "</table>"]


def artifacts(run_dir: Path, exclude: Path | None = None) -> list[tuple[str, int, str | None]]:
    """Every file of the run with its sha256; the sandbox's working folder (its app still writing its log) has
    none, so that every sha256 listed still matches once the run is over."""
    found = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        if path == exclude or path.name.endswith(".tmp"):
            continue
        relative = path.relative_to(run_dir)
        digest = None if relative.parts[0] in KEPT_BACK_FOLDERS else sha256_file(path)
        found.append((str(path.relative_to(run_dir)), path.stat().st_size, digest))
    return found


def _backup_section(state: RunState) -> list[str]:
    """The backup by name, digests and location only (never a link to it); a plaintext backup as a warning."""
    if not state.backup:
        return []
    b = state.backup
    parts = ["<h2 id='backup'>Backup</h2>"]
    if b.get("encryption", "none") == "none":
        parts.append("<p class='verdict' style='background:#cf222e'>WARNING: the backup is NOT ENCRYPTED "
                     "([backup] encrypt = \"none\"). It holds PHI in clear: do not attach or copy it; delete it "
                     "as soon as it is no longer needed.</p>")
    encryption = (f"age (age-encryption.org/v1) to {len(b.get('recipients', []))} recipient(s); open with "
                  "<code>age -d -i IDENTITY FILE | pg_restore ...</code>" if b.get("encryption") == "age"
                  else "none")
    rows = [("File (local, not linked)", f"<code>{escape(Path(b.get('path', '')).name)}</code>"),
            ("Encryption", encryption),
            ("Recipients", "<br>".join(f"<code>{escape(r)}</code>" for r in b.get("recipients", [])) or "-"),
            ("Size of the file", f"{b.get('size', 0):,} bytes"),
            ("sha256 of the file", f"<code>{escape(str(b.get('sha256', '')))}</code>"),
            ("Size of the dump (plaintext stream)", f"{b.get('plaintext_size', 0):,} bytes"),
            ("sha256 of the dump (plaintext stream)", f"<code>{escape(str(b.get('plaintext_sha256', '-')))}</code>"),
            ("Stored off the box at", f"<code>{escape(b.get('location') or 'NOT STORED')}</code>"),
            ("Fetched back and verified", escape(b.get("remote_verified") or "no")),
            ("Unchanged since the snapshot (checked right before migrating)", escape(b.get("change_check", "-"))),
            ("Taken at", escape(str(b.get("taken_at", "")))),
            ("Server / pg_dump", escape(f"{b.get('server_version', '')} / {b.get('pg_dump_version', '')}")),
            ("pg_dump gzip level / checksum jobs", escape(f"{b.get('compress', '-')} / {b.get('jobs', '-')}"))]
    if "retention_days_local" in b:
        rows += [("Retention, local copy", escape(f"{b['retention_days_local']} days (until "
                                                  f"{b.get('keep_local_until') or '-'}), in the run folder's backup/")),
                 ("Retention, copy off the box", escape(str(b.get("retention_remote", "-"))))]
    parts.append("<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>")
    return parts


def _rollback_section(state: RunState) -> list[str]:
    """How the rollback went and what it kept or discarded: counts per table, and who decided, never values."""
    if not state.rollback_phases:
        return []
    method = {"restore": "the verified backup restored", "sql": "the rollback SQL, rows written since the "
              "migration carried back and verified by key"}.get(state.rollback_method or "", "-")
    since = state.writes_since or {}
    rows = [("Method", escape(method))]
    if state.writes_since is not None:
        shown = "<br>".join(escape(TableWrites(**t).line()) for t in since.get("tables", [])) or "none"
        rows += [("Written since the migration (counted before the rollback, with maintenance on)", shown),
                 ("Of them by others than the gate's login", f"{since.get('others', 0):,}"),
                 ("The gate's own (its PHI reads' audit rows, its probe rows)", f"{since.get('own', 0):,}")]
    else:
        rows.append(("Written since the migration", "not counted (the run has no mark from the migration)"))
    if state.deploy_tables:  # what the app's deploy created: kept (rows), dropped (empty), or the restore's
        tables = [DeployTable(**t) for t in state.deploy_tables]
        rows.append(("Tables the app's deploy created (counted before the rollback)", "<br>".join(
            escape(t.line(state.rollback_method or "sql")) for t in tables)))
        if state.deploy_steps:
            rows.append(("Before the rollback SQL, in this order (same transaction)",
                         "<br>".join(escape(step) for step in state.deploy_steps)))
    decision = state.rollback_decision
    if decision:
        rows.append(("Decision to discard rows", f"<span class='bad'>{escape(str(decision.get('discarded')))} changes "
                     f"discarded</span>, decided by <b>{escape(decision.get('by', '?'))}</b> at "
                     f"{escape(decision.get('at', '?'))}" + (f": {escape(decision['reason'])}"
                                                             if decision.get("reason") else "")))
    if state.rollback_held:
        rows.append(("Held", f"<span class='bad'>{escape(state.rollback_held)}</span>"))
    return ["<h2 id='rollback'>Rollback</h2><table>" + "".join(
        f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"]


def _forecast_section(state: RunState) -> list[str]:
    """The window forecast at the run's start against what it took, per phase and for the downtime; how it was
    forecast (from which run, scaled how), and a start that accepted a forecast over budget."""
    if not state.forecast:
        return []
    made = Forecast.from_json(state.forecast)
    parts = [f"<h2 id='forecast'>Forecast against actual</h2><p class='muted'>Forecast at the start: "
             f"{escape(made.method)}.</p>"]
    if made.accepted:
        parts.append(f"<p class='bad'>Started although the forecast broke a budget ({escape('; '.join(made.breaks()))})"
                     f": accepted (--accept-forecast) by {escape(str(made.accepted.get('by')))} at "
                     f"{escape(str(made.accepted.get('at')))}.</p>")
    rows = against_actual(state.forecast, state.phases, state.downtime_minutes)
    if not rows:
        return parts
    how = {p.name: p.by for p in made.phases}
    parts.append("<table><tr><th>Phase</th><th>Forecast</th><th>Actual</th><th>Actual / forecast</th><th>How "
                 "forecast</th></tr>")
    for row in rows:
        forecast, actual, unit = row["forecast"], row["actual"], row["unit"]
        ratio = row["actual_over_forecast"]
        parts.append(f"<tr><td>{escape(row['name'])}</td><td>{'-' if forecast is None else f'{forecast:.1f} {unit}'}"
                     f"</td><td>{'-' if actual is None else f'{actual:.1f} {unit}'}</td><td>"
                     f"{'-' if ratio is None else f'{ratio:.2f}'}</td><td>{escape(how.get(row['name'], ''))}</td></tr>")
    return [*parts, "</table>"]


def _phase_status(state: RunState, name: str) -> str:
    try:
        return state.phase(name).status
    except KeyError:
        return "pending"


def _line_result(state: RunState, line: ChecklistLine, criteria: dict[str, dict]) -> str:
    """failed when a criterion or phase behind the line failed, passed when all of them passed, else not run."""
    results = [criteria.get(cid, {}).get("result", "not run") for cid in line.criteria]
    results += [_phase_status(state, name) for name in line.phases]
    if any(r == "failed" for r in results):
        return "failed"
    if any(r == NOT_CHECKED for r in results):
        return NOT_CHECKED
    if results and all(r in ("passed", "waived", PARTLY_CHECKED, NOT_APPLICABLE) for r in results):
        if PARTLY_CHECKED in results:
            return PARTLY_CHECKED
        if "waived" in results:
            return "passed with waived findings"
        return "passed" if NOT_APPLICABLE not in results else "passed (part not applicable: see Not checked)"
    return "not run"


def _result_class(result: str) -> str:
    return {"passed": "ok", "not needed": "muted", "waived": "waived", NOT_APPLICABLE: "muted",
            "passed (part not applicable: see Not checked)": "ok", PARTLY_CHECKED: "waived",
            "passed with waived findings": "waived"}.get(result, "bad")


def not_checked(run_dir: Path) -> list[dict]:
    """The criteria the run's suites left unchecked ("not_checked" of each phase's results), with the phase, why
    their tests skipped and, where declared ([[not_applicable]]), the reason and who decided."""
    return [dict(entry, phase=path.parent.name) for path in sorted(run_dir.glob(rundir.CRITERIA_GLOB))
            for entry in json.loads(path.read_text()).get("not_checked", [])]


def _not_checked_section(run_dir: Path) -> list[str]:
    """Every criterion whose tests skipped, all or in part: never shown as passed. One the description declares
    not applicable carries its reason and who decided; one that is not declared is red."""
    found = not_checked(run_dir)
    if not found:
        return []
    parts = ["<h2 id='not-checked'>Not checked</h2><p class='muted'>Criteria whose tests skipped: a skipped check "
             "is never a pass. A criterion nothing checked is red unless the description says why it does not apply "
             "([[not_applicable]]).</p><table><tr><th>Criterion</th><th>Phase</th><th>Result</th><th>Why it "
             "skipped</th><th>Reason it does not apply</th><th>Decided by</th></tr>"]
    for entry in found:
        parts.append(f"<tr><td>{escape(entry['criterion'])}</td><td>{escape(entry['phase'])}</td>"
                     f"<td class='{_result_class(entry['result'])}'>{escape(entry['result'])}</td>"
                     f"<td>{'<br>'.join(escape(line) for line in entry['skipped'])}</td>"
                     f"<td>{escape(entry.get('reason', '-'))}</td><td>{escape(entry.get('decided_by', '-'))}</td></tr>")
    return [*parts, "</table>"]


def _checklist_tables(state: RunState, criteria: dict[str, dict]) -> list[str]:
    """The checklist's own success and failure lines, word for word, each with what proves it; then every
    criterion behind them with its tests. A rollback's criteria on a run that never rolled back: not needed."""
    parts = ["<h2 id='success'>Success criteria</h2><p class='muted'>The checklist's \"Migration is successful "
             "when\" lines, each with the criteria (tests below) and run phases behind it.</p><table><tr><th>The "
             "checklist</th><th>Proven by</th><th>Result</th></tr>"]
    for line in SUCCESS_LINES:
        result = _line_result(state, line, criteria)
        proof = ", ".join([*line.criteria, *(f"phase {p}" for p in line.phases)])
        parts.append(f"<tr><td>{escape(line.text)}</td><td>{escape(proof)}</td>"
                     f"<td class='{_result_class(result)}'>{result}</td></tr>")
    parts.append("</table><h2 id='failure'>Failure criteria</h2><p class='muted'>The checklist's \"Migration "
                 "fails if\" lines: each is met when a criterion or phase behind it failed.</p><table><tr><th>"
                 "Fails if</th><th>Judged by</th><th>Met?</th></tr>")
    for line in FAILURE_LINES:
        if line.text == DOWNTIME_LINE:
            met, judged = ("YES" if state.downtime_over_limit else "no"), "the timeline's downtime"
        elif line.phases == ("restore", "rollback") and state.status == "rollback-held":
            met, judged = "PENDING: the rollback is held for a decision", ", ".join(line.criteria)
        else:
            failed = [c for c in line.criteria if criteria.get(c, {}).get("result") == "failed"]
            failed += [f"phase {p}" for p in line.phases if _phase_status(state, p) == "failed"]
            met = "YES: " + ", ".join(failed) if failed else "no"
            judged = ", ".join([*line.criteria, *(f"phase {p}" for p in line.phases)])
        parts.append(f"<tr><td>{escape(line.text)}</td><td>{escape(judged)}</td>"
                     f"<td class='{_cls(met == 'no')}'>{escape(met)}</td></tr>")
    parts.append("</table><h2 id='criteria'>The checks behind them</h2><table><tr><th>Criterion</th>"
                 "<th>Result</th><th>Tests</th></tr>")
    rolled_back = bool(state.rollback_phases)
    for cid, criterion in CRITERIA.items():
        entry = criteria.get(cid)
        result = entry["result"] if entry else ("not run" if rolled_back or cid not in ROLLBACK_ONLY
                                                else "not needed")
        tests = "<br>".join(f"<code>{escape(t)}</code>" for t in (entry or {}).get("tests", []))
        shown = _result_class(result)
        parts.append(f"<tr><td><b>{cid}</b> {escape(criterion.text)}</td><td class='{shown}'>"
                     f"{escape(result)}</td><td>{tests}</td></tr>")
    parts.append("</table>")
    return parts


def _phi_section(checks: list[dict]) -> list[str]:
    """What the PHI checks counted, per phase and check (per table where the check is), each figure with its unit;
    a phase's total adds only PHI values, and phases are never added together (they count the same values)."""
    phi = [c for c in checks if any(w in c["check"] for w in PHI_WORDS) and "non-PHI" not in c["check"]]
    parts = ["<h2 id='phi'>PHI verification</h2><table><tr><th>Phase</th><th>Check</th><th>Checked</th>"
             "<th>Problems</th></tr>"]
    for phase in dict.fromkeys(c["phase"] for c in phi):
        rows = [c for c in phi if c["phase"] == phase]
        for check in rows:
            parts.append(f"<tr><td>{escape(phase)}</td><td>{escape(check['check'])}</td>"
                         f"<td>{check['checked']:,} {escape(check.get('unit', 'values'))}</td>"
                         f"<td class='{_cls(not check['problems'])}'>{check['problems']}"
                         + (f" <span class='waived'>(+{len(check['waived'])} waived)</span>" if check.get("waived")
                            else "") + "</td></tr>")
        values = [c for c in rows if c.get("unit", "values") == "values"]
        parts.append(f"<tr><th colspan='2'>{escape(phase)}: PHI values checked (each check counts the values it "
                     f"read)</th><th>{sum(c['checked'] for c in values):,} values</th>"
                     f"<th>{sum(c['problems'] for c in rows)}</th></tr>")
    return [*parts, "</table>"]


def _comparisons_section(checks: list[dict]) -> list[str]:
    """Every comparison of the legacy data with the new: what it read on each side and how many rows it matched
    by key, so a reviewer sees a check compared all of it (a shortfall is that check's red finding)."""
    rows = [c for c in checks if c.get("compared")]
    if not rows:
        return []
    parts = ["<h2 id='comparisons'>Comparisons: legacy against new</h2><table><tr><th>Phase</th><th>Check</th>"
             "<th>Legacy read</th><th>New read</th><th>Matched</th><th>Problems</th></tr>"]
    for check in rows:
        n = check["compared"]
        unit = escape(n.get("unit", "rows"))
        nothing = n["legacy"] + n["new"] == 0
        shown = ("<td class='muted'>nothing compared (both sides empty)</td>" if nothing else
                 f"<td class='{_cls(n['matched'] >= n['legacy'])}'>{n['matched']:,} of {n['legacy']:,}</td>")
        parts.append(f"<tr><td>{escape(check['phase'])}</td><td>{escape(check['check'])}</td>"
                     f"<td>{n['legacy']:,} {unit}</td><td>{n['new']:,} {unit}</td>{shown}"
                     f"<td class='{_cls(not check['problems'])}'>{check['problems']}</td></tr>")
    return [*parts, "</table>"]


def _record(state: RunState, environment: dict[str, str]) -> str:
    """Who ran it, which gate, which migration and which app: at the top, where an auditor looks first."""
    rows = [("Run by", environment.get("Run by", "-")), ("Gate version", environment.get("Gate version", "-")),
            ("Migration sha256", state.migration_sha256),
            ("Previous release (served the legacy schema before the window)",
             state.legacy_app_version or "not reported"),
            ("App version (after the last deploy)", state.app_version or "not reported")]
    return "<table class='record'>" + "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(v)}</code></td></tr>"
                                              for k, v in rows) + "</table>"


def _people_section(run_dir: Path, people: tuple[PeopleItem, ...]) -> list[str]:
    """The checklist's human items: each with who attested it, when and the note; a required one missing in red;
    a start forced without some; the decision maker; how the status updates went."""
    entries = attest.read(run_dir / attest.RUN_FILE)
    sent = notify.sent(run_dir)
    if not people and not entries and not sent:
        return []
    done = attest.latest(entries)
    items = list(people) + [PeopleItem(i, "(not in the configuration)", False) for i in done
                            if i not in {p.id for p in people}]
    parts = ["<h2 id='people'>People: the checklist's human items</h2>"]
    for forced in attest.overrides(run_dir):
        parts.append(f"<p class='bad'>Started WITHOUT the required items {escape(', '.join(forced.missing))}: "
                     f"FORCED (--force) by {escape(forced.by)} at {escape(forced.at)}.</p>")
    parts.append("<table><tr><th>Item</th><th>Required before the cut-over</th><th>Attested by</th>"
                 "<th>When (UTC)</th><th>Note</th></tr>")
    for item in items:
        entry = done.get(item.id)
        required = "yes" if item.required_before_cutover else "no (after)"
        if entry is None:
            shown = ("<td class='bad' colspan='3'>MISSING</td>" if item.required_before_cutover
                     else "<td class='muted' colspan='3'>not attested</td>")
        else:
            who = escape(entry.by) + (f" (names <b>{escape(entry.name)}</b>)" if entry.name not in ("", entry.by)
                                      else "")
            shown = f"<td class='ok'>{who}</td><td>{escape(entry.at)}</td><td>{escape(entry.note)}</td>"
        parts.append(f"<tr><td><b>{escape(item.id)}</b> {escape(item.text)}</td><td>{required}</td>{shown}</tr>")
    parts.append("</table>")
    maker = next((done[i.id] for i in people if i.decision_maker and i.id in done), None)
    if any(i.decision_maker for i in people):
        parts.append(f"<p><b>Rollback decision maker:</b> {escape(maker.name or maker.by)}</p>" if maker else
                     "<p class='bad'>Rollback decision maker: NOT RECORDED</p>")
    failed = [n for n in sent if not n.get("ok")]
    parts.append(f"<p class='muted'>Status updates: {len(sent) - len(failed)} sent through the notify hook"
                 + (f", <span class='bad'>{len(failed)} failed or timed out</span>" if failed else "")
                 + (" (notifications.jsonl)." if sent else " (none: no notify hook configured).") + "</p>")
    return parts


def _dress_banner(dress: dict) -> str:
    """A dress rehearsal's mark: which copy was cut over, its data's time, and what it copied."""
    return ("<p class='verdict dress' style='background:#6639ba'>DRESS REHEARSAL on a copy: "
            f"{escape(str(dress.get('copy', '?')))}; data as of {escape(str(dress.get('as_of', '?')))} UTC; copy of "
            f"{escape(str(dress.get('source', '?')))}. The target itself was not migrated.</p>")


def _rehearsal_copy_section(checks: list[dict]) -> list[str]:
    """Which copy PRE-08 rehearsed on and how old its data was (its notes), where a reviewer of the sign-off
    reads the pre-checks."""
    notes = [n for c in checks if c["check"].startswith("migration and rollback rehearsed")
             for n in c.get("notes", [])]
    if not notes:
        return []
    return ["<h2 id='rehearsal-copy'>Rehearsal copy (PRE-08)</h2><ul>"
            + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"]


def render(state: RunState, run_dir: Path, environment: dict[str, str], downtime_limit: float = 180.0,
           sandbox: bool = False, people: tuple[PeopleItem, ...] = ()) -> str:
    """The sign-off page; a sandbox run's (the rehearsal) opens with the banner and never reads as live."""
    label, colour, sentence = VERDICTS.get(state.status, VERDICTS["running"])
    if state.status == "forced":  # the verdict names what it went past, as the terminal and the notify line do
        label = forced_label(state)
    if sandbox:
        sentence = SANDBOX_SENTENCES.get(state.status, sentence)
    waived = len(waived_findings(run_dir))
    if waived:  # never a bare PASSED: the findings gone live with are counted in the verdict itself
        label += f" WITH {waived} WAIVED FINDING{'S' if waived > 1 else ''}"
        sentence += f" {waived} known finding(s) were waived by a recorded decision: see Waivers."
    criteria, checks = _criteria(run_dir)
    dress = state.dress_rehearsal
    title = f"{SANDBOX_BANNER} - rehearsal sign-off" if sandbox else "Migration sign-off"
    if dress:
        title = f"DRESS REHEARSAL on a copy - {title}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}: {escape(label)}"
             f"</title><style>{CSS}</style></head><body>",
             f"<p class='verdict sandbox' style='background:#9a6700'>{REHEARSAL}. {escape(SANDBOX_BANNER)}</p>"
             if sandbox else "",
             "<h1>HIPAA schema migration rehearsal (sandbox): sign-off</h1>" if sandbox else
             "<h1>HIPAA schema migration: sign-off</h1>",
             f"<p class='muted'>Run {escape(Path(state.run_dir).name)} against {escape(state.target)}; started "
             f"{escape(state.started)} UTC, finished {escape(state.finished or '-')} UTC.</p>",
             _dress_banner(dress) if dress else "",
             f"<p class='verdict' style='background:{colour}'>Verdict: {escape(label)}</p>",
             f"<p>{escape(sentence)}</p>", _record(state, environment)]
    if state.failure:
        parts.append(f"<p><b>What failed:</b> {escape(state.failure)}</p>")
    if state.rollback_verified is not None:
        parts.append(f"<p><b>Rollback verified:</b> <span class='{_cls(state.rollback_verified)}'>"
                     f"{'yes' if state.rollback_verified else 'NO'}</span></p>")
    if state.forced:
        parts.append("<p class='bad'>The migration was FORCED past a gate that was not green (--force): "
                     f"{escape(', '.join(state.forced_past) or 'not named')}.</p>")
    if attest.overrides(run_dir):
        parts.append("<p class='bad'>The cut-over was FORCED to start without required checklist items (--force): "
                     "see People.</p>")

    parts.append("<h2 id='timeline'>Timeline</h2><table><tr><th>Phase</th><th>Status</th><th>Started (UTC)</th>"
                 "<th>Duration</th><th>Detail</th><th>Report</th></tr>")
    for record in state.phases + state.rollback_phases:
        report = (f"<a href='{escape(record.report)}'>{escape(record.report)}</a>" if record.report else "")
        seconds = f"{record.seconds:.1f} s" if record.seconds is not None else "-"
        status_class = {"passed": "ok", "failed": "bad"}.get(record.status, "muted")
        parts.append(f"<tr><td>{escape(record.name)}</td><td class='{status_class}'>"
                     f"{escape(record.status)}</td><td>{escape(record.started or '-')}</td><td>{seconds}</td>"
                     f"<td>{escape(record.detail or '')}</td><td>{report}</td></tr>")
    parts.append("</table><table><tr><th>Checklist timebox</th><th>Used</th><th>Budget</th><th></th></tr>")
    for name, used, budget, over in budget_report(state):
        parts.append(f"<tr><td>{escape(name)}</td><td>{used:.2f} min</td><td>{budget or '-'} min</td>"
                     f"<td class='{_cls(not over)}'>{'OVER BUDGET' if over else 'within'}</td></tr>")
    downtime = state.downtime_minutes
    parts.append(f"<tr><td><b>Downtime</b> (maintenance on to off)</td><td>"
                 f"{f'{downtime:.2f} min' if downtime is not None else '-'}</td><td>limit {downtime_limit:.0f} min</td>"
                 f"<td class='{_cls(not state.downtime_over_limit)}'>"
                 f"{'OVER THE LIMIT' if state.downtime_over_limit else 'within'}</td></tr></table>")

    parts.extend(_forecast_section(state))
    parts.extend(_checklist_tables(state, criteria))
    parts.extend(_waivers_section(run_dir))
    parts.extend(_not_checked_section(run_dir))
    if state.counts:
        parts.append("<h2 id='counts'>Row counts: legacy (at backup) vs new</h2><table><tr><th>Legacy table</th>"
                     "<th>Rows</th><th>New table</th><th>Rows</th><th></th></tr>")
        for row in state.counts:
            same = row["legacy_rows"] == row["new_rows"]
            new_rows = "-" if row["new_rows"] is None else f"{row['new_rows']:,}"
            parts.append(f"<tr><td>{escape(row['legacy'])}</td><td>{row['legacy_rows']:,}</td><td>"
                         f"{escape(row['new'])}</td><td>{new_rows}</td>"
                         f"<td class='{_cls(same)}'>{'equal' if same else 'DIFFERENT'}</td></tr>")
        parts.append("</table>")

    parts.extend(_rehearsal_copy_section(checks))
    parts.extend(_phi_section(checks))
    parts.extend(_comparisons_section(checks))

    parts.extend(performance_section(run_dir))
    parts.extend(_people_section(run_dir, people))
    parts.extend(_backup_section(state))
    parts.extend(_rollback_section(state))
    parts.extend(_watch_section(run_dir))

    parts.append("<h2 id='environment'>Environment</h2><table>" + "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in environment.items()) +
        f"<tr><th>Migration file</th><td><code>{escape(state.migration_file)}</code></td></tr>"
        f"<tr><th>Migration sha256</th><td><code>{escape(state.migration_sha256)}</code></td></tr></table>")

    parts.append("<h2 id='artifacts'>Artifacts</h2><p class='muted'>sha256 of every file of this run, taken when "
                 "this report was written: any later edit shows.</p>"
                 "<table><tr><th>File</th><th>Bytes</th><th>sha256</th></tr>")
    for name, size, digest in artifacts(run_dir, exclude=run_dir / rundir.SIGNOFF):
        why = kept_back(Path(name))
        if is_plaintext_dump(run_dir / name):
            shown = f"{escape(name)} (PHI in clear: not linked)"
        elif why:  # not in the bundle (scripts/bundle): a link to it would not work where the bundle is read
            shown = f"{escape(name)} <span class='muted'>(not in the bundle: {escape(why)})</span>"
        else:
            shown = f"<a href='{escape(name)}'>{escape(name)}</a>"
        hashed = f"<code>{digest}</code>" if digest else "<span class='muted'>live file, not hashed</span>"
        parts.append(f"<tr><td>{shown}</td><td>{size:,}</td><td>{hashed}</td></tr>")
    parts.append("</table>")
    if dress and not sandbox:  # the target itself was never touched: nothing to approve
        parts.append("<h2 id='approvals'>Approvals</h2><p>None: a dress rehearsal on a copy migrated the copy, not "
                     "your database. Approvals belong on the sign-off of the cut-over against it.</p>")
    elif sandbox:  # nothing real was migrated: there is nothing to approve
        parts.append("<h2 id='approvals'>Approvals</h2><p>None: a rehearsal on synthetic data is not a sign-off of "
                     "your database. Approvals belong on the sign-off of the cut-over against it.</p>")
    else:
        roles = ("Release manager", "Database administrator", "Compliance / privacy officer")
        parts.append("<h2 id='approvals'>Approvals</h2><table class='sign'><tr><th>Role</th><th>Name</th>"
                     "<th>Signature</th><th>Date</th></tr>"
                     + "".join(f"<tr><td>{r}</td><td></td><td></td><td></td></tr>" for r in roles) + "</table>")
    parts.append(f"<p class='muted'>Generated {datetime.now(UTC).isoformat(timespec='seconds')} by "
                 "hipaa-migration-gate. Contains no PHI: tables, counts, timings and digests only.</p></body></html>")
    return "".join(parts)


def write(state: RunState, run_dir: Path, environment: dict[str, str], downtime_limit: float = 180.0,
          sandbox: bool = False, people: tuple[PeopleItem, ...] = ()) -> Path:
    path = run_dir / rundir.SIGNOFF
    path.write_text(render(state, run_dir, environment, downtime_limit, sandbox, people), encoding="utf-8")
    return path


def rewrite(run_dir: Path, gate: GateConfig) -> Path:
    """The sign-off again from the run's record (after a watch round: it is the migration's complete record)."""
    state = RunState.load(run_dir)
    return write(state, run_dir, state.environment, gate.downtime_minutes, state.sandbox, gate.people)


def _watch_section(run_dir: Path) -> list[str]:
    """The 48 hours after go-live as far as the watch has come: each round's verdict, what failed, criteria met;
    the final verdict once every round of the schedule ran. The rounds' details are in watch/watch.html."""
    try:
        watch = WatchState.load(run_dir / rundir.WATCH)
    except ConfigError as exc:
        return [f"<h2 id='watch'>Watch after go-live</h2><p class='bad'>{escape(str(exc))}</p>"]
    if watch is None:
        return []
    done, total = len(watch.rounds), watch.total
    worst = {"green": "green", "red": "RED rounds", "criterion": "a ROLLBACK CRITERION was met"}[watch.worst()]
    verdict = (f"Final verdict after all {total} rounds: {worst}" if done >= total else
               f"In progress: {done} of {total} rounds so far, {worst}")
    parts = ["<h2 id='watch'>Watch after go-live</h2>",
             f"<p class='{_cls(watch.worst() == 'green')}'>{escape(verdict)}</p>",
             "<p class='muted'>Every round: <a href='watch/watch.html'>watch/watch.html</a> (trend charts, each "
             "check) and watch/round-NN.xml.</p><table><tr><th>Round</th><th>Due (UTC)</th><th>Verdict</th>"
             "<th>Red checks</th><th>Rollback criteria met</th></tr>"]
    for record in watch.rounds:
        red = ", ".join(c.name for c in record.checks if not c.ok)
        shown = _cls(record.verdict == "green")
        parts.append(f"<tr><td>{record.number}</td><td>{escape(record.due)}</td><td class='{shown}'>"
                     f"{escape(record.verdict)}</td><td>{escape(red)}</td>"
                     f"<td>{escape('; '.join(record.criteria))}</td></tr>")
    return [*parts, "</table>"]
