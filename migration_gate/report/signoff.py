"""The sign-off report: one self-contained HTML file a compliance officer can read, attach and sign.

Built only from the run's state and the phase reports' criteria files: names, counts, timings and digests,
never data values. Every artifact of the run is listed with its sha256, so any later edit shows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from markupsafe import Markup

from migration_gate.backup.reading import is_plaintext_dump
from migration_gate.backup.record import sha256_file
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
from migration_gate.core.status import Outcome, Phase
from migration_gate.db.deploytables import DeployTable
from migration_gate.db.writes import TableWrites
from migration_gate.report.bundle import KEPT_BACK_FOLDERS, kept_back
from migration_gate.report.performance import section as performance_section
from migration_gate.report.render import render as render_template
from migration_gate.run import attest, emergency, notify
from migration_gate.run.forecast import Forecast, against_actual
from migration_gate.run.runstate import RunState, budget_report, forced_label
from migration_gate.run.watchstate import (
    NEVER_STARTED,
    NOT_WATCHED,
    WatchState,
    WatchStatus,
    watch_status,
    went_live,
)

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
def _criteria(run_dir: Path) -> tuple[dict[str, dict], list[dict]]:
    merged: dict[str, dict] = {}
    checks: list[dict] = []
    for path in sorted(run_dir.glob(rundir.CRITERIA_GLOB)):
        data = json.loads(path.read_text())
        checks.extend(dict(c, phase=path.parent.name) for c in data.get("checks", []))
        for cid, entry in data["criteria"].items():
            entry = dict(entry, report=str(path.parent.relative_to(run_dir)))
            if cid in merged and merged[cid]["result"] == Outcome.FAILED:
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


def _waivers_section(run_dir: Path) -> Markup:
    """Each waiver (criterion, finding, reason, who decided, expiry) with the findings it waived in this run; one
    that expired or matched nothing in red. Nothing when the description has no waivers."""
    found = waivers(run_dir)
    return render_template("signoff/waivers.html.j2", waivers=found) if found else Markup()


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


def _backup_section(state: RunState) -> Markup:
    """The backup by name, digests and location only (never a link to it); a plaintext backup as a warning."""
    if not state.backup:
        return Markup()
    b = state.backup
    return render_template("signoff/backup.html.j2", b=b, plaintext=b.get("encryption", "none") == "none",
                           age=b.get("encryption") == "age", recipients=b.get("recipients", []),
                           file=Path(b.get("path", "")).name)


def _rollback_section(state: RunState) -> Markup:
    """How the rollback went and what it kept or discarded: counts per table, and who decided, never values."""
    if not state.rollback_phases:
        return Markup()
    method = {"restore": "the verified backup restored", "sql": "the rollback SQL, rows written since the "
              "migration carried back and verified by key"}.get(state.rollback_method or "", "-")
    since = state.writes_since or {}
    writes = (None if state.writes_since is None else
              [TableWrites(**t).line() for t in since.get("tables", [])])
    tables = [DeployTable(**t).line(state.rollback_method or "sql") for t in state.deploy_tables or []]
    return render_template("signoff/rollback.html.j2", method=method, writes=writes, others=since.get("others", 0),
                           own=since.get("own", 0), deploy_tables=tables, deploy_steps=state.deploy_steps or [],
                           decision=state.rollback_decision or {}, held=state.rollback_held)


def _diagnosis_section(state: RunState) -> Markup:
    """What the deploy phase found when the new app did not turn healthy, each attempt with its decision."""
    if not state.deploy_diagnosis:
        return Markup()
    return render_template("signoff/diagnosis.html.j2", attempts=state.deploy_diagnosis)


def _emergency_section(run_dir: Path) -> Markup:
    """scripts/emergency's maintenance switches in this run: when, which, who, why, and a hook that failed."""
    switches = emergency.recorded(run_dir)
    return render_template("signoff/emergency.html.j2", switches=switches) if switches else Markup()


def _forecast_section(state: RunState) -> Markup:
    """The window forecast at the run's start against what it took, per phase and for the downtime; how it was
    forecast (from which run, scaled how), and a start that accepted a forecast over budget."""
    if not state.forecast:
        return Markup()
    made = Forecast.from_json(state.forecast)
    return render_template("signoff/forecast.html.j2", method=made.method, accepted=made.accepted,
                           breaks="; ".join(made.breaks()) if made.accepted else "",
                           rows=against_actual(state.forecast, state.phases, state.downtime_minutes),
                           how={p.name: p.by for p in made.phases})


def _phase_status(state: RunState, name: str) -> str:
    try:
        return state.phase(name).status
    except KeyError:
        return "pending"


def _line_result(state: RunState, line: ChecklistLine, criteria: dict[str, dict]) -> str:
    """failed when a criterion or phase behind the line failed, passed when all of them passed, else not run."""
    results = [criteria.get(cid, {}).get("result", "not run") for cid in line.criteria]
    results += [_phase_status(state, name) for name in line.phases]
    if any(r == Outcome.FAILED for r in results):
        return Outcome.FAILED
    if any(r == NOT_CHECKED for r in results):
        return NOT_CHECKED
    if results and all(r in (Outcome.PASSED, Outcome.WAIVED, PARTLY_CHECKED, NOT_APPLICABLE) for r in results):
        if PARTLY_CHECKED in results:
            return PARTLY_CHECKED
        if "waived" in results:
            return "passed with waived findings"
        return Outcome.PASSED if NOT_APPLICABLE not in results else "passed (part not applicable: see Not checked)"
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


