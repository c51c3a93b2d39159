"""The window, forecast (issue 13 item 3): from a real earlier rehearsal under the reports folder, scaled to the
target's live size, `cutover --dry-run` prints each phase and the downtime against the budgets and exits 4 when
one breaks (naming it; --accept-forecast passes); the cut-over refuses before maintenance on the same terms; a
rehearsal records its sizes and forecast, and its sign-off shows forecast against actual.

One rehearsal in this module (240 patients), forecast from the session's rehearsal (120 patients, tests/conftest),
then one small sandbox on the legacy schema (480 patients: the data grew) for the dry runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from migration_gate.config import TARGET_VARIABLES, load_config
from migration_gate.core.progress import Progress
from migration_gate.report import signoff
from migration_gate.run import forecast
from migration_gate.run.runstate import RunState, schema_state
from sandbox.target import Sandbox
from tests.conftest import ROOT
from tests.support.preflight import cutover, environment, write_config


@pytest.fixture(scope="module")
def reports(rehearsal, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reports folder holding a copy of the session's rehearsal (state.json and the suites' JUnit files)."""
    done, session_reports = rehearsal
    assert done.returncode == 0, done.stderr[-2000:]
    folder = tmp_path_factory.mktemp("forecast-reports")
    source = next(session_reports.glob("rehearsal-*/state.json")).parent
    copy = folder / source.name
    copy.mkdir()
    shutil.copy(source / "state.json", copy)
    for xml in source.glob("*/*.xml"):
        (copy / xml.parent.name).mkdir(exist_ok=True)
        shutil.copy(xml, copy / xml.parent.name)
    return folder


