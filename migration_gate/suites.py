"""One phase suite (pytest -m <marker>) run in a child process for the gate: the target handed over in its
environment, its reports in the phase's folder, its progress (tests done of total) shown while it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from migration_gate.config import ROOT, GateConfig
from migration_gate.hooks import CutoverTarget
from migration_gate.progress import Progress
from migration_gate.redact import redact_text
from migration_gate.runstate import PhaseRecord, RunState


def suite_env(target: CutoverTarget, gate: GateConfig, state: RunState) -> dict[str, str]:
    """The child's environment: the target the gate acts on, never the caller's PYTEST_ADDOPTS."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS",)}
    env.update({"DATABASE_URL": target.dsn, "PHI_ENCRYPTION_KEY": target.key,
                "API_BASE_URL": target.api_base_url, "GATE_API_USERNAME": target.api_username,
                "GATE_API_PASSWORD": target.api_password, "GATE_CONFIG": str(gate.path),
                "APP_LOG_OFFSET": str(state.log_offset),
                "GATE_API_HEADERS": json.dumps(target.api_headers)})
    if target.allow_writes:
        env["GATE_ALLOW_WRITES"] = "1"
    if target.app_log_file:
        env["APP_LOG_FILE"] = str(target.app_log_file)
    if state.backup:
        env["BACKUP_FILE"] = state.backup["path"]
    return env


class SuiteRunner:
    """Runs the phase suites of one cut-over run, each into its own folder of the run folder."""

    def __init__(self, run_dir: Path, progress: Progress) -> None:
        self.run_dir = run_dir
        self.progress = progress

    def run(self, marker: str, record: PhaseRecord, env: dict[str, str]) -> bool:
        """pytest -m <marker> in a child process; its HTML and JUnit reports land in the run folder, and its
        progress (tests done of total) is shown while it runs."""
        folder = self.run_dir / record.name
        folder.mkdir(parents=True, exist_ok=True)
        progress_file = folder / "progress.jsonl"
        progress_file.unlink(missing_ok=True)
        env = env | {"GATE_PROGRESS_FILE": str(progress_file)}
        with tempfile.TemporaryFile(mode="w+") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-m", marker, f"--gate-run-dir={folder}", "-p", "no:cacheprovider",
                 "-q", "--no-header", "-rf", "--tb=short"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                text=True)
            while child.poll() is None:
                time.sleep(0.5)
                self._show_progress(marker, progress_file)
            self._show_progress(marker, progress_file)
            out.seek(0)
            output = out.read()
        done = subprocess.CompletedProcess(child.args, child.returncode, output, "")
        record.report = str((folder / f"{marker}.html").relative_to(self.run_dir))
        (folder / "pytest-output.txt").write_text(redact_text(done.stdout))
        summary = next((line for line in reversed(done.stdout.strip().splitlines()) if " in " in line), "")
        if done.returncode == 0:
            record.detail = summary.strip("= ")
            return True
        failed = [line.split("::", 1)[1].split(" ")[0] for line in done.stdout.splitlines()
                  if line.startswith("FAILED")]
        # our checks' problem lines (indented under "...: N problem(s)"): tables, counts, ids, never values
        problems = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ") and
                    ("rows" in line or "values" in line or "ids" in line or "missing" in line)][:4]
        record.detail = (f"{summary.strip('= ')}; failed: {', '.join(failed[:8])}"
                         + (f"; first problems: {'; '.join(problems)}" if problems else "") if failed else
                         redact_text(next((line for line in reversed(output.splitlines()) if line.strip()), summary)))
        return False

    def _show_progress(self, marker: str, progress_file: Path) -> None:
        try:
            lines = progress_file.read_text().splitlines()
        except OSError:
            return
        events = [json.loads(line) for line in lines if line.strip().endswith("}")]
        total = next((e["total"] for e in events if "total" in e), None)
        if total:
            self.progress.count(f"{marker} checks", sum("done" in e for e in events), total)