def _not_checked_section(run_dir: Path) -> Markup:
    """Every criterion whose tests skipped, all or in part: never shown as passed. One the description declares
    not applicable carries its reason and who decided; one that is not declared is red."""
    found = [dict(entry, shown=_result_class(entry["result"])) for entry in not_checked(run_dir)]
    return render_template("signoff/not_checked.html.j2", found=found) if found else Markup()


def _checklist_tables(state: RunState, criteria: dict[str, dict]) -> Markup:
    """The checklist's own success and failure lines, word for word, each with what proves it; then every
    criterion behind them with its tests. A rollback's criteria on a run that never rolled back: not needed."""
    success = []
    for line in SUCCESS_LINES:
        result = _line_result(state, line, criteria)
        success.append({"text": line.text, "proof": ", ".join([*line.criteria, *(f"phase {p}" for p in line.phases)]),
                        "result": result, "shown": _result_class(result)})
    failure = []
    for line in FAILURE_LINES:
        if line.text == DOWNTIME_LINE:
            met, judged = ("YES" if state.downtime_over_limit else "no"), "the timeline's downtime"
        elif line.phases == ("restore", "rollback") and state.status == "rollback-held":
            met, judged = "PENDING: the rollback is held for a decision", ", ".join(line.criteria)
        else:
            failed = [c for c in line.criteria if criteria.get(c, {}).get("result") == Outcome.FAILED]
            failed += [f"phase {p}" for p in line.phases if _phase_status(state, p) == Phase.FAILED]
            met = "YES: " + ", ".join(failed) if failed else "no"
            judged = ", ".join([*line.criteria, *(f"phase {p}" for p in line.phases)])
        failure.append({"text": line.text, "judged": judged, "met": met})
    rolled_back = bool(state.rollback_phases)
    rows = []
    for cid, criterion in CRITERIA.items():
        entry = criteria.get(cid)
        result = entry["result"] if entry else ("not run" if rolled_back or cid not in ROLLBACK_ONLY
                                                else "not needed")
        rows.append({"id": cid, "text": criterion.text, "result": result, "shown": _result_class(result),
                     "tests": (entry or {}).get("tests", [])})
    return render_template("signoff/checklist.html.j2", success=success, failure=failure, criteria=rows)


def _phi_section(checks: list[dict]) -> Markup:
    """What the PHI checks counted, per phase and check (per table where the check is), each figure with its unit;
    a phase's total adds only PHI values, and phases are never added together (they count the same values)."""
    phi = [c for c in checks if any(w in c["check"] for w in PHI_WORDS) and "non-PHI" not in c["check"]]
    phases = []
    for phase in dict.fromkeys(c["phase"] for c in phi):
        rows = [c for c in phi if c["phase"] == phase]
        phases.append({"name": phase, "checks": rows, "problems": sum(c["problems"] for c in rows),
                       "values_read": sum(c["checked"] for c in rows if c.get("unit", "values") == "values")})
    return render_template("signoff/phi.html.j2", phases=phases)


def _comparisons_section(checks: list[dict]) -> Markup:
    """Every comparison of the legacy data with the new: what it read on each side and how many rows it matched
    by key, so a reviewer sees a check compared all of it (a shortfall is that check's red finding)."""
    rows = [c for c in checks if c.get("compared")]
    return render_template("signoff/comparisons.html.j2", rows=rows) if rows else Markup()


def _record(state: RunState, environment: dict[str, str]) -> list[tuple[str, str]]:
    """Who ran it, which gate, which migration and which app: at the top, where an auditor looks first."""
    return [("Run by", environment.get("Run by", "-")), ("Gate version", environment.get("Gate version", "-")),
            ("Migration sha256", state.migration_sha256),
            ("Previous release (served the legacy schema before the window)",
             state.legacy_app_version or "not reported"),
            ("App version (after the last deploy)", state.app_version or "not reported")]


def _people_section(run_dir: Path, people: tuple[PeopleItem, ...]) -> Markup:
    """The checklist's human items: each with who attested it, when and the note; a required one missing in red;
    a start forced without some; the decision maker; how the status updates went."""
    entries = attest.read(run_dir / attest.RUN_FILE)
    sent = notify.sent(run_dir)
    if not people and not entries and not sent:
        return Markup()
    done = attest.latest(entries)
    items = list(people) + [PeopleItem(i, "(not in the configuration)", False) for i in done
                            if i not in {p.id for p in people}]
    overrides = [{"missing": ", ".join(f.missing), "by": f.by, "at": f.at} for f in attest.overrides(run_dir)]
    return render_template("signoff/people.html.j2", overrides=overrides,
                           items=[(item, done.get(item.id)) for item in items],
                           has_decision_maker=any(i.decision_maker for i in people),
                           maker=next((done[i.id] for i in people if i.decision_maker and i.id in done), None),
                           sent=len(sent), failed=sum(not n.get("ok") for n in sent))


