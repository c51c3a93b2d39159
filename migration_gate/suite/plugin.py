"""The pytest plugin behind the phase suites: options, configuration, the target fixtures, PHI-free failure
reports, criterion traceability, and the HTML + JUnit XML reports of every run.

Loaded by the project's root conftest.py, and as an installed pytest plugin (the `pytest11` entry point) so
its options are known wherever pytest starts. It stays out of the way of runs that collect no phase-suite tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from migration_gate.app.client import http_client
from migration_gate.backup import BackupError
from migration_gate.backup.digests import Baseline
from migration_gate.config import (
    SANDBOX_BANNER,
    ConfigError,
    GateConfig,
    Waiver,
    holding_waivers,
    load_config,
    load_environment,
)
from migration_gate.config import _flag as yes_no
from migration_gate.config.context import SuiteContext
from migration_gate.config.environment import context_by_hand, export, operator, variable, variables
from migration_gate.core import rundir
from migration_gate.core.criteria import (
    CRITERIA,
    FAILURE_CRITERIA,
    NOT_APPLICABLE,
    NOT_CHECKED,
    PARTLY_CHECKED,
    criterion_result,
    unchecked_line,
)
from migration_gate.core.errors import GateError
from migration_gate.core.paths import ROOT
from migration_gate.core.phi import CiphertextFormatError, DecryptionError, PhiCodec, PhiKeyError
from migration_gate.core.provenance import gate_version
from migration_gate.core.redact import connection_cause, describe_target, mask_quoted, redact_text, safe_message
from migration_gate.core.result import CheckFailed, collecting, waiver_match, waiving
from migration_gate.core.status import Outcome
from migration_gate.db import connection as gate_db
from migration_gate.db.catalog import Catalog, inspect
from migration_gate.run.provider import SandboxProvider, load_provider
from migration_gate.run.runstate import owner_only, recorded_migration_sha256
from migration_gate.run.target import LIVE_PHASES, PHASES, RealTargets, Targets, TargetState, guarded

PHASE_DIRS = ("tests_precheck", "tests_postcheck", "tests_integrity")
GATE = pytest.StashKey["GateSession"]()
CHECKS = pytest.StashKey[list[dict]]()  # on each test item: the summaries of the Results its checks judged
PROBLEMS_SHOWN = 20


class GateSession:
    """Per-run state: configuration, environment, report folder, outcomes per criterion."""

    def __init__(self, config: pytest.Config) -> None:
        self.started = datetime.now(UTC)
        self.today = date.today()  # a waiver holds through its expires day, judged once for the whole session
        try:
            self.env = load_environment()
            self.context = self._context(config)
            self.gate: GateConfig = as_the_gate_uses(load_config(self.context.config), self.context)
        except ConfigError as exc:
            raise pytest.UsageError(f"migration-gate: {exc}") from None
        asked, where = gate_option(config, "gate_sandbox")
        if asked and not self.env.embedded:
            raise pytest.UsageError(f"migration-gate: {where} asks for the sandbox but DATABASE_URL names a "
                                    "target: drop one of them")
        refused = self.env.sandbox_refused(asked)
        if refused:
            raise pytest.UsageError(f"migration-gate: {refused}")
        self.run_dir = self.context.reports_dir  # this run's reports (the phase's folder of the gate's run folder)
        self.server_version = "embedded sandbox"
        if not self.env.embedded:
            self.server_version = _probe(self.env.database_url)
        # the migration file's bytes the checks may read (PRE-08 runs it, PRE-13 lints it): as the cut-over
        # recorded them at its start (the run folder's state.json), else as they are at this session's start
        self.migration_sha256 = recorded_migration_sha256(self.context.run_dir) or hashlib.sha256(
            self.gate.migration_file.read_bytes()).hexdigest()
        self.outcomes: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.results: dict[str, dict] = {}  # nodeid -> outcome, criterion, duration, problems (PHI-free)
        self.checks: list[dict] = []  # every Result judged in this run, in order
        self.clock = time.monotonic()
        self.results_path = Path(gate_option(config, "gate_results")[0] or rundir.criteria_file(
            self.run_dir, _slug(config.getoption('markexpr')) or 'all'))
        self._targets: Targets | None = None
        self.patients = gate_option(config, "gate_patients")[0]
        self.provider: SandboxProvider | None = None
        if self.env.embedded:  # the sandbox is only needed without DATABASE_URL; a bad name stops the run now
            try:
                self.provider = load_provider(self.gate.sandbox_provider)
            except ConfigError as exc:
                raise pytest.UsageError(f"migration-gate: {exc}") from None

    @property
    def targets(self) -> Targets:
        if self._targets is None:
            if self.provider is not None:
                self._targets = self.provider.targets(self.gate, self.run_dir / rundir.SANDBOX, self.patients)
            else:
                self._targets = RealTargets(self.env, self.context)
        return self._targets

    def _context(self, config: pytest.Config) -> SuiteContext:
        """The one channel the run state comes by: the gate's context file (--gate-context), or, run by hand, the
        one run folder (--gate-run-dir, or a new one under reports/) and the environment (context_by_hand)."""
        path, where = gate_option(config, "gate_context")
        if path:
            for name in ("gate_run_dir", "gate_config", "gate_sandbox_provider"):
                if config.getoption(name, None) is not None:
                    raise ConfigError(f"{where} names the run folder, description and provider: drop "
                                      f"{GATE_OPTIONS[name].flag}")
            return SuiteContext.read(Path(path))
        run_dir = gate_option(config, "gate_run_dir")[0] or (
            self.env.reports_dir / f"{self.started:%Y%m%dT%H%M%SZ}-{_slug(config.getoption('markexpr')) or 'all'}")
        config_path = gate_option(config, "gate_config")[0]
        return context_by_hand(self.env, Path(run_dir), Path(config_path) if config_path else None,
                               gate_option(config, "gate_sandbox_provider")[0])

    @property
    def banner(self) -> str | None:
        """The sandbox banner when the data is synthetic (the embedded sandbox, or a rehearsal's), else None."""
        return SANDBOX_BANNER if self.env.embedded or self.context.synthetic else None

    @property
    def key(self) -> str:
        if self.provider is None:
            return self.env.phi_key
        return self.provider.key

    def metadata(self) -> dict[str, str]:
        return {
            "Target": "embedded sandbox" if self.env.embedded else describe_target(self.env.database_url),
            "Server version": self.server_version,
            "API": self.context.api_base_url or ("sandbox reference API" if self.env.embedded else "not configured"),
            "Migration file": str(self.gate.migration_file.relative_to(ROOT)
                                  if self.gate.migration_file.is_relative_to(ROOT) else self.gate.migration_file),
            "Migration sha256": self.migration_sha256,
            "Configuration": str(self.gate.path),
            "Pre-check sessions": (f"lock_timeout {self.gate.precheck.lock_timeout}, statement_timeout "
                                   f"{self.gate.precheck.statement_timeout} ([precheck], phases: "
                                   f"{', '.join(LIVE_PHASES)})"),
            "Run by": operator(),
            "Gate version": gate_version(),
            "Started (UTC)": self.started.isoformat(timespec="seconds"),
        }


def as_the_gate_uses(gate: GateConfig, context: SuiteContext) -> GateConfig:
    """The description as the gate uses it: its migration file, sandbox provider and [rehearsal] kind (a
    dress rehearsal's suites: "scratch") where the context names them."""
    changes: dict[str, object] = {}
    if context.migration_file is not None:
        changes["migration_file"] = context.migration_file
    if context.sandbox_provider:
        changes["sandbox_provider"] = context.sandbox_provider
    if context.rehearsal_kind and context.rehearsal_kind != gate.rehearsal.kind:
        changes["rehearsal"] = dataclasses.replace(gate.rehearsal, kind=context.rehearsal_kind)
    return dataclasses.replace(gate, **changes) if changes else gate


def _slug(text: str | None) -> str:
    return re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-")


def _probe(dsn: str) -> str:
    """Connect once at start so an unreachable target stops the run with one line, not one per test."""
    try:
        with gate_db.connect(dsn, connect_timeout=10) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as exc:
        raise pytest.UsageError(f"migration-gate: target database {describe_target(dsn)} is unreachable: "
                                f"{connection_cause(exc)}") from None


def _is_phase_run(config: pytest.Config) -> bool:
    for arg in config.args:
        path = (Path(config.invocation_params.dir) / arg.split("::")[0]).resolve()
        if any(path.is_relative_to(ROOT / d) for d in PHASE_DIRS):
            return True
    return False


def phase_of(item: pytest.Item) -> str | None:
    found = [p for p in PHASES if item.get_closest_marker(p)]
    return found[0] if found else None


# -- hooks -----------------------------------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("migration-gate")
    for name, spec in GATE_OPTIONS.items():
        also = f"; ini {name}" + (f"; env {spec.env}" if spec.env else "")
        if spec.kind == "bool":
            group.addoption(spec.flag, dest=name, action="store_true", default=None, help=f"{spec.help}{also}")
        else:
            group.addoption(spec.flag, dest=name, type=int if spec.kind == "int" else str, default=None,
                            metavar=spec.metavar or {"path": "PATH", "int": "N"}.get(spec.kind, "VALUE"),
                            help=f"{spec.help}{also}")
        parser.addini(name, f"{spec.help} (as {spec.flag}; the flag{' and ' + spec.env if spec.env else ''} "
                            "win over this)", type="bool" if spec.kind == "bool" else "string", default=None)


@dataclass(frozen=True)
class GateOption:
    """One plugin option: its flag, the environment variable that also sets it (if any), and its kind (the ini
    key has the option's name: `gate_run_dir = "..."` in [tool.pytest.ini_options] or pytest.ini)."""

    flag: str
    help: str
    env: str | None = None
    kind: str = "string"  # "string", "path", "int" or "bool"
    metavar: str | None = None


GATE_OPTIONS = {
    "gate_context": GateOption("--gate-context", "the run state the gate hands a phase suite (its context.json): "
                               "run folder, description, app, log position, backup; the secrets stay in the "
                               "environment (by hand: --gate-run-dir and the environment instead)", kind="path"),
    "gate_config": GateOption("--gate-config", "migration description (default: migration.toml)", "GATE_CONFIG",
                              "path"),
    "gate_run_dir": GateOption("--gate-run-dir", "folder for this run's reports (default: reports/<run>)",
                               kind="path"),
    "gate_patients": GateOption("--gate-patients", "patients to seed when running on the embedded sandbox "
                                "(default: from the config)", kind="int"),
    "gate_sandbox_provider": GateOption("--gate-sandbox-provider", "module:attribute of the sandbox provider used "
                                        "without DATABASE_URL (default: migration.toml [sandbox] provider)",
                                        "GATE_SANDBOX_PROVIDER", metavar="MODULE:ATTRIBUTE"),
    "gate_sandbox": GateOption("--gate-sandbox", "run on the embedded sandbox (synthetic data) when DATABASE_URL is "
                               "not set; needed in CI (CI set), where a missing target otherwise stops the run",
                               "GATE_SANDBOX", "bool"),
    "gate_results": GateOption("--gate-results", "where to write the run's results as JSON: counts, every test's "
                               "outcome and problems, criteria, checks (default: <run dir>/criteria-<marker>.json)",
                               kind="path"),
}


def gate_option(config: pytest.Config, name: str) -> tuple[object, str]:
    """An option's value and where it came from, by the one precedence of every option: the flag, then its
    environment variable, then its ini key, then the default (None; False for a yes/no). A path from the ini file
    is relative to that file's folder; from the flag or the environment, to the current folder."""
    spec = GATE_OPTIONS[name]
    value = config.getoption(name, None)
    if value is not None:
        return value, spec.flag
    if spec.env and (variable(spec.env) or "").strip():
        try:
            return (yes_no(variables(), spec.env) if spec.kind == "bool" else variable(spec.env)), spec.env
        except ConfigError as exc:
            raise pytest.UsageError(f"migration-gate: {exc}") from None
    where = f"{name} (ini)"
    value = config.getini(name)
    if spec.kind == "bool":
        return bool(value), where if value else "default"
    if value in (None, ""):
        return None, "default"
    value = str(value).strip()
    if spec.kind == "int":
        try:
            return int(value), where
        except ValueError:
            raise pytest.UsageError(f"migration-gate: ini {name} must be a whole number") from None
    if spec.kind == "path" and config.inipath is not None:
        return str(config.inipath.parent / Path(value).expanduser()), where
    return value, where


PATH_OPTIONS = ("--gate-run-dir", "--gate-config", "--gate-results", "--gate-context")


def joined_path_options(args: list[str] | tuple[str, ...]) -> list[str] | None:
    """The arguments with every `--gate-run-dir PATH` (and the other path options) written `--gate-run-dir=PATH`,
    or None when there is none to join. pytest picks its rootdir and ini file from the command line's existing
    paths before any plugin's options are known, so a separate PATH outside the checkout is taken for a test
    folder: the project's pyproject.toml and conftest.py are then never read."""
    joined, changed, rest = [], False, list(args)
    while rest:
        arg = rest.pop(0)
        if arg in PATH_OPTIONS and rest:
            joined.append(f"{arg}={rest.pop(0)}")
            changed = True
        else:
            joined.append(arg)
    return joined if changed else None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """From the command line, `--gate-run-dir PATH` starts pytest again as `--gate-run-dir=PATH` (see
    joined_path_options), before anything has run; pytest.main() callers pass the joined form themselves."""
    invoked = list(early_config.invocation_params.args)
    joined = joined_path_options(invoked)
    if joined is not None and sys.argv[1:] == invoked and variable(REJOINED_ENV) != "1":
        export(REJOINED_ENV, "1")  # once: a second start never loops
        capture = early_config.pluginmanager.getplugin("capturemanager")
        if capture is not None:  # pytest already captures the terminal here: give it back to the new start
            capture.stop_global_capturing()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "pytest", *joined])


