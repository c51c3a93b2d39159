"""One clean cut-over through the gate on the sandbox, read by each checklist line it proves (a cut-over is ~20 s
of CPU: the lines that only read a green run share one). The host's deploy returns at once and swaps the instance
seconds later (as Render's does), the backup is stored off the box, and each endpoint gets 30 timed requests
(not the shipped 40: the configured number is what is sent)."""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.backup import sha256_file
from migration_gate.config import GateConfig, load_config
from migration_gate.core.progress import Progress
from migration_gate.report import bundle, signoff
from migration_gate.run.gate import Gate
from migration_gate.run.runstate import RunState, schema_state
from sandbox.target import Sandbox
from tests.support.cutover import PATIENTS, SlowDeployHooks, cutover_target, performance_config, plaintext_dumps
from tests.support.suites import known_phi

pytestmark = pytest.mark.sandbox
STATS_KEYS = {"p50_ms", "p95_ms", "p99_ms", "errors", "requests"}


@dataclasses.dataclass
class CleanRun:
    box: Sandbox
    gate: GateConfig
    state: RunState
    run: Path
    phi: list[str]  # the seeded plaintext PHI, taken before the run


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CleanRun]:
    folder = tmp_path_factory.mktemp("clean-cutover")
    gate = dataclasses.replace(load_config(performance_config(folder, requests=30)), deploy_wait_seconds=30)
    with Sandbox(workdir=folder / "sandbox", patients=PATIENTS, progress=Progress(quiet=True)) as box:
        phi = known_phi(box.dsn)
        hooks = SlowDeployHooks(box.api, offsite=box.offsite)
        state = Gate(gate, cutover_target(box, hooks), folder / "run", Progress(quiet=True)).run()
        yield CleanRun(box, gate, state, folder / "run", phi)


def test_a_clean_cut_over_is_green_with_a_sign_off(clean: CleanRun, tmp_path: Path) -> None:
    state = clean.state
    assert state.status == "green", state.failure
    assert [p.status for p in state.phases] == ["passed"] * 8
    assert all(row["legacy_rows"] == row["new_rows"] for row in state.counts) and state.counts
    report = signoff.write(state, clean.run, {"Target": "sandbox"}).read_text()
    assert "Verdict: PASSED" in report and "POST-16" in report and "class='sign'" in report  # approval lines
    with psycopg.connect(clean.box.dsn) as conn:
        assert schema_state(conn, load_config()) == "migrated"
    # the attachable record: unpacked anywhere, every link of the sign-off works, every sha256 matches, no backup
    with zipfile.ZipFile(bundle.build(clean.run, tmp_path / "run.zip")) as packed:
        packed.extractall(tmp_path / "elsewhere")
    unpacked = tmp_path / "elsewhere" / "run"
    manifest = json.loads((unpacked / "manifest.json").read_text())
    assert all(sha256_file(unpacked / f["path"]) == f["sha256"] for f in manifest["files"]) and manifest["files"]
    assert not list(unpacked.rglob("*.age")) and {k["why"] for k in manifest["kept_back"]} == {
        "the backup: holds PHI (encrypted)"}
    links = re.findall(r"href='([^']+)'", (unpacked / "signoff.html").read_text())
    assert len(links) > 10 and all((unpacked / link).is_file() for link in links)


def test_the_deploy_waits_until_the_app_reports_the_new_schema_and_records_its_version(clean: CleanRun) -> None:
    deploy = clean.state.phase("deploy")
    assert deploy.seconds >= 2.5 and "the app reported the expected schema after" in deploy.detail
    assert clean.state.app_version == "sandbox-hipaa"