def _rehearsal_copy_section(checks: list[dict]) -> Markup:
    """Which copy PRE-08 rehearsed on and how old its data was (its notes), where a reviewer of the sign-off
    reads the pre-checks."""
    notes = [n for c in checks if c["check"].startswith("migration and rollback rehearsed")
             for n in c.get("notes", [])]
    return render_template("signoff/rehearsal_copy.html.j2", notes=notes) if notes else Markup()


def _artifact_rows(run_dir: Path) -> list[dict]:
    """The Artifacts table: each file with its size and sha256; a plaintext dump never linked, a file the bundle
    keeps back named with why (a link to it would not work where the bundle is read)."""
    return [{"name": name, "size": size, "digest": digest, "plaintext": is_plaintext_dump(run_dir / name),
             "kept_back": kept_back(Path(name))}
            for name, size, digest in artifacts(run_dir, exclude=run_dir / rundir.SIGNOFF)]


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
    sections = {
        "forecast": _forecast_section(state), "checklist": _checklist_tables(state, criteria),
        "waivers": _waivers_section(run_dir), "not_checked": _not_checked_section(run_dir),
        "rehearsal_copy": _rehearsal_copy_section(checks), "phi": _phi_section(checks),
        "comparisons": _comparisons_section(checks), "performance": performance_section(run_dir),
        "people": _people_section(run_dir, people), "backup": _backup_section(state),
        "rollback": _rollback_section(state), "watch": _watch_section(run_dir, went_live(state), sandbox),
        "diagnosis": _diagnosis_section(state), "emergency": _emergency_section(run_dir)}
    return str(render_template(
        "signoff.html.j2", state=state, sandbox=sandbox, dress=dress, title=title, label=label, colour=colour,
        sentence=sentence, rehearsal=REHEARSAL, banner=SANDBOX_BANNER, run=Path(state.run_dir).name,
        record=_record(state, environment), forced_past=", ".join(state.forced_past),
        forced_start=bool(attest.overrides(run_dir)), phases=state.phases + state.rollback_phases,
        budgets=budget_report(state), downtime_limit=downtime_limit, sections=sections, environment=environment,
        artifacts=_artifact_rows(run_dir), generated=datetime.now(UTC).isoformat(timespec="seconds")))


def write(state: RunState, run_dir: Path, environment: dict[str, str], downtime_limit: float = 180.0,
          sandbox: bool = False, people: tuple[PeopleItem, ...] = ()) -> Path:
    path = run_dir / rundir.SIGNOFF
    path.write_text(render(state, run_dir, environment, downtime_limit, sandbox, people), encoding="utf-8")
    return path


def rewrite(run_dir: Path, gate: GateConfig) -> Path:
    """The sign-off again from the run's record (after a watch round: it is the migration's complete record)."""
    state = RunState.load(run_dir)
    return write(state, run_dir, state.environment, gate.downtime_minutes, state.sandbox, gate.people)


def _watch_section(run_dir: Path, live: bool = True, sandbox: bool = False) -> Markup:
    """The 48 hours after go-live as far as the watch has come: whether it ran, is running or never started (never
    nothing), each round's verdict, what failed, criteria met, who acknowledged a red round and who was told next;
    the final verdict once every round of the schedule ran. The rounds' details are in watch/watch.html."""
    try:
        status = watch_status(run_dir, live)
        watch = WatchState.load(run_dir / rundir.WATCH)
        if sandbox and status.status == NEVER_STARTED:  # a rehearsal's watch is scripts/rehearse --watch, compressed
            status = WatchStatus(NOT_WATCHED, "no watch in this rehearsal (scripts/rehearse --watch runs it, "
                                              "compressed)", status.command)
    except ConfigError as exc:
        return render_template("signoff/watch.html.j2", error=str(exc), status=None)
    if watch is None:
        return render_template("signoff/watch.html.j2", error=None, status=status, rounds=None)
    done, total = len(watch.rounds), watch.total
    worst = {"green": "green", "red": "RED rounds", "criterion": "a ROLLBACK CRITERION was met"}[watch.worst()]
    verdict = (f"Final verdict after all {total} rounds: {worst}" if done >= total else
               f"In progress: {done} of {total} rounds so far, {worst}")
    rounds = [{"number": r.number, "due": r.due, "verdict": r.verdict, "criteria": "; ".join(r.criteria),
               "red": ", ".join(c.name for c in r.checks if not c.ok),
               "acknowledged": f"{r.acknowledged_by} at {r.acknowledged_at}" if r.acknowledged_by else ""}
              for r in watch.rounds]
    escalations = [f"round {e.round}: step {e.step}, {e.name}, at {e.at}: {e.outcome}" for e in watch.escalations]
    return render_template("signoff/watch.html.j2", error=None, status=status, green=watch.worst() == "green",
                           verdict=verdict, rounds=rounds, escalations=escalations)