REJOINED_ENV = "GATE_PYTEST_REJOINED"


def _end_with_the_gate(parent: int | None) -> None:
    """A suite the gate runs (its context names the gate's pid) ends itself within a moment of the gate dying
    (kill -9 leaves it orphaned): an orphan would go on writing its results and progress into the folder a
    resumed run's suite writes into. Its checks only read, so ending it anywhere is safe; the resumed run ends
    any session it still has."""
    if parent is None:
        return
    if os.getppid() != parent:  # the gate died before this even started
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)
    threading.Thread(target=watch, name="gate-parent-watch", daemon=True).start()


def read_only(config: pytest.Config) -> bool:
    """An invocation that only shows what would run (--collect-only, --fixtures, --fixtures-per-test,
    --setup-plan): it runs no check, so it writes no run folder, report or results file."""
    option = config.option
    return bool(option.collectonly or option.showfixtures or option.show_fixtures_per_test
                or getattr(option, "setupplan", False))


def _refuse_workers(config: pytest.Config) -> None:
    """pytest-xdist workers would each write the run's results, reports and progress into one folder, and each
    build its own sandbox: a phase suite runs in one process (its checks spread their own work over
    GATE_WORKERS), so `-n N` is refused in one line rather than leaving a results file of one worker's tests."""
    workers = getattr(config.option, "numprocesses", None)
    if workers or getattr(config.option, "tx", None) or hasattr(config, "workerinput"):
        raise pytest.UsageError("migration-gate: the phase suites run in one pytest process; drop -n (pytest-xdist) "
                                "or give -n 0 (their checks use GATE_WORKERS processes themselves)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "criterion(id): the checklist criterion a phase test proves")
    export(REJOINED_ENV, None)  # the new start has it; what this run starts does not
    if not _is_phase_run(config) or config.option.help or config.option.markers:
        return  # --help and --markers show text: no configuration read, nothing written
    _refuse_workers(config)
    owner_only()  # a phase suite run by hand writes its reports owner-only, as the gate does
    session = GateSession(config)
    config.stash[GATE] = session
    _end_with_the_gate(session.context.parent_pid)
    if session.context.progress_file is not None:
        config.pluginmanager.register(ProgressLines(session.context.progress_file), "migration-gate-progress")
    if read_only(config):
        return  # the description fans the tests out (collected, shown), but no run folder or report is written
    session.run_dir.mkdir(parents=True, exist_ok=True)
    name = _slug(config.getoption("markexpr")) or "all"
    if not config.option.htmlpath:
        config.option.htmlpath = str(rundir.html_report(session.run_dir, name))
        config.option.self_contained_html = True
    if not config.option.xmlpath:
        config.option.xmlpath = str(rundir.junit_report(session.run_dir, name))


def pytest_metadata(metadata: dict, config: pytest.Config) -> None:
    session = config.stash.get(GATE, None)
    if session is None:
        return
    for key in list(metadata):  # what other plugins put there (CI variables...) is masked or dropped
        if "URL" in key.upper() or "TOKEN" in key.upper() or "SECRET" in key.upper():
            metadata.pop(key)
        elif isinstance(metadata[key], str):
            metadata[key] = redact_text(metadata[key])
    metadata.update(session.metadata())  # ours: built from redacted parts (the sha256 is not a secret)


class ProgressLines:
    """For the gate showing a suite's progress: one JSON line per event in the context's progress_file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _line(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._line({"total": len(session.items)})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self._line({"done": report.nodeid, "outcome": report.outcome})


# Arguments a phase test can take that the migration description fans out: one test per mapping, tenant row...
_DESCRIBED = {
    "mapping": lambda g: [(m.name, m) for m in g.tables],
    "phi_mapping": lambda g: [(m.name, m) for m in g.tables if m.phi or m.encrypt],
    "linked_mapping": lambda g: [(m.name, m) for m in g.tables if g.relationships(m)],
    "ruled_mapping": lambda g: [(m.name, m) for m in g.tables
                                if any(r.kind in ("null", "phi", "value") for r in m.new_columns.values())],
    "tenant_row": lambda g: [(f"{r.table}.{r.column}", r) for r in g.tenancy.rows] if g.tenancy else [],
    "tenancy": lambda g: [("tenancy", g.tenancy)] if g.tenancy else [],
    "granted_table": lambda g: [(t, t) for t in sorted(g.new_schema)] if g.app_role else [],
}

_NONE_DESCRIBED = {
    "mapping": "the description maps no table ([tables])",
    "phi_mapping": "the description maps no table with PHI ([tables.*.phi])",
    "linked_mapping": "the description declares no relationship between mapped tables",
    "ruled_mapping": "the description gives no new column a null, phi or value rule",
    "tenant_row": "the description has no [tenancy] rows",
    "tenancy": "the description has no [tenancy]: no organization to check rows against",
    "granted_table": "the description has no [app_role]",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Phase tests are parametrized from the description: a table added there is checked with no code change.
    What the description does not have (no [tenancy], say) yields one skipped test saying so: "not checked"
    (or "partly checked") in the results, never a silent pass."""
    session = metafunc.config.stash.get(GATE, None)
    if session is None:
        return
    for name, fan_out in _DESCRIBED.items():
        if name in metafunc.fixturenames:
            params = fan_out(session.gate)
            if not params:  # a skip that says why, in the results and the sign-off's "not checked" lines
                metafunc.parametrize(name, [pytest.param(None, marks=pytest.mark.skip(reason=_NONE_DESCRIBED[name]))],
                                     ids=["none-described"])
                continue
            metafunc.parametrize(name, [value for _, value in params], ids=[label for label, _ in params])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A phase test's criterion id is one of its keywords (`-k PRE-08` selects it: before pytest's own -k
    deselection, hence tryfirst) and a `criterion` property of its JUnit XML testcase."""
    for item in items:
        marker = item.get_closest_marker("criterion")
        if marker and phase_of(item):
            item.extra_keyword_matches.add(marker.args[0])
            item.user_properties.append(("criterion", marker.args[0]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """The Results a test's checks judged are kept in the item's stash, then in the run's results."""
    gate = item.config.stash.get(GATE, None)
    if gate is None:
        return (yield)
    marker = item.get_closest_marker("criterion")
    with waiving(_waiver_match(gate, marker.args[0] if marker and phase_of(item) else None)), \
            collecting() as found:  # setup, call and teardown: what this test's checks judged, as data
        item.stash[CHECKS] = found
        outcome = yield
    gate.checks.extend(dict(c, test=item.nodeid) for c in found)  # which test judged it (its duration: a rate)
    return outcome


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    gate = item.config.stash.get(GATE, None)
    if gate is None:
        return report
    marker = item.get_closest_marker("criterion")
    waived = _waived(gate, item) if report.when == "call" else []
    _record_result(gate, item, report, call, marker.args[0] if marker else None, waived)
    if phase_of(item) is None:
        return report
    if report.failed and call.excinfo is not None:
        report.longrepr = _safe_failure(item, call.excinfo)
    # What a test printed or logged is whatever its code had at hand: kept out of every report.
    report.sections = [(title, f"({len(text.splitlines())} lines withheld: captured output may hold data)")
                       for title, text in report.sections]
    if waived:  # shown in every report: JUnit XML (a property per finding), the HTML (a section), the terminal
        lines = [_waived_line(w) for w in waived]
        item.user_properties.extend(("waived", line) for line in lines)  # the teardown report carries them to JUnit
        report.sections.append(("waived findings ([[waivers]])", "\n".join(lines)))
        report.gate_waived = lines
    if marker and (report.when == "call" or report.failed or report.skipped):
        gate.outcomes[marker.args[0]].append((item.nodeid, report.outcome, report.when))
    return report


