"""One phase suite (pytest -m <marker>) run in a child process for the gate: the run state handed over in one
context file beside the phase (its secrets in its environment), its reports in the phase's folder, its progress
(tests done of total) shown while it runs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from migration_gate.app.hooks import CutoverTarget
from migration_gate.config import TARGET_VARIABLES, GateConfig
from migration_gate.config.context import SuiteContext
from migration_gate.config.environment import CONTEXT_VARIABLES, variables
from migration_gate.core import rundir
from migration_gate.core.criteria import NOT_APPLICABLE, NOT_CHECKED, unchecked_line
from migration_gate.core.paths import ROOT
from migration_gate.core.progress import Progress
from migration_gate.core.redact import redact_text
from migration_gate.core.status import Outcome
from migration_gate.run.runstate import PhaseRecord, RunState

# The plugins a phase suite loads (its conftest.py loads migration_gate.suite.plugin): the HTML report and the
# metadata it shows. Autoloading is off in the suite's environment (SuiteRunner.run): not whatever else is installed
# beside pytest (xdist, anyio's, hypothesis'), which cost each suite half a second of start and would show in its
# report's environment; and a plugin named on the command line and autoloaded too would be registered twice.
SUITE_PLUGINS = ("pytest_metadata.plugin", "pytest_html.plugin", "pytest_html.fixtures")


def session_tag(run_dir: Path) -> str:
    """The application_name prefix of the sessions a run's child processes open (at most 63 bytes are kept)."""
    return f"migration-gate {Path(run_dir).name}"[:48]


def suite_env(target: CutoverTarget, gate: GateConfig, state: RunState) -> dict[str, str]:
    """The child's environment: the caller's, with the target's secrets (the database, the key, the API login and
    headers) and its sessions' name; never the caller's PYTEST_ADDOPTS, nor a variable the context now carries
    (environment.CONTEXT_VARIABLES: a stale one could never stand in for the gate's). The run state goes in the
    context file (suite_context), not here."""
    env = {k: v for k, v in variables().items() if k not in ("PYTEST_ADDOPTS", *CONTEXT_VARIABLES)}
    env.update({"DATABASE_URL": target.dsn, "PHI_ENCRYPTION_KEY": target.key,
                "GATE_API_USERNAME": target.api_username, "GATE_API_PASSWORD": target.api_password,
                "GATE_API_HEADERS": json.dumps(target.api_headers),
                "PGAPPNAME": f"{session_tag(Path(state.run_dir))} suite"})  # libpq reads it itself
    # what this target lacks (a backup run needs no API) is unset for the child, never set-but-empty (refused)
    return {k: v for k, v in env.items() if v or k not in TARGET_VARIABLES}


def suite_context(target: CutoverTarget, gate: GateConfig, state: RunState) -> SuiteContext:
    """The run state a phase suite needs, as the gate knows it: the cut-over's run folder (performance/ baseline
    and after, state.json), the description and migration file it uses, the app's address and log position, the
    backup, the rows a SQL rollback carried back (RB-02). SuiteRunner.run adds the phase's folder."""
    return SuiteContext(
        run_dir=Path(state.run_dir), config=gate.path.resolve() if gate.path else None,  # the child's cwd may differ
        migration_file=gate.migration_file,
        sandbox_provider=gate.sandbox_provider, rehearsal_kind=gate.rehearsal.kind, synthetic=target.synthetic,
        api_base_url=target.api_base_url or None, app_log_file=target.app_log_file, log_offset=state.log_offset,
        log_source=state.log_source, log_marker=state.log_marker,
        backup_file=Path(state.backup["path"]) if state.backup else None,
        carried_rows=Path(state.carried) if state.carried else None, allow_writes=target.allow_writes)


