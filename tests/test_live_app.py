"""The gate does not hurt the live app (issue 10, item 7): while a bounded load drives the sandbox API, the
pre-checks run as the gate runs them, and no app session ever waits on a lock a gate session holds; every
pre-check session carries [precheck]'s timeouts; and a table another session holds ACCESS EXCLUSIVE makes the
pre-checks that need it fail fast with a lock-timeout line instead of hanging."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from migration_gate.app.hooks import CutoverTarget
from migration_gate.app.load import LoadPlan, load_during, run_load
from migration_gate.config import ConfigError, load_config, load_precheck
from migration_gate.core.progress import Progress
from migration_gate.db.lockwatch import LockWatch
from migration_gate.run.gate import Gate
from sandbox.api_process import SandboxHooks
from sandbox.synthetic import SANDBOX_KEY
from sandbox.target import Sandbox
from tests.support.suites import run_suite

PATIENTS = 80
GATE = load_config()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    box = Sandbox(workdir=tmp_path_factory.mktemp("live") / "sandbox", patients=PATIENTS,
                  progress=Progress(quiet=True)).start()
    yield box
    box.stop()


def _plan(box: Sandbox, **bounds: float) -> LoadPlan:
    return LoadPlan.configured(GATE, box.api.base_url, GATE.sandbox_username, GATE.sandbox_password, **bounds)


def _suite_env(box: Sandbox, config: Path | None = None) -> dict[str, str]:
    env = {"DATABASE_URL": box.dsn, "PHI_ENCRYPTION_KEY": SANDBOX_KEY, "API_BASE_URL": box.api.base_url,
           "GATE_API_USERNAME": GATE.sandbox_username, "GATE_API_PASSWORD": GATE.sandbox_password}
    return env | ({"GATE_CONFIG": str(config)} if config else {})


def _results(run_dir: Path) -> dict:
    return json.loads(next(run_dir.rglob("criteria-*.json")).read_text())


@pytest.mark.parametrize("value", ["0", "0s", "", "soon", 2])
def test_a_precheck_timeout_that_would_wait_forever_or_is_not_a_duration_is_one_line(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^m.toml \[precheck\]: lock_timeout must be a duration above zero"):
        load_precheck({"lock_timeout": value}, "m.toml [precheck]")
    assert load_precheck(None, "m").settings() == {"lock_timeout": "2s", "statement_timeout": "10min"}


def test_the_load_is_bounded_and_leaves_out_routes_the_app_lacks(sandbox: Sandbox) -> None:
    report = run_load(_plan(sandbox, requests=40, max_seconds=20, workers=2))
    assert report.requests == 40 and report.errors == 0 and report.ended_by == "count"
    assert report.skipped == {"/api/organizations": "404"}  # no organizations before the cut-over
    assert set(report.paths) == {e.path for e in GATE.endpoints} - {"/api/organizations"}
    assert 0 < report.p(50) <= report.p(95) <= report.p(99)
    report = run_load(_plan(sandbox, requests=10**6, max_seconds=1.5, workers=2))
    assert report.ended_by == "duration" and report.seconds < 10 and report.errors == 0


def test_pre_checks_under_load_never_make_the_app_wait_on_a_gate_lock(sandbox: Sandbox, tmp_path: Path) -> None:
    target = CutoverTarget(dsn=sandbox.dsn, key=SANDBOX_KEY, api_base_url=sandbox.api.base_url,
                           api_username=GATE.sandbox_username, api_password=GATE.sandbox_password,
                           hooks=SandboxHooks(sandbox.api), app_log_file=sandbox.api.log_file)
    gate = Gate(GATE, target, tmp_path / "run", Progress(quiet=True))
    with LockWatch(sandbox.dsn, interval_s=0.05, app_role=GATE.app_role.name) as watch:
        load, state, seconds = load_during(_plan(sandbox, requests=20_000, max_seconds=240, workers=3),
                                           lambda: gate.run(only=["premigration"]))
    locks = watch.report
    phase = state.phase("premigration")
    assert phase.status == "passed", phase.detail
    assert load.ended_by == "stop" and load.requests > 50 and load.errors == 0, load.summary()
    assert locks.samples > seconds * 5 and locks.errors == 0, locks.line()
    assert locks.gate_sessions_max >= 1 and locks.app_sessions_max >= 1, locks.line()  # both were seen at work
    assert locks.blocked_by_gate == [] and locks.waits == [], locks.line()  # nor on any lock at all


def test_every_pre_check_session_carries_the_configured_timeouts(sandbox: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "migration.toml"
    text = GATE.path.read_text().replace('file = "sandbox/', f'file = "{GATE.path.parent}/sandbox/')
    config.write_text(text.replace('lock_timeout = "2s"\nstatement_timeout = "10min"',
                                   'lock_timeout = "1500ms"\nstatement_timeout = "7min"'))
    done = run_suite("-m", "premigration", "-k", "reachable", env=_suite_env(sandbox, config),
                     run_dir=tmp_path / "run")
    assert done.returncode == 0, done.stdout[-2000:]
    results = _results(tmp_path / "run")
    notes = [n for c in results["checks"] for n in c["notes"]]
    assert "session lock_timeout 1500ms, statement_timeout 7min" in notes, notes
    assert results["metadata"]["Pre-check sessions"].startswith("lock_timeout 1500ms, statement_timeout 7min")


def test_a_table_locked_by_another_session_fails_the_pre_checks_fast_with_a_lock_timeout(sandbox: Sandbox,
                                                                                         tmp_path: Path) -> None:
    held = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(sandbox.dsn) as conn:
            conn.execute("LOCK TABLE users_auth IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(120)

    holder = threading.Thread(target=hold_lock, daemon=True)
    holder.start()
    assert held.wait(10)
    try:
        began = time.monotonic()
        done = run_suite("-m", "premigration", "-k", "duplicates or scratch_copy", env=_suite_env(sandbox),
                         run_dir=tmp_path / "run")
        seconds = time.monotonic() - began
    finally:
        release.set()
        holder.join(10)
    assert done.returncode == 1, done.stdout[-2000:]
    assert seconds < 45, f"the pre-checks waited {seconds:.0f} s on the lock"  # [precheck] lock_timeout 2s
    failed = {t["nodeid"].rsplit("::", 1)[-1]: t["problems"] for t in _results(tmp_path / "run")["tests"]
              if t["outcome"] != "passed"}
    assert set(failed) == {"test_no_duplicates_on_natural_keys",
                           "test_migration_and_rollback_rehearsed_on_a_scratch_copy"}, failed
    for name, problems in failed.items():
        assert any("lock timeout" in line for line in problems), (name, problems)