def _record_result(gate: GateSession, item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo,
                   criterion: str | None, waived: list[dict]) -> None:
    """One entry per test, over its setup, call and teardown: the first failure decides (a failed setup or
    teardown is an error, as pytest counts it), a skip counts only when nothing failed. A test that passed only
    because waivers matched its findings is "waived"; a failed one lists what was waived beside its problems."""
    entry = gate.results.setdefault(item.nodeid, {"nodeid": item.nodeid, "outcome": Outcome.PASSED,
                                                  "criterion": criterion, "duration": 0.0})
    entry["duration"] = round(entry["duration"] + report.duration, 3)
    if waived:
        entry["waived"] = waived
        if report.passed and entry["outcome"] == Outcome.PASSED:
            entry["outcome"] = "waived"
    if report.failed and entry["outcome"] not in (Outcome.FAILED, Outcome.ERROR):
        entry["outcome"] = Outcome.FAILED if report.when == "call" else Outcome.ERROR
        entry["when"] = report.when
        entry["problems"] = _problem_lines(call.excinfo) if call.excinfo is not None else []
    elif report.skipped and entry["outcome"] == Outcome.PASSED:
        entry["outcome"] = Outcome.SKIPPED
        entry["skipped"] = _skip_reason(report)


def _skip_reason(report: pytest.TestReport) -> str:
    """Why a test skipped: the line its pytest.skip gave (our tests' own words), redacted."""
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr or "")
    return redact_text(str(reason).removeprefix("Skipped: ").strip()) or "skipped"