class SuiteRunner:
    """Runs the phase suites of one cut-over run, each into its own folder of the run folder."""

    def __init__(self, run_dir: Path, progress: Progress) -> None:
        self.run_dir = run_dir
        self.progress = progress

    def run(self, marker: str, record: PhaseRecord, env: dict[str, str], context: SuiteContext) -> bool:
        """pytest -m <marker> in a child process; its HTML and JUnit reports land in the run folder, and its
        progress (tests done of total) is shown while it runs. The verdict and the record's detail come from the
        results the child writes as JSON (criteria-<marker>.json in its folder), never from its text. What the child
        runs with goes in one file beside it (context.json, --gate-context); its secrets in its environment."""
        folder = self.run_dir / record.name
        folder.mkdir(parents=True, exist_ok=True)
        progress_file = folder / rundir.PROGRESS
        progress_file.unlink(missing_ok=True)
        results_file = rundir.criteria_file(folder, marker)
        results_file.unlink(missing_ok=True)  # a stale file must never stand in for this run's results
        # the child ends itself when this process dies (parent_pid), so a killed gate leaves no suite writing into
        # this folder
        context = dataclasses.replace(context, run_dir=self.run_dir.resolve(), phase_folder=record.name,
                                      progress_file=progress_file.resolve(), parent_pid=os.getpid(),
                                      ).write(rundir.context_file(folder).resolve())
        env = {**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # SUITE_PLUGINS only
        with tempfile.TemporaryFile(mode="w+") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-m", marker, f"--gate-context={context}", "-p", "no:cacheprovider",
                 *(arg for plugin in SUITE_PLUGINS for arg in ("-p", plugin)),
                 "-q", "--no-header", "-rf", "--tb=short"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
            while True:  # progress every half second; the moment the suite ends, not up to half a second after
                try:
                    child.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    self._show_progress(marker, progress_file)
            self._show_progress(marker, progress_file)
            out.seek(0)
            output = out.read()
        record.report = str(rundir.html_report(folder, marker).relative_to(self.run_dir))
        (folder / rundir.PYTEST_OUTPUT).write_text(redact_text(output))
        ok, record.detail = judge(child.returncode, read_results(results_file), output)
        return ok

    def _show_progress(self, marker: str, progress_file: Path) -> None:
        try:
            lines = progress_file.read_text().splitlines()
        except OSError:
            return
        events = [json.loads(line) for line in lines if line.strip().endswith("}")]
        total = next((e["total"] for e in events if "total" in e), None)
        if total:
            self.progress.count(f"{marker} checks", sum("done" in e for e in events), total)


def read_results(path: Path) -> dict | None:
    """The suite's results as its plugin wrote them; None when there are none (a usage error, or a crash before
    the session finished) or they are unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("counts"), dict) else None


def _tally(results: dict) -> str:
    """The suite's outcome in plain words for the timeline and the sign-off (not pytest's "64 deselected": the
    other phases' checks are not this phase's business)."""
    counts = results["counts"]
    parts = [f"{counts.get(k, 0)} {label}" for k, label in
             (("failed", "failed"), ("errors", "could not run"), ("passed", "passed"),
              ("waived", "passed only by waivers"), ("skipped", "skipped")) if counts.get(k, 0)]
    return f"checks: {', '.join(parts) or 'none ran'} in {float(results.get('duration') or 0):.1f} s"


def not_checked(results: dict) -> list[str]:
    """What a suite left unchecked that no [[not_applicable]] explains, one line each: a criterion whose tests all
    skipped, and a phase whose tests all skipped (none passed, none failed). A cut-over holds these red."""
    entries = results.get("not_checked", [])
    found = [unchecked_line(e) for e in entries if e.get("result") == NOT_CHECKED]
    counts = results["counts"]
    declared = {e["criterion"] for e in entries if e.get("result") == NOT_APPLICABLE}
    skipped = [t for t in results.get("tests", []) if t.get("outcome") == Outcome.SKIPPED]
    if skipped and not any(counts.get(k) for k in ("passed", "waived", "failed", "errors")) \
            and any(t.get("criterion") not in declared for t in skipped):
        found.insert(0, f"every test of the phase skipped ({len(skipped)}): the phase checked nothing")
    return found


def judge(returncode: int, results: dict | None, output: str) -> tuple[bool, str]:
    """(green, detail) of a suite run: green only with exit code 0 and results without a failure, an error or a
    red waiver (expired, or matched nothing); a test passed by waivers is green and the detail counts its findings.
    The detail names the failed tests and their first problem lines (our checks' lines: PHI-free); without
    results it is the last line the child printed, redacted."""
    if results is None:
        last = next((line for line in reversed(output.splitlines()) if line.strip()), "")
        return False, redact_text(last.strip() or f"pytest exited with code {returncode} and wrote no results")
    counts = results["counts"]
    bad = [t for t in results.get("tests", []) if t.get("outcome") in (Outcome.FAILED, Outcome.ERROR)]
    red_waivers = [w["message"] for w in results.get("waivers", []) if w.get("red")]
    waived = sum(len(t.get("waived", [])) for t in results.get("tests", []) if t.get("outcome") == Outcome.WAIVED)
    detail = _tally(results) + (f"; {waived} finding(s) waived ([[waivers]], see the sign-off)" if waived else "")
    unchecked = not_checked(results)
    declared = [unchecked_line(e) for e in results.get("not_checked", []) if e.get("result") == NOT_APPLICABLE]
    detail += "".join(f"; {line}" for line in declared)
    if returncode == 0 and results.get("exitstatus") == 0 and not bad and not counts.get("failed") \
            and not counts.get("errors") and not red_waivers and not unchecked:
        return True, detail
    if unchecked:
        detail += "; NOT CHECKED: " + "; ".join(unchecked) + (
            " (a skipped check is never a pass: make it checkable, or declare it in [[not_applicable]] with why)")
    if red_waivers:
        detail += "; " + "; ".join(red_waivers)
    if bad:
        names = [t["nodeid"].split("::", 1)[-1] for t in bad]
        problems = [line for t in bad for line in t.get("problems", []) if not line.endswith("problem(s)")][:4]
        detail += f"; failed: {', '.join(names[:8])}" + (", ..." if len(names) > 8 else "")
        detail += f"; first problems: {'; '.join(problems)}" if problems else ""
    elif not red_waivers and not unchecked:
        detail += f"; pytest exit code {returncode}"
    return False, redact_text(detail)
