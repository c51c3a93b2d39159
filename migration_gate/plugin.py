"""The pytest plugin behind the phase suites: options, configuration, the target fixtures, PHI-free failure
reports, criterion traceability, and the HTML + JUnit XML reports of every run.

Loaded by the project's root conftest.py. It stays out of the way of runs that collect no phase-suite tests.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from migration_gate import checks
from migration_gate.catalog import Catalog, inspect
from migration_gate.checks import CheckFailed
from migration_gate.config import ROOT, ConfigError, GateConfig, load_config, load_environment
from migration_gate.criteria import CRITERIA, FAILURE_CRITERIA
from migration_gate.phi import PhiCodec
from migration_gate.redact import describe_target, redact_text
from migration_gate.target import PHASES, RealTargets, TargetState

PHASE_DIRS = ("tests_precheck", "tests_postcheck", "tests_integrity")
GATE = pytest.StashKey["GateSession"]()
_QUOTED = re.compile(r"(\"[^\"]*\"|'[^']*')")


class GateSession:
    """Per-run state: configuration, environment, report folder, outcomes per criterion."""

    def __init__(self, config: pytest.Config) -> None:
        try:
            self.gate: GateConfig = load_config(config.getoption("gate_config"))
            self.env = load_environment()
        except ConfigError as exc:
            raise pytest.UsageError(f"migration-gate: {exc}") from None
        self.started = datetime.now(UTC)
        run_dir = config.getoption("gate_run_dir") or (
            self.env.reports_dir / f"{self.started:%Y%m%dT%H%M%SZ}-{_slug(config.getoption('markexpr')) or 'all'}")
        self.run_dir = Path(run_dir)
        self.server_version = "embedded sandbox"
        if not self.env.embedded:
            self.server_version = _probe(self.env.database_url)
        self.outcomes: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._targets = None
        self.patients = config.getoption("gate_patients")

    @property
    def targets(self):
        if self._targets is None:
            if self.env.embedded:
                from sandbox.phases import SandboxTargets  # the sandbox is only needed without DATABASE_URL
                self._targets = SandboxTargets(self.gate, self.run_dir / "sandbox", self.patients)
            else:
                self._targets = RealTargets(self.env)
        return self._targets

    @property
    def key(self) -> str:
        if self.env.phi_key and not self.env.embedded:
            return self.env.phi_key
        from sandbox.synthetic import SANDBOX_KEY
        return SANDBOX_KEY

    def metadata(self) -> dict[str, str]:
        return {
            "Target": "embedded sandbox" if self.env.embedded else describe_target(self.env.database_url),
            "Server version": self.server_version,
            "API": self.env.api_base_url or ("sandbox reference API" if self.env.embedded else "not configured"),
            "Migration file": str(self.gate.migration_file.relative_to(ROOT)
                                  if self.gate.migration_file.is_relative_to(ROOT) else self.gate.migration_file),
            "Migration sha256": hashlib.sha256(self.gate.migration_file.read_bytes()).hexdigest(),
            "Configuration": str(self.gate.path),
            "Run by": getpass.getuser(),
            "Started (UTC)": self.started.isoformat(timespec="seconds"),
        }


def _slug(text: str | None) -> str:
    return re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-")


def _probe(dsn: str) -> str:
    """Connect once at start so an unreachable target stops the run with one line, not one per test."""
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else exc.__class__.__name__
        raise pytest.UsageError(redact_text(f"migration-gate: target database {describe_target(dsn)} is "
                                            f"unreachable: {last}")) from None


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
    group.addoption("--gate-config", default=None, help="migration description (default: migration.toml)")
    group.addoption("--gate-run-dir", default=None, help="folder for this run's reports (default: reports/<run>)")
    group.addoption("--gate-patients", type=int, default=None,
                    help="patients to seed when running on the embedded sandbox (default: from the config)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "criterion(id): the checklist criterion a phase test proves")
    if not _is_phase_run(config):
        return
    session = GateSession(config)
    config.stash[GATE] = session
    checks.RECORDER = []
    session.run_dir.mkdir(parents=True, exist_ok=True)
    name = _slug(config.getoption("markexpr")) or "all"
    if not config.option.htmlpath:
        config.option.htmlpath = str(session.run_dir / f"{name}.html")
        config.option.self_contained_html = True
    if not config.option.xmlpath:
        config.option.xmlpath = str(session.run_dir / f"{name}.xml")


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


def _progress_line(record: dict) -> None:
    """For a parent process showing progress (the gate): one JSON line per event in GATE_PROGRESS_FILE."""
    path = os.environ.get("GATE_PROGRESS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.stash.get(GATE, None) is not None:
        _progress_line({"total": len(session.items)})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _progress_line({"done": report.nodeid, "outcome": report.outcome})


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Phase tests are parametrized from the description: a table added there is checked with no code change.
    What the description does not have (no [tenancy], say) yields no test, and pytest says so."""
    session = metafunc.config.stash.get(GATE, None)
    if session is None:
        return
    for name, fan_out in _DESCRIBED.items():
        if name in metafunc.fixturenames:
            params = fan_out(session.gate)
            metafunc.parametrize(name, [value for _, value in params], ids=[label for label, _ in params])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("criterion")
        if marker and phase_of(item):
            item.user_properties.append(("criterion", marker.args[0]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if phase_of(item) is None or item.config.stash.get(GATE, None) is None:
        return report
    if report.failed and call.excinfo is not None:
        report.longrepr = _safe_failure(item, call.excinfo)
    report.sections = [(title, redact_text(_QUOTED.sub("'…'", text))) for title, text in report.sections]
    marker = item.get_closest_marker("criterion")
    if marker and (report.when == "call" or report.failed or report.skipped):
        item.config.stash[GATE].outcomes[marker.args[0]].append((item.nodeid, report.outcome, report.when))
    return report


def _safe_failure(item: pytest.Item, excinfo: pytest.ExceptionInfo) -> str:
    """A failure report without values: our checks' messages as they are, anything else reduced to its type
    and first line with quoted parts masked (database errors quote the offending values)."""
    exc = excinfo.value
    if isinstance(exc, CheckFailed):
        return f"{item.nodeid}\n{exc}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{item.nodeid}\n{exc.__class__.__name__}: {redact_text(_QUOTED.sub(chr(39) + '…' + chr(39), first))}"


def pytest_html_results_summary(prefix: list, summary: list, postfix: list, session: pytest.Session) -> None:
    gate = session.config.stash.get(GATE, None)
    if gate is None:
        return
    rows = []
    for cid, outcomes in sorted(criteria_outcomes(gate).items()):
        verdict, tests = outcomes
        rows.append(f"<tr><td>{cid}</td><td>{_html(CRITERIA[cid].text)}</td><td>{verdict}</td>"
                    f"<td>{'<br>'.join(_html(t) for t in tests)}</td></tr>")
    postfix.append("<h2>Checklist criteria</h2><table><tr><th>Criterion</th><th>Text</th><th>Result</th>"
                   "<th>Tests</th></tr>" + "".join(rows) + "</table>")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def criteria_outcomes(gate: GateSession) -> dict[str, tuple[str, list[str]]]:
    found = {}
    for cid, results in gate.outcomes.items():
        outcomes = {o for _, o, _ in results}
        verdict = "failed" if "failed" in outcomes else "skipped" if outcomes == {"skipped"} else "passed"
        found[cid] = (verdict, sorted({n for n, _, _ in results}))
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gate = session.config.stash.get(GATE, None)
    if gate is None:
        return
    outcomes = criteria_outcomes(gate)
    summary = {
        "metadata": gate.metadata(),
        "exitstatus": int(exitstatus),
        "criteria": {cid: {"text": CRITERIA[cid].text, "phase": CRITERIA[cid].phase, "result": verdict,
                           "tests": tests} for cid, (verdict, tests) in sorted(outcomes.items())},
        "checks": checks.RECORDER or [],
        "failure_criteria": {line: sorted(c for c in ids if outcomes.get(c, ("",))[0] == "failed")
                             for line, ids in FAILURE_CRITERIA.items()},
    }
    (gate.run_dir / f"criteria-{_slug(session.config.getoption('markexpr')) or 'all'}.json").write_text(
        json.dumps(summary, indent=2))
    if gate._targets is not None:
        gate._targets.close()


# -- fixtures ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _gate_suite_properties(pytestconfig: pytest.Config, record_testsuite_property) -> None:
    """The run's metadata (built without secrets) as JUnit XML suite properties."""
    session = pytestconfig.stash.get(GATE, None)
    if session is not None:
        for name, value in session.metadata().items():
            record_testsuite_property(name, value)


@pytest.fixture(scope="session")
def gate_session(pytestconfig: pytest.Config) -> GateSession:
    session = pytestconfig.stash.get(GATE, None)
    if session is None:
        pytest.fail("the phase fixtures need a phase-suite run (tests_precheck, tests_postcheck, tests_integrity)")
    return session


@pytest.fixture(scope="session")
def gate_config(gate_session: GateSession) -> GateConfig:
    return gate_session.gate


@pytest.fixture(scope="session")
def codec(gate_session: GateSession) -> PhiCodec:
    return PhiCodec(gate_session.key)


@pytest.fixture
def target(request: pytest.FixtureRequest, gate_session: GateSession) -> TargetState:
    phase = phase_of(request.node)
    if phase is None:
        pytest.fail("a phase test needs a phase marker (premigration, backup, postmigration, integrity, rollback)")
    return gate_session.targets.state(phase)


@pytest.fixture
def db(target: TargetState) -> Iterator[psycopg.Connection]:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def catalog(db: psycopg.Connection) -> Catalog:
    """The target's catalog, inspected once for the test (every schema check reads this one model)."""
    return inspect(db)


@pytest.fixture
def baseline_db(target: TargetState, gate_session: GateSession) -> Iterator[psycopg.Connection]:
    """The legacy data as it was at backup time."""
    try:
        dsn = gate_session.targets.baseline(target)
    except LookupError as exc:
        pytest.fail(str(exc))
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def api(target: TargetState, gate_session: GateSession) -> Iterator[httpx.Client]:
    if not target.api_base_url:
        pytest.fail("API_BASE_URL is not set: the API checks need the app's address")
    with httpx.Client(base_url=target.api_base_url, timeout=30, headers=gate_session.env.api_headers) as client:
        yield client


@pytest.fixture
def api_credentials(target: TargetState) -> tuple[str, str]:
    if not (target.api_username and target.api_password):
        pytest.fail("GATE_API_USERNAME and GATE_API_PASSWORD are not set: the API checks log in as that user")
    return target.api_username, target.api_password


@pytest.fixture
def api_user_id(db: psycopg.Connection, api_credentials: tuple[str, str], gate_config: GateConfig) -> object:
    """The fixture user's key in the users table the description names ([api] users)."""
    users = gate_config.api.users
    if users is None:
        pytest.fail("the description has no [api] users table: the API counts need the fixture user's id")
    row = db.execute(sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
        sql.Identifier(users.key), sql.Identifier(users.schema, users.table), sql.Identifier(users.username)),
        (api_credentials[0],)).fetchone()
    if row is None:
        pytest.fail(f"the fixture user (GATE_API_USERNAME) does not exist in {users.table}")
    return row[0]