def _waiver_match(gate: GateSession, criterion: str | None) -> Callable[[str], int | None] | None:
    """For WAIVER (core.result): the number of the unexpired waiver of this criterion a problem line matches, else None
    (the line as the reports show it, redact_text, or as the check said it)."""
    return waiver_match(holding_waivers(gate.gate.waivers, criterion, gate.today))


def _waived(gate: GateSession, item: pytest.Item) -> list[dict]:
    """The findings of this test's checks that waivers matched, each with its waiver's record (the description's
    words: criterion, finding, reason, who decided, expiry)."""
    found = []
    for summary in item.stash.get(CHECKS, []):
        for hit in summary.get("waived", []):
            waiver = gate.gate.waivers[hit["waiver"]]
            found.append({"finding": redact_text(hit["finding"]), "check": summary["check"], **_waiver_record(waiver)})
    return found


def _waiver_record(waiver: Waiver) -> dict:
    return {"criterion": waiver.criterion, "waiver": waiver.label, "reason": waiver.reason,
            "decided_by": waiver.decided_by, "expires": waiver.expires.isoformat()}


def _waived_line(hit: dict) -> str:
    return (f"{hit['finding']} - waived by {hit['waiver']}: {hit['reason']} (decided by {hit['decided_by']}, "
            f"expires {hit['expires']})")


