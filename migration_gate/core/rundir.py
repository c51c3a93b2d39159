"""A run folder's layout: every file name in it, in one place.

It sits in core, not run, because modules below run write into the folder too (app/performance.py keeps the
measurements, app/answers.py the app's recorded answers). Layout of reports/<run>/:

    state.json                         the run's phases, budgets and outcome (run/runstate.py)
    signoff.html                       the sign-off (report/signoff.py)
    <phase>/criteria-<marker>.json     a phase suite's results, PHI-free (suite/plugin.py writes, many read)
    <phase>/<marker>.html, .xml        its pytest-html report and JUnit XML
    <phase>/progress.jsonl             its progress while it runs
    <phase>/pytest-output.txt          its console output, redacted
    <phase>/context.json               the run state the gate hands the phase's suite (config/context.py)
    performance/<name>.json            the API measurements: baseline (legacy), postmigration, golive
    answers/<name>.json                the app's recorded answers (digests only)
    watch/state.json, watch.html, round-NN.xml   the 48-hour watch
    watch/acks.jsonl, started.json, watch.log    red rounds acknowledged; the watch the cut-over started
    sandbox/                           a sandbox's working folder (kept out of bundles)
    hooks-rehearsal.json               the hooks rehearsal the pre-flight relied on (or overrode with --force)

In the reports folder itself, beside the runs: hooks-rehearsal.json, the last `cutover --rehearse-hooks`
(run/hookrehearsal.py), which the pre-flight of every cut-over reads.
"""

from __future__ import annotations

from pathlib import Path

STATE = "state.json"
SIGNOFF = "signoff.html"
PROGRESS = "progress.jsonl"
PYTEST_OUTPUT = "pytest-output.txt"
CONTEXT = "context.json"
PERFORMANCE = "performance"
BASELINE = "baseline"  # the legacy app's measurement, performance/baseline.json
BASELINE_FILE = f"{PERFORMANCE}/{BASELINE}.json"  # as messages name it, relative to the run folder
ANSWERS = "answers"
WATCH = "watch"
WATCH_REPORT = "watch.html"
WATCH_ACKS = "acks.jsonl"  # scripts/watch --ack: red rounds a person took on (in watch/)
WATCH_STARTED = "started.json"  # the watch the cut-over started after go-live: its pid, command, log (in watch/)
WATCH_LOG = "watch.log"  # that watch's output (in watch/)
SANDBOX = "sandbox"
HOOKS_REHEARSAL = "hooks-rehearsal.json"  # the reports folder's last hooks rehearsal, and a run's copy of it
EMERGENCY = "emergency.jsonl"  # scripts/emergency's maintenance switches (who, why, when), one per line
CRITERIA = "criteria-*.json"  # a phase's results, in its folder
CRITERIA_GLOB = f"*/{CRITERIA}"  # every phase's results, from the run folder


def state_file(run_dir: Path) -> Path:
    return Path(run_dir) / STATE


def criteria_file(folder: Path, marker: str) -> Path:
    """A phase suite's results (the folder is the phase's, or a hand run's run folder)."""
    return Path(folder) / f"criteria-{marker}.json"


def context_file(folder: Path) -> Path:
    """What a phase suite the gate starts is told (--gate-context), in the phase's folder."""
    return Path(folder) / CONTEXT


def html_report(folder: Path, marker: str) -> Path:
    return Path(folder) / f"{marker}.html"


def junit_report(folder: Path, marker: str) -> Path:
    return Path(folder) / f"{marker}.xml"


def performance_file(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / PERFORMANCE / f"{name}.json"


def baseline_file(run_dir: Path) -> Path:
    """The legacy app's measured performance, which the post-checks and the watch judge against."""
    return Path(run_dir) / BASELINE_FILE


def round_junit(watch_folder: Path, number: int) -> Path:
    return Path(watch_folder) / f"round-{number:02d}.xml"


def hooks_rehearsal_file(folder: Path) -> Path:
    """The last hooks rehearsal (in the reports folder), or the copy a run's pre-flight relied on (in the run's)."""
    return Path(folder) / HOOKS_REHEARSAL


def emergency_file(run_dir: Path) -> Path:
    """The run's emergency maintenance switches (append-only: a running gate owns state.json)."""
    return Path(run_dir) / EMERGENCY
