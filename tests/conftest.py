"""Fixtures for our own tests: one embedded cluster per session, databases cloned from seeded templates.

Everything runs as what a hosted PostgreSQL gives its customer: ``pg.dsn()`` is the cluster's owner role
(LOGIN NOSUPERUSER CREATEDB), which creates, seeds and owns every database here, and is what the suites and checks
connect as. The app's role of migration.toml [app_role] exists with the legacy grants on the templates. Only
creating roles uses the bootstrap superuser (``pg.admin_dsn()``), and a test that needs it says so."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from migration_gate.backup import IDENTITY_ENV, RECIPIENTS_ENV, BackupKeys
from migration_gate.config import TARGET_VARIABLES, AnswersConfig, Probe, load_answers, load_config, load_probe
from migration_gate.db import migration
from migration_gate.db.embedded import EmbeddedPostgres
from sandbox.roles import create_app_role, grant_app_role
from sandbox.seed import seed_legacy
from sandbox.synthetic import SANDBOX_KEY

ROOT = Path(__file__).resolve().parent.parent
MIGRATION = ROOT / "sandbox" / "migrations" / "001_schema_refactor.sql"
ROLLBACK = ROOT / "sandbox" / "migrations" / "001_rollback.sql"
TEST_PATIENTS = 120
GATE = load_config()
_names = itertools.count(1)


# What a test needs, as markers (registered in pyproject.toml): `pytest tests -m "not cluster and not sandbox and not
# rehearsal"` (scripts/test --fast) is the unit lane. A test gets them from the fixtures it uses (these, and any that
# use them); a test that starts one itself carries the marker, and the lane guard below fails it when it does not.
CLUSTER_FIXTURES = frozenset({"pg", "new_db", "legacy_db", "migrated_db", "legacy_template", "migrated_template"})
SANDBOX_FIXTURES = frozenset({"sandbox", "box", "live", "server", "legacy_server", "hipaa_server", "hipaa", "legacy",
                              "wrong_flag", "broken"})  # the test modules' fixtures that start a Sandbox or the API
REHEARSAL_FIXTURES = frozenset({"rehearsal", "runs"})  # a whole rehearsal (test_canaries' runs: several)
LANES = {"cluster": CLUSTER_FIXTURES, "sandbox": SANDBOX_FIXTURES, "rehearsal": REHEARSAL_FIXTURES}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in LANES.items():
            if names & fixtures:
                item.add_marker(marker)
    # pytest-xdist hands out whole files in this order: the heaviest first, so the last minutes are many small files
    # spread over the workers, not one long file on one worker while the others idle. A file's weight: a sandbox or
    # rehearsal started for each of its tests (by a fixture, or in its own code) counts each time, one its tests
    # share counts once; the rest is small.
    # The sort is stable: a file's tests keep their order.
    weight: dict[Path, float] = {}
    shared: set[tuple[Path, str]] = set()
    for item in items:
        weight.setdefault(item.path, 0.0)
        defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        started = set(getattr(item, "fixturenames", ())) & (SANDBOX_FIXTURES | REHEARSAL_FIXTURES)
        for name in started:
            scope = defs[name][-1].scope if defs.get(name) else "function"
            if scope == "function" or (item.path, name) not in shared:
                weight[item.path] += 10
                shared.add((item.path, name))
        if not started and (item.get_closest_marker("sandbox") or item.get_closest_marker("rehearsal")):
            weight[item.path] += 10  # marked by hand: it starts one in its own code
        weight[item.path] += 0.1
    items.sort(key=lambda item: -weight[item.path])


def _gate_command(args: object) -> bool:
    """A child that runs the gate, a phase suite or a script of ours (not `git`, not `pg_config`)."""
    argv = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
    return any("/scripts/" in a or a.startswith("scripts/") for a in argv) or any(
        a == "-m" and nxt.split(".")[0] in ("pytest", "migration_gate", "sandbox", "tests")
        for a, nxt in zip(argv, argv[1:], strict=False))


@contextlib.contextmanager
def _lane_guard(item: pytest.Item) -> Iterator[None]:
    """The unit lane starts no cluster, no sandbox or reference API and no gate in a child: a test without a marker
    that does (in its own code or a fixture it sets up) fails, naming the marker it needs."""
    if any(item.get_closest_marker(marker) for marker in LANES):
        yield
        return
    from sandbox.api_process import ApiProcess
    from sandbox.target import Sandbox

    def refuse(what: str, marker: str):
        def refused(*args: object, **kwargs: object):
            raise RuntimeError(f"{item.nodeid} {what}: mark it @pytest.mark.{marker} (tests/conftest.py)")
        return refused

    popen = subprocess.Popen.__init__

    def child(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
        if _gate_command(args):
            refuse("runs the gate, a suite or a script in a child", "rehearsal")()
        popen(self, args, *rest, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Sandbox, "start", refuse("starts a seeded sandbox", "sandbox"))
        patch.setattr(ApiProcess, "start", refuse("starts the reference API", "sandbox"))
        patch.setattr(EmbeddedPostgres, "start", refuse("starts an embedded cluster", "cluster"))
        patch.setattr(subprocess.Popen, "__init__", child)
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _lane_guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _lane_guard(item):
        return (yield)


@pytest.fixture(scope="session", autouse=True)
def backup_keys() -> Iterator[BackupKeys]:
    """The operator's backup key pair for the whole test session, in the environment as an operator sets it
    (GATE_BACKUP_RECIPIENTS, GATE_BACKUP_IDENTITY as an owner-only identity file): every backup a test takes is
    encrypted, every restore decrypts, and the scripts a test starts inherit them."""
    keys = BackupKeys.generate()
    saved = {name: os.environ.get(name) for name in (IDENTITY_ENV, RECIPIENTS_ENV)}
    with tempfile.TemporaryDirectory(prefix="gate-test-keys-") as folder:
        identity = Path(folder) / "identity.txt"
        identity.write_text(keys.identity_file_text())
        identity.chmod(0o600)
        os.environ[IDENTITY_ENV], os.environ[RECIPIENTS_ENV] = str(identity), keys.recipients[0]
        try:
            yield keys
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def gate_keys(phi_key: str = SANDBOX_KEY) -> BackupKeys:
    """The backup keys as the gate holds them for a run (Gate._backup_keys): the session's key pair from the
    environment and the record's MAC keyed by the run's PHI key, which the gate hands its suites and scripts but
    which this test process does not have in its environment."""
    return BackupKeys.from_environment(phi_key=phi_key)


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as cluster:
        create_app_role(cluster, GATE.app_role)  # the superuser creates the app's role, as a host's console does
        yield cluster


CLASSIC_CONTRACT = Path(__file__).parent / "fixtures" / "classic_contract.toml"


def contract(overlay: Path = CLASSIC_CONTRACT) -> tuple[Probe, AnswersConfig]:
    """A second app's contract: the shipped description's [api.probe] and [answers] with an overlay's keys over
    them (tests/fixtures/classic_contract.toml: the reference API with SANDBOX_API_CONTRACT=classic)."""
    shipped = tomllib.loads(load_config().path.read_text())
    over = tomllib.loads(overlay.read_text())
    probe = shipped["api"].get("probe", {}) | over.get("api", {}).get("probe", {})
    return (load_probe(probe, f"{overlay.name} [api.probe]"),
            load_answers(shipped["answers"] | over.get("answers", {}), f"{overlay.name} [answers]"))


def _create(pg: EmbeddedPostgres, name: str, template: str | None = None) -> str:
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        if template:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                           sql.Identifier(template)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return pg.dsn(name)


@pytest.fixture(scope="session")
def legacy_template(pg: EmbeddedPostgres) -> str:
    """Name of a database seeded with TEST_PATIENTS legacy patients (seed 1); clone it, never change it."""
    dsn = _create(pg, "tpl_legacy")
    seed_legacy(dsn, TEST_PATIENTS, seed=1, workers=1)
    grant_app_role(dsn, GATE.app_role, sorted(GATE.legacy_schema), GATE.schema)
    return "tpl_legacy"


@pytest.fixture(scope="session")
def migrated_template(pg: EmbeddedPostgres, legacy_template: str) -> str:
    """Name of a database holding the legacy template after a clean 001 migration."""
    dsn = _create(pg, "tpl_migrated", legacy_template)
    migration.run_file(dsn, MIGRATION, SANDBOX_KEY)
    return "tpl_migrated"


@pytest.fixture
def new_db(pg: EmbeddedPostgres):
    """Factory: a fresh database (empty, or cloned from a template name); returns its DSN."""
    def make(template: str | None = None) -> str:
        return _create(pg, f"t{next(_names)}", template)
    return make


@pytest.fixture
def legacy_db(new_db, legacy_template: str) -> str:
    return new_db(legacy_template)


@pytest.fixture
def migrated_db(new_db, migrated_template: str) -> str:
    return new_db(migrated_template)


@pytest.fixture(scope="session")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """One rehearsal of the README's main command for the whole session (its output and reports folder): the tests
    of its verdict, its sign-off and how a browser shows them read the same run. In CI (a sandbox run by
    definition), with the GATE_SANDBOX=1 the job sets. Under pytest-xdist the first worker to ask runs it and the
    others wait for it and read the same folder (a rehearsal is ~20 s of CPU; its readers only read)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the session's folder, not older ones
    reports, record = shared / "rehearsal", shared / "rehearsal.json"
    with open(shared / "rehearsal.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            reports.mkdir(mode=0o700, exist_ok=True)  # as mktemp makes it: the run folders inside are 0700 too
            env = {k: v for k, v in os.environ.items() if k not in TARGET_VARIABLES + ("GATE_CONFIG",)}
            env.update({"CI": "true", "GATE_SANDBOX": "1"})
            done = subprocess.run(["bash", str(ROOT / "scripts" / "rehearse"), "--patients", "120", "--json",
                                   "--quiet", "--reports", str(reports)],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
            record.write_text(json.dumps({"args": done.args, "returncode": done.returncode, "stdout": done.stdout,
                                          "stderr": done.stderr}))
    said = json.loads(record.read_text())
    return subprocess.CompletedProcess(said["args"], said["returncode"], said["stdout"], said["stderr"]), reports