def waiver_ledger(gate: GateSession) -> list[dict]:
    """Every waiver of the description as this run judged it: "matched" with the findings it waived; red when
    "expired" (judged in a run of its criterion and in every pre-check run, so a cut-over never starts with one)
    or "unused" (its criterion's tests ran and it matched nothing); "not judged" when its criterion's tests did not
    run to a verdict here (another phase, deselected, skipped, or an error before its checks)."""
    ran = {e["criterion"] for e in gate.results.values()  # judged: a test that errored in its setup never was
           if e.get("criterion") and e["outcome"] in (Outcome.PASSED, Outcome.WAIVED, Outcome.FAILED)}
    prechecks = any(CRITERIA[c].phase == "premigration" for c in ran if c in CRITERIA)
    ledger = []
    for waiver in gate.gate.waivers:
        record = _waiver_record(waiver)
        hits = [{"test": e["nodeid"], "finding": w["finding"]} for e in gate.results.values()
                for w in e.get("waived", []) if w["waiver"] == waiver.label and w["criterion"] == waiver.criterion]
        if waiver.expired(gate.today) and (waiver.criterion in ran or prechecks):
            status, message = "expired", f"waiver {waiver.label}: expired on {waiver.expires.isoformat()}"
        elif hits:
            status, message = "matched", f"waiver {waiver.label}: waived {len(hits)} finding(s)"
        elif waiver.criterion in ran:
            status, message = "unused", (f"waiver {waiver.label}: matched nothing in this run of {waiver.criterion} "
                                         "(the fault is gone or its line changed: remove or correct the waiver)")
        else:
            status, message = "not judged", f"waiver {waiver.label}: not judged (no test of {waiver.criterion} ran)"
        ledger.append(record | {"finding": waiver.finding, "finding_regex": waiver.finding_regex, "status": status,
                                "red": status in ("expired", "unused"), "message": message, "matched": hits})
    return ledger


# Errors whose messages are built from identifiers, never from values (database errors quote the values they
# name, which safe_message masks): their first line is shown. Any other exception is code that went wrong, and its
# message may hold whatever it was handling (a decrypted value, a row): only its class and where it was raised.
_TELLING = (psycopg.Error, OSError, httpx.HTTPError, GateError, BackupError, ConfigError, PhiKeyError,
            CiphertextFormatError, DecryptionError, pytest.fail.Exception, pytest.skip.Exception)


