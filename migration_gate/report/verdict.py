"""How a run ends for the person who started it: the exit code of each verdict, the text that explains them
(every command's --help), and the verdict printed with the sign-off report written. Below both cli and
rehearse, which share it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from migration_gate.config import SANDBOX_BANNER, GateConfig
from migration_gate.core.criteria import unchecked_line
from migration_gate.core.status import exit_of
from migration_gate.report import signoff
from migration_gate.run.forecast import against_actual
from migration_gate.run.runstate import RunState, forced_verdict


def _summary(state: RunState, report: Path | None) -> dict:
    return {"verdict": state.status, "waived": signoff.waived_findings(Path(state.run_dir)),
            "waivers": [{k: w[k] for k in ("criterion", "waiver", "status", "red", "message", "reason", "decided_by",
                                           "expires")} for w in signoff.waivers(Path(state.run_dir))],
            "exit_code": exit_of(state.status), "run_dir": state.run_dir,
            "signoff": str(report) if report else None, "failure": state.failure,
            "rollback_verified": state.rollback_verified, "downtime_minutes": state.downtime_minutes,
            "phases": [{"name": p.name, "status": p.status, "seconds": p.seconds, "over_budget": p.over_budget}
                       for p in state.phases + state.rollback_phases],
            "counts": state.counts, "forced": state.forced,
            "not_checked": signoff.not_checked(Path(state.run_dir)),
            "forced_past": state.forced_past,
            "forecast": {"method": state.forecast.get("method"), "breaks": state.forecast.get("breaks", []),
                         "accepted": state.forecast.get("accepted"),
                         "against_actual": against_actual(state.forecast, state.phases, state.downtime_minutes)}
            if state.forecast else None} | (
                {"dress_rehearsal": state.dress_rehearsal} if state.dress_rehearsal else {})


def finish_run(args: argparse.Namespace, gate: GateConfig, state: RunState, environment: dict[str, str],
               sandbox: bool = False) -> int:
    """Write the sign-off, print the verdict (or the JSON summary) and return the exit code. A sandbox run
    (the rehearsal) says so in both, so its green is never taken for the target's."""
    if state.app_version:
        environment = {**environment, "App version (after the last deploy)": state.app_version}
    if gate.insecure_transport:  # the pre-flight let a remote target go without verified TLS: whoever signs, sees why
        environment = {**environment, "Transport security": "verified TLS NOT required off this host ([security] "
                                                            f"allow_insecure_transport: {gate.insecure_transport})"}
    state.environment, state.sandbox = environment, sandbox  # the watch rewrites the sign-off after each round
    state.save()
    report = signoff.write(state, Path(state.run_dir), environment, gate.downtime_minutes, sandbox=sandbox,
                           people=gate.people)
    if args.json:
        print(json.dumps(_summary(state, report) | ({"sandbox": SANDBOX_BANNER} if sandbox else {}), indent=2))
    else:
        print(f"\n{SANDBOX_BANNER}" if sandbox else "")
        if state.dress_rehearsal:
            dress = state.dress_rehearsal
            print(f"DRESS REHEARSAL on a copy of {dress.get('source')}: {dress.get('copy')}, data as of "
                  f"{dress.get('as_of')} (the target itself was not migrated)")
        waived = signoff.waived_findings(Path(state.run_dir))
        count = f" with {len(waived)} waived finding{'s' if len(waived) > 1 else ''}" if waived else ""
        said = forced_verdict(state) if state.status == "forced" else state.status.upper()
        print(f"Verdict: {said}{count}" + (f" - {state.failure}" if state.failure else ""))
        for hit in waived:
            print(f"  waived {hit['criterion']}: {hit['finding']} ({hit['reason']}; decided by {hit['decided_by']}, "
                  f"expires {hit['expires']})")
        for entry in signoff.not_checked(Path(state.run_dir)):
            print(f"  {entry['phase']}: {unchecked_line(entry)}")
        for record in state.phases + state.rollback_phases:
            if record.status != "pending":
                flag = "  OVER BUDGET" if record.over_budget else ""
                print(f"  {record.name:<18} {record.status:<8} {record.seconds or 0:8.1f} s{flag}")
        if state.downtime_minutes is not None:
            forecast = (state.forecast or {}).get("downtime_minutes")
            print(f"  downtime {state.downtime_minutes:.2f} min (limit {gate.downtime_minutes:.0f}"
                  + (f"; forecast {forecast:.2f} min" if forecast is not None else "") + ")")
        print(f"Sign-off: {report}")
    return exit_of(state.status)