@pytest.fixture(scope="module")
def rehearsed(reports: Path) -> dict:
    """A rehearsal at twice the size, in the same reports folder: it forecasts from the session's run."""
    env = {k: v for k, v in os.environ.items() if k not in TARGET_VARIABLES + ("GATE_CONFIG",)}
    env.update({"CI": "true", "GATE_SANDBOX": "1"})
    done = subprocess.run(["bash", str(ROOT / "scripts" / "rehearse"), "--patients", "240", "--json", "--quiet",
                           "--reports", str(reports)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    """The target of the dry runs: the legacy schema, grown to 480 patients, its API and hooks."""
    sandbox = Sandbox(workdir=tmp_path_factory.mktemp("forecast") / "sandbox", patients=480,
                      progress=Progress(quiet=True)).start()
    yield sandbox
    sandbox.stop()


def _config(folder: Path, old: str = "", new: str = "") -> Path:
    config = write_config(folder, folder / "calls")
    if old:
        text = config.read_text()
        assert old in text, old
        config.write_text(text.replace(old, new, 1))
    return config


def test_a_rehearsal_records_its_sizes_and_its_sign_off_shows_forecast_against_actual(rehearsed: dict) -> None:
    state = json.loads((Path(rehearsed["run_dir"]) / "state.json").read_text())
    assert state["sizes"]["tables"]["clients_hipaa"]["rows"] == 240 and state["sizes"]["database_bytes"] > 0
    made = state["forecast"]
    assert made["source"].startswith("rehearsal-") and made["source"] != Path(rehearsed["run_dir"]).name
    scaled = {p["name"]: p["scale"] for p in made["phases"]}
    assert 1.7 < scaled["premigration"] < 2.3 and scaled["maintenance"] is None and scaled["backup"] > 1
    assert "by rows of 7 tables" in made["method"]
    rows = {r["name"]: r for r in rehearsed["forecast"]["against_actual"]}
    assert set(rows) == {*scaled, "downtime"} and all(r["forecast"] and r["actual"] for r in rows.values())
    signoff = Path(rehearsed["signoff"]).read_text()
    section = signoff[signoff.index("id='forecast'"):signoff.index("id='success'")]
    assert f"from run {made['source']}" in section
    for name, row in rows.items():
        assert f"<tr><td>{name}</td><td>{row['forecast']:.1f} {row['unit']}</td><td>{row['actual']:.1f} " in section


def test_the_dry_run_forecasts_each_phase_from_the_newest_run_scaled_to_the_target(
        box: Sandbox, reports: Path, rehearsed: dict, tmp_path: Path) -> None:
    done = cutover("--dry-run", "--json", env=environment(box, _config(tmp_path), reports))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    plan = json.loads(done.stdout)
    made = plan["forecast"]
    assert plan["ready"] and made["source"] == Path(rehearsed["run_dir"]).name and made["breaks"] == []
    phases = {p["name"]: p for p in made["phases"]}
    assert 1.7 < phases["integrity"]["scale"] < 2.3, phases["integrity"]  # 240 -> 480 patients
    assert phases["deploy"]["seconds"] == phases["deploy"]["source_seconds"]  # a hook and a wait: unscaled
    assert made["downtime_minutes"] > 0 and [t["name"] for t in made["timeboxes"]] == [
        "premigration", "backup", "migration", "verification", "deploy", "golive"]
    with psycopg.connect(box.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"


def test_a_forecast_over_a_budget_refuses_naming_the_timebox_unless_accepted(
        box: Sandbox, reports: Path, rehearsed: dict, tmp_path: Path) -> None:
    env = environment(box, _config(tmp_path, "verification = 30", "verification = 0.02"), reports)
    done = cutover("--dry-run", env=env)
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-2000:]
    assert "  BREAKS timebox verification (integrity, postmigration): forecast " in done.stdout
    assert "> budget 0.02 min" in done.stdout and "Not ready: the forecast breaks 1 budget(s)" in done.stdout
    accepted = cutover("--dry-run", "--json", "--accept-forecast", env=env)
    assert accepted.returncode == 0, accepted.stdout[-3000:]
    plan = json.loads(accepted.stdout)
    assert plan["ready"] and plan["forecast_accepted"] and len(plan["forecast"]["breaks"]) == 1
    # the cut-over itself refuses before anything changes, and records why; the attestations stay pending
    real = cutover("--quiet", env=env)
    assert real.returncode == 4, real.stdout[-3000:] + real.stderr[-2000:]
    lines = [line for line in real.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cutover: refusing to start, nothing was changed: the forecast "
                                                   "breaks 1 budget(s): timebox verification"), real.stderr
    assert not (tmp_path / "calls").exists(), "a hook ran"
    refused = [json.loads(p.read_text()) for p in reports.glob("cutover-*/state.json")]
    assert [s["status"] for s in refused] == ["refused"] and refused[0]["forecast"]["breaks"]
    assert (reports / "pending-attestations.jsonl").is_file()
    with psycopg.connect(box.dsn) as conn:
        assert schema_state(conn, load_config()) == "legacy"


def test_a_forecast_over_the_downtime_limit_is_named(box: Sandbox, reports: Path, rehearsed: dict,
                                                    tmp_path: Path) -> None:
    env = environment(box, _config(tmp_path, "downtime_minutes = 180", "downtime_minutes = 0.01"), reports)
    done = cutover("--dry-run", "--json", env=env)
    assert done.returncode == 4
    breaks = json.loads(done.stdout)["forecast"]["breaks"]
    assert len(breaks) == 1 and breaks[0].startswith("downtime: forecast ") and breaks[0].endswith("> limit 0.01 min")


def test_without_an_earlier_run_there_is_no_forecast_and_nothing_refused(box: Sandbox, tmp_path: Path) -> None:
    env = environment(box, _config(tmp_path, "verification = 30", "verification = 0.02"), tmp_path / "reports")
    done = cutover("--dry-run", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Forecast: none: no earlier run of this migration file (sha256 " in done.stdout
    assert "Ready: the cut-over can start." in done.stdout


@pytest.mark.rehearsal
@pytest.mark.parametrize("value", ['"half an hour"', "0", "true"])
def test_a_budget_that_is_not_a_positive_number_is_one_line(tmp_path: Path, value: str) -> None:
    config = _config(tmp_path, "migration = 30", f"migration = {value}")
    env = {k: v for k, v in os.environ.items() if k not in TARGET_VARIABLES} | {"GATE_CONFIG": str(config)}
    done = cutover("--dry-run", env=env)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "[budgets.phase_minutes] migration must be a number of minutes above zero" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_start_that_accepted_a_forecast_over_budget_says_so_in_the_sign_off(rehearsed: dict) -> None:
    """What --accept-forecast records (Gate.forecast_at_start) as the sign-off shows it, with the run's own figures."""
    run_dir = Path(rehearsed["run_dir"])
    state = RunState.load(run_dir)
    state.forecast["budgets"]["verification"] = 0.01
    state.forecast["accepted"] = {"by": "Release Manager", "at": "2026-12-05T01:00:00+00:00"}
    page = signoff.render(state, run_dir, {})
    assert ("Started although the forecast broke a budget (timebox verification (integrity, postmigration): "
            "forecast ") in page and "accepted (--accept-forecast) by Release Manager at 2026-12-05T01:00:00" in page


def test_measuring_never_waits_for_a_lock_the_app_holds(box: Sandbox) -> None:
    """The app is live when the forecast measures: a table locked by someone else is estimated from the catalog
    after [precheck] lock_timeout, never waited for."""
    gate = load_config()
    table = sorted(gate.legacy_schema)[1]
    with psycopg.connect(box.dsn) as holder:
        holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(gate.schema, table)))
        began = time.monotonic()
        sizes = forecast.measure(box.dsn, gate)
        waited = time.monotonic() - began
    assert waited < 10, waited  # [precheck] lock_timeout 2s, for the table and for the database's total
    assert sizes["tables"][table]["estimated"] and sizes["database_bytes"] > 0
    assert all(not t.get("estimated") for name, t in sizes["tables"].items() if name != table)