def unexpected_error(excinfo: pytest.ExceptionInfo) -> str:
    """A failure that is not a check's own: its class and first line when that is telling, else its class and
    the line that raised it, the message withheld."""
    exc = excinfo.value
    if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
        return timeout_line(exc)
    if isinstance(exc, _TELLING):
        return safe_message(exc)
    entry = excinfo.traceback[-1] if excinfo.traceback else None
    where = ""
    if entry is not None:
        path = Path(str(entry.path))
        with contextlib.suppress(ValueError):
            path = path.relative_to(ROOT)
        where = f" raised in {entry.name} at {path}:{entry.lineno + 1}"
    return f"{exc.__class__.__name__}{where} (message withheld: it may hold data)"


def timeout_line(exc: psycopg.Error) -> str:
    """A query the session's own timeouts stopped, said as such: a lock another session held, or a statement
    that ran too long ([precheck] in a live phase), never a hang."""
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return ("lock timeout: gave up after lock_timeout waiting for a lock another session holds on the target "
                "(a pre-check gives way rather than wait: [precheck] lock_timeout) - LockNotAvailable")
    return f"statement timeout or cancel: {safe_message(exc)} (statement_timeout)"


def _problem_lines(excinfo: pytest.ExceptionInfo) -> list[str]:
    """What went wrong, PHI-free: a check's own problem lines, anything else as unexpected_error says it."""
    exc = excinfo.value
    if isinstance(exc, CheckFailed):
        lines = exc.problems or [line.strip() for line in str(exc).splitlines() if line.strip()]
        shown = lines[:PROBLEMS_SHOWN]
        more = [f"... and {len(lines) - PROBLEMS_SHOWN} more"] if len(lines) > PROBLEMS_SHOWN else []
        return [redact_text(line) for line in shown + more]
    return [unexpected_error(excinfo)]


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A module that cannot be collected is an error of the run, named by its node id."""
    report = yield
    gate = collector.config.stash.get(GATE, None)
    if gate is not None and report.failed:
        text = str(report.longrepr).strip().splitlines()
        gate.results[report.nodeid] = {"nodeid": report.nodeid, "outcome": Outcome.ERROR, "criterion": None,
                                       "duration": 0.0, "when": "collect",
                                       "problems": [redact_text(mask_quoted(text[-1].lstrip("E ")))] if text else []}
    return report


def _safe_failure(item: pytest.Item, excinfo: pytest.ExceptionInfo) -> str:
    """A failure report without values: our checks' messages as they are, anything else as unexpected_error
    says it."""
    exc = excinfo.value
    if isinstance(exc, CheckFailed):
        return f"{item.nodeid}\n{exc}"
    return f"{item.nodeid}\n{unexpected_error(excinfo)}"


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """A test that passed because waivers matched its findings says so on the terminal ("waived", W)."""
    if report.when == "call" and report.passed and getattr(report, "gate_waived", None):
        return "waived", "W", ("WAIVED", {"yellow": True})
    return None


def pytest_html_results_table_row(report, cells: list) -> None:
    """The HTML report's result column: "Passed (waived)" for such a test, its findings in its log section."""
    if getattr(report, "gate_waived", None) and cells:
        cells[0] = '<td class="col-result">Passed (waived)</td>'


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    gate = config.stash.get(GATE, None)
    return [gate.banner] if gate is not None and gate.banner else None


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """A sandbox run says so next to its counts, where a reader of "16 passed" looks."""
    gate = config.stash.get(GATE, None)
    if gate is None:
        return
    ledger = waiver_ledger(gate)
    if any(w["matched"] or w["red"] for w in ledger):
        terminalreporter.write_sep("=", "waivers ([[waivers]])", yellow=True)
        for waiver in ledger:
            if waiver["status"] != "not judged":
                terminalreporter.write_line(("RED " if waiver["red"] else "") + waiver["message"], red=waiver["red"])
                terminalreporter.write_line(f"  reason: {waiver['reason']}; decided by {waiver['decided_by']}; "
                                            f"expires {waiver['expires']}")
            for hit in waiver["matched"]:
                terminalreporter.write_line(f"  {hit['test'].split('::', 1)[-1]}: {hit['finding']}")
    found = unchecked(gate, criteria_outcomes(gate))
    if found:  # never only pytest's "3 skipped": which criteria that leaves unchecked, and why
        terminalreporter.write_sep("=", "criteria not checked (skipped tests; [[not_applicable]])", yellow=True)
        for entry in found:
            terminalreporter.write_line(unchecked_line(entry), red=entry["result"] == NOT_CHECKED)
    if gate.banner:
        terminalreporter.write_sep("!", gate.banner, yellow=True, bold=True)


def pytest_html_report_title(report) -> None:
    """At the very top of a sandbox run's HTML report (its title and heading): the banner."""
    gate = report.config.stash.get(GATE, None)
    if gate is not None and gate.banner:
        report.title = f"{gate.banner} - {report.title}"