def test_a_cut_over_stores_the_encrypted_backup_off_the_box_and_leaves_no_plaintext(clean: CleanRun) -> None:
    box, state, run = clean.box, clean.state, clean.run
    b = state.backup
    assert b["encryption"] == "age" and b["recipients"] == list(box.backup_keys.recipients)
    assert b["location"].startswith("file://") and b["remote_verified"]
    remote = Path(b["location"].removeprefix("file://"))
    assert box.offsite in remote.parents and run not in remote.parents
    assert backup.sha256_file(remote) == b["sha256"] == backup.sha256_file(Path(b["path"]))
    assert "tables in" in b["change_check"] and b["change_check"].endswith(", 0 changed")
    assert not plaintext_dumps(run.parent, box.offsite)
    assert not list(Path(b["path"]).parent.glob("*.fetched"))
    report = signoff.write(state, run, {"Target": "sandbox"}).read_text()
    for fragment in (b["location"], b["sha256"], b["plaintext_sha256"], "Retention, local copy",
                     "7 days (until", "Retention, copy off the box", "age -d -i IDENTITY FILE"):
        assert fragment in report, fragment
    assert "NOT ENCRYPTED" not in report
    assert box.backup_keys.identities[0] not in report + (run / "state.json").read_text()
    pytest_outputs = "".join(p.read_text() for p in run.rglob("pytest-output.txt"))
    assert "AGE-SECRET-KEY" not in report + pytest_outputs + (run / "state.json").read_text()


def _checks(run: Path, phase: str) -> dict:
    return json.loads((run / phase / f"criteria-{phase}.json").read_text())


def test_a_cut_over_records_the_baseline_and_holds_the_new_schema_to_it(clean: CleanRun) -> None:
    gate, state, run = clean.gate, clean.state, clean.run
    assert gate.performance.requests == 30
    # the baseline, in the format another engineer's watch reads
    baseline = json.loads((run / "performance" / "baseline.json").read_text())
    assert baseline["schema"] == "legacy" and baseline["requests"] == gate.performance.requests
    datetime.fromisoformat(baseline["measured_at"])
    configured = [e.path for e in gate.endpoints]
    assert list(baseline["endpoints"]) == [p for p in configured if p != "/api/organizations"]
    assert baseline["absent"] == {"/api/organizations": "404"}  # the legacy app has no such route: said, no error
    for stats in baseline["endpoints"].values():
        assert set(stats) == STATS_KEYS and stats["errors"] == 0 and stats["requests"] == gate.performance.requests
        assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
    for name in ("postmigration", "golive"):  # the same requests on the new schema
        after = json.loads((run / "performance" / f"{name}.json").read_text())
        assert after["schema"] == "new" and list(after["endpoints"]) == configured and "absent" not in after
        assert all(s["errors"] == 0 and s["requests"] == gate.performance.requests for s in after["endpoints"].values())
        # optional, never required: the sandbox's database has no pg_stat_statements, and the measurement says so
        assert after["statements"] == {"available": False, "note": "pg_stat_statements is not installed in this "
                                       "database: no per-statement figures"}

    pre, post = _checks(run, "premigration"), _checks(run, "postmigration")
    assert pre["criteria"]["PRE-12"]["result"] == "passed" and post["criteria"]["POST-10"]["result"] == "passed"
    notes = next(c["notes"] for c in post["checks"] if c["check"].startswith("API p95 per endpoint"))
    assert any(re.match(r"GET /api/patients: p95 [\d.]+ ms on the new schema, [\d.]+ ms on the legacy baseline", n)
               for n in notes), notes
    assert any("/api/organizations: only on the new schema (the legacy app answered 404)" in n for n in notes)
    assert "endpoints within" in state.phase("golive").detail

    report = signoff.write(state, run, {"Target": "sandbox"}, sandbox=True).read_text()
    section = report[report.index("<h2 id='performance'>"):report.index("<h2 id='backup'>")]
    assert "<svg" in section and "<rect" in section and "<script" not in section
    assert all(path in section for path in configured) and "baseline (legacy)" in section and "go-live (new)" in section
    written = section + "".join(p.read_text() for p in (run / "performance").glob("*.json"))
    assert not [v for v in clean.phi if v in written] and gate.sandbox_password not in written