def pytest_html_results_summary(prefix: list, summary: list, postfix: list, session: pytest.Session) -> None:
    gate = session.config.stash.get(GATE, None)
    if gate is None:
        return
    if gate.banner:
        prefix.insert(0, "<p class='gate-sandbox' style='background:#9a6700;color:#fff;font-size:1.4em;"
                         f"font-weight:600;padding:.5em 1em;border-radius:6px'>{_html(gate.banner)}</p>")
    rows = []
    for cid, outcomes in sorted(criteria_outcomes(gate).items()):
        verdict, tests = outcomes
        rows.append(f"<tr><td>{cid}</td><td>{_html(CRITERIA[cid].text)}</td><td>{verdict}</td>"
                    f"<td>{'<br>'.join(_html(t) for t in tests)}</td></tr>")
    postfix.append("<h2>Checklist criteria</h2><table><tr><th>Criterion</th><th>Text</th><th>Result</th>"
                   "<th>Tests</th></tr>" + "".join(rows) + "</table>")
    ledger = waiver_ledger(gate)
    if ledger:
        rows = [f"<tr><td>{'RED: ' if w['red'] else ''}{_html(w['message'])}</td><td>{_html(w['reason'])}</td>"
                f"<td>{_html(w['decided_by'])}</td><td>{w['expires']}</td><td>"
                + "<br>".join(_html(f"{h['test'].split('::', 1)[-1]}: {h['finding']}") for h in w["matched"])
                + "</td></tr>" for w in ledger]
        postfix.append("<h2>Waivers</h2><table><tr><th>Waiver</th><th>Reason</th><th>Decided by</th><th>Expires</th>"
                       "<th>Findings waived</th></tr>" + "".join(rows) + "</table>")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def criteria_outcomes(gate: GateSession) -> dict[str, tuple[str, list[str]]]:
    """Each criterion's verdict (criteria.criterion_result): failed, passed, waived (passed only because waivers
    matched), not checked (all its tests skipped), partly checked, or not applicable ([[not_applicable]])."""
    waived = {e["criterion"] for e in gate.results.values() if e["outcome"] == "waived"}
    declared = {n.criterion for n in gate.gate.not_applicable}
    found = {}
    for cid, results in gate.outcomes.items():
        verdict = criterion_result({o for _, o, _ in results}, cid in waived, cid in declared)
        found[cid] = (verdict, sorted({n for n, _, _ in results}))
    return found


def unchecked(gate: GateSession, outcomes: dict[str, tuple[str, list[str]]]) -> list[dict]:
    """The criteria not (fully) checked in this run, each with why its tests skipped (their own skip lines) and,
    where the description declares it not applicable, that reason and who decided."""
    declared = {n.criterion: n for n in gate.gate.not_applicable}
    found = []
    for cid, (verdict, _) in sorted(outcomes.items()):
        if verdict not in (NOT_CHECKED, PARTLY_CHECKED, NOT_APPLICABLE):
            continue
        skipped = sorted({e["skipped"] for e in gate.results.values()
                          if e.get("criterion") == cid and e["outcome"] == Outcome.SKIPPED and e.get("skipped")})
        entry = {"criterion": cid, "result": verdict, "skipped": skipped}
        if cid in declared:
            entry |= {"reason": declared[cid].reason, "decided_by": declared[cid].decided_by}
        found.append(entry)
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gate = session.config.stash.get(GATE, None)
    if gate is None or read_only(session.config):
        return
    if gate._targets is not None:  # before the results: a scratch copy left behind is red in them
        try:
            gate._targets.close()
        except Exception as exc:  # noqa: BLE001 - a red entry of the results, never a traceback after them
            said = str(exc) if isinstance(exc, BackupError) else safe_message(exc)
            gate.results["scratch databases"] = {"nodeid": "scratch databases", "outcome": Outcome.ERROR,
                                                 "criterion": None, "duration": 0.0, "when": "teardown",
                                                 "problems": [redact_text(said)]}
            exitstatus = session.exitstatus = pytest.ExitCode.TESTS_FAILED
        gate._targets = None
    outcomes = criteria_outcomes(gate)
    tally = Counter(entry["outcome"] for entry in gate.results.values())
    ledger = waiver_ledger(gate)
    if any(w["red"] for w in ledger) and exitstatus == 0:  # an expired or unused waiver: the run is not green
        session.exitstatus = exitstatus = pytest.ExitCode.TESTS_FAILED
    summary = {
        "metadata": gate.metadata(),
        "sandbox": gate.banner is not None,
        "exitstatus": int(exitstatus),
        "duration": round(time.monotonic() - gate.clock, 2),
        "counts": {"passed": tally["passed"], "failed": tally["failed"], "skipped": tally["skipped"],
                   "errors": tally["error"]} | ({"waived": tally["waived"]} if tally["waived"] else {}),
        "tests": list(gate.results.values()),
        "criteria": {cid: {"text": CRITERIA[cid].text, "phase": CRITERIA[cid].phase, "result": verdict,
                           "tests": tests} for cid, (verdict, tests) in sorted(outcomes.items())},
        "checks": gate.checks,
        "waivers": ledger,
        "not_checked": unchecked(gate, outcomes),
        "failure_criteria": {line: sorted(c for c in ids if outcomes.get(c, ("",))[0] == Outcome.FAILED)
                             for line, ids in FAILURE_CRITERIA.items()},
    }
    gate.results_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = gate.results_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(gate.results_path)


# -- fixtures ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _gate_suite_properties(pytestconfig: pytest.Config, record_testsuite_property) -> None:
    """The run's metadata (built without secrets) as JUnit XML suite properties."""
    session = pytestconfig.stash.get(GATE, None)
    if session is not None:
        for name, value in session.metadata().items():
            record_testsuite_property(name, value)
        if session.banner:
            record_testsuite_property("sandbox", session.banner)


@pytest.fixture(scope="session")
def gate_session(pytestconfig: pytest.Config) -> GateSession:
    """The run's state: its configuration, environment (gate_session.env), targets and results so far."""
    session = pytestconfig.stash.get(GATE, None)
    if session is None:
        pytest.fail("the phase fixtures need a phase-suite run (tests_precheck, tests_postcheck, tests_integrity)")
    return session


@pytest.fixture(scope="session")
def gate_config(gate_session: GateSession) -> GateConfig:
    """The migration description (migration.toml, or --gate-config) the checks judge against."""
    return gate_session.gate


@pytest.fixture(scope="session")
def gate_run_dir(gate_session: GateSession) -> Path:
    """The run folder: the cut-over's when the gate runs the suite (its context; each phase's reports go into a
    folder of it), else this run's own (--gate-run-dir): where the performance baseline and after live."""
    return gate_session.context.run_dir


@pytest.fixture(scope="session")
def gate_codec(gate_session: GateSession) -> PhiCodec:
    """The PHI codec keyed by the run's key (PHI_ENCRYPTION_KEY, or the sandbox's synthetic key)."""
    return PhiCodec(gate_session.key)


@pytest.fixture
def gate_target(request: pytest.FixtureRequest, gate_session: GateSession) -> TargetState:
    """The target in the state the test's phase marker names: its DSN, API, backup file, log source."""
    phase = phase_of(request.node)
    if phase is None:
        pytest.fail("a phase test needs a phase marker (premigration, backup, postmigration, integrity, rollback)")
    # the app is live during the pre-checks: their sessions carry [precheck]'s timeouts (migration_gate.run.target)
    return guarded(gate_session.targets.state(phase), gate_session.gate.precheck)


@pytest.fixture(name="gate_db")
def gate_db_connection(gate_target: TargetState) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the target's database, for the test (closed after it)."""
    with gate_db.connect(gate_target.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def gate_catalog(gate_db: psycopg.Connection) -> Catalog:
    """The target's catalog, inspected once for the test (every schema check reads this one model)."""
    return inspect(gate_db)


@pytest.fixture
def gate_baseline_db(gate_target: TargetState, gate_session: GateSession) -> Iterator[psycopg.Connection]:
    """A connection to the legacy data as it was at backup time (the backup restored, or BASELINE_DATABASE_URL)."""
    try:
        dsn = gate_session.targets.baseline(gate_target)
    except LookupError as exc:
        pytest.fail(str(exc))
    with gate_db.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def _baselines() -> Iterator[dict[str, Baseline]]:
    """One Baseline per phase for the session: the restore (if any) and the new side's digests are taken once."""
    found: dict[str, Baseline] = {}
    yield found
    for baseline in found.values():
        baseline.close()


@pytest.fixture
def gate_legacy(gate_target: TargetState, gate_session: GateSession, _baselines: dict[str, Baseline]) -> Baseline:
    """The legacy data at backup time as integrity compares with it: the digests recorded in the backup's snapshot
    (beside BACKUP_FILE), and the backup restored only when a check has to drill into a differing key range."""
    if gate_target.phase in _baselines:
        return _baselines[gate_target.phase]
    def restored() -> psycopg.Connection:
        try:
            dsn = gate_session.targets.baseline(gate_target)
        except LookupError as exc:
            pytest.fail(str(exc))
        return gate_db.connect(dsn, autocommit=True)
    baseline = _baselines[gate_target.phase] = Baseline.from_backup(gate_target.backup_file, restored)
    return baseline


@pytest.fixture
def gate_api(gate_target: TargetState, gate_session: GateSession) -> Iterator[httpx.Client]:
    """An HTTP client of the app at API_BASE_URL (the sandbox's reference API on the sandbox), with the run's
    headers."""
    if not gate_target.api_base_url:
        pytest.fail("API_BASE_URL is not set: the API checks need the app's address")
    with http_client(gate_target.api_base_url, timeout=30, headers=gate_session.env.api_headers) as client:
        yield client


@pytest.fixture
def gate_api_credentials(gate_target: TargetState) -> tuple[str, str]:
    """The fixture user the API checks log in as (GATE_API_USERNAME, GATE_API_PASSWORD)."""
    if not (gate_target.api_username and gate_target.api_password):
        pytest.fail("GATE_API_USERNAME and GATE_API_PASSWORD are not set: the API checks log in as that user")
    return gate_target.api_username, gate_target.api_password


@pytest.fixture
def gate_api_user_id(gate_db: psycopg.Connection, gate_api_credentials: tuple[str, str],
                     gate_config: GateConfig) -> object:
    """The fixture user's key in the users table the description names ([api] users)."""
    users = gate_config.api.users
    if users is None:
        pytest.fail("the description has no [api] users table: the API counts need the fixture user's id")
    row = gate_db.execute(sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
        sql.Identifier(users.key), sql.Identifier(users.schema, users.table), sql.Identifier(users.username)),
        (gate_api_credentials[0],)).fetchone()
    if row is None:
        pytest.fail(f"the fixture user (GATE_API_USERNAME) does not exist in {users.table}")
    return row[0]
