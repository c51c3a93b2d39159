"""The phase suites as a user runs them (`pytest -m <phase>` in a subprocess): green on the sandbox, one clear
line for bad configuration or an unreachable target, red on a broken real target, reports with every
criterion traced and no PHI or secrets anywhere in them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.core.criteria import CRITERIA
from migration_gate.core.phi import PhiCodec
from sandbox.api_process import ApiProcess
from sandbox.synthetic import DEMO_USERS, SANDBOX_KEY
from tests.conftest import ROOT, gate_keys
from tests.support.suites import known_phi, not_owner_only, run_suite

CODEC = PhiCodec(SANDBOX_KEY)


def report_text(run_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in run_dir.rglob("*")
                     if p.is_file() and p.suffix in (".html", ".xml", ".json"))


@pytest.mark.rehearsal
def test_a_phase_suite_run_by_hand_writes_its_run_folder_owner_only(tmp_path: Path) -> None:
    """`pytest -m premigration` from a shell with the usual umask 022: reports, state and folders are 0700/0600."""
    run_dir = tmp_path / "run"
    done = run_suite("-m", "premigration", run_dir=run_dir, umask=0o022)
    assert done.returncode == 0, done.stdout[-3000:]
    assert len(list(run_dir.rglob("*"))) > 2
    assert not_owner_only(run_dir) == [], "\n".join(not_owner_only(run_dir))


@pytest.mark.rehearsal
def test_every_phase_suite_is_green_on_the_sandbox_with_reports(tmp_path: Path) -> None:
    done = run_suite(run_dir=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    html, xml = tmp_path / "all.html", tmp_path / "all.xml"
    assert html.is_file() and xml.is_file()
    assert "<script" in html.read_text() and "Checklist criteria" in html.read_text()  # self-contained, traced
    suite = ET.parse(xml).getroot().find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["Target"] == "embedded sandbox" and len(properties["Migration sha256"]) == 64
    traced = {p.get("value") for p in suite.iter("property") if p.get("name") == "criterion"}
    assert traced == set(CRITERIA), f"criteria without a test: {sorted(set(CRITERIA) - traced)}"
    criteria = json.loads((tmp_path / "criteria-all.json").read_text())["criteria"]
    assert {c: v["result"] for c, v in criteria.items()} == dict.fromkeys(CRITERIA, "passed")


@pytest.mark.rehearsal
def test_each_phase_test_names_one_known_criterion_of_its_phase(tmp_path: Path) -> None:
    done = run_suite("--collect-only", "-q", "-p", "tests.support.criteria_dump", run_dir=tmp_path,
                     env={"CRITERIA_DUMP": str(tmp_path / "items.json")})
    assert done.returncode == 0, done.stdout[-2000:]
    items = json.loads((tmp_path / "items.json").read_text())
    assert len(items) > 60
    for nodeid, (phases, criteria) in items.items():
        assert len(phases) == 1, f"{nodeid} has phases {phases}"
        assert len(criteria) == 1 and criteria[0] in CRITERIA, f"{nodeid} names criteria {criteria}"
        assert CRITERIA[criteria[0]].phase == phases[0], f"{nodeid}: {criteria[0]} is not a {phases[0]} criterion"


@pytest.mark.rehearsal
@pytest.mark.parametrize("env, message", [
    ({"GATE_CONFIG": "/nonexistent/migration.toml"}, "configuration file /nonexistent/migration.toml not found"),
    ({"PHI_ENCRYPTION_KEY": "test-key-64-characters-long-for-testing-purposes-only"},
     "PHI_ENCRYPTION_KEY must be 64 hex characters, got 53 characters"),
    ({"DATABASE_URL": "postgresql://gate:s3cretpw@127.0.0.1:1/app", "PHI_ENCRYPTION_KEY": "ab" * 32},
     "target database 127.0.0.1:1/app is unreachable"),
    ({"DATABASE_URL": "postgresql://gate:s3cretpw@127.0.0.1:1/app"}, "DATABASE_URL is set but PHI_ENCRYPTION_KEY"),
])
def test_bad_configuration_stops_the_run_with_one_clear_line(tmp_path: Path, env: dict, message: str) -> None:
    done = run_suite("-m", "premigration", env=env, run_dir=tmp_path)
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1
    assert "s3cretpw" not in done.stderr + done.stdout


@pytest.mark.rehearsal
def test_a_malformed_configuration_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "migration.toml").read_text().replace('[budgets]\n', '[budgets\n', 1))
    done = run_suite("-m", "premigration", env={"GATE_CONFIG": str(bad)}, run_dir=tmp_path / "run")
    assert done.returncode == 4 and "is not valid TOML" in done.stderr and "Traceback" not in done.stderr


def test_a_broken_real_target_goes_red_with_phi_free_reports(legacy_db: str, tmp_path: Path) -> None:
    """DATABASE_URL mode against a database with plaintext PHI, a v2 value, an orphan and a duplicate."""
    phi = known_phi(legacy_db)
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        email = CODEC.decrypt(conn.execute("SELECT email_encrypted FROM clients_hipaa WHERE id = 2").fetchone()[0])
        conn.execute("UPDATE clients_hipaa SET email_encrypted = %s WHERE id = 2", (email,))
        conn.execute("UPDATE clients_hipaa SET phone_encrypted = 'v2' || substr(phone_encrypted, 3) WHERE id = 6")
        conn.execute("INSERT INTO therapist_phi (user_id) VALUES (1)")
    dump = backup.take_backup(legacy_db, tmp_path / "backups", keys=gate_keys()).path  # as the gate takes it
    with ApiProcess(legacy_db, SANDBOX_KEY, use_hipaa_schema=False, log_file=tmp_path / "api.log",
                    maintenance_file=tmp_path / "m.flag") as api:
        done = run_suite("-m", "premigration or backup", run_dir=tmp_path / "run", env={
            "DATABASE_URL": legacy_db, "PHI_ENCRYPTION_KEY": SANDBOX_KEY, "API_BASE_URL": api.base_url,
            "GATE_API_USERNAME": DEMO_USERS[0][0], "GATE_API_PASSWORD": DEMO_USERS[0][1], "BACKUP_FILE": dump})
    assert done.returncode == 1, done.stdout[-3000:]
    failed = {line.split("::")[1].split(" ")[0] for line in done.stdout.splitlines() if line.startswith("FAILED")}
    assert failed == {"test_every_legacy_phi_value_is_well_formed_v1_ciphertext", "test_no_duplicates_on_natural_keys",
                      "test_migration_and_rollback_rehearsed_on_a_scratch_copy",
                      # the legacy app itself answers 500 on the patient with a plaintext email: nothing to record
                      "test_the_apps_answers_are_recorded_on_the_legacy_schema"}, done.stdout[-3000:]
    assert "clients_hipaa.email_encrypted: 1 values are not v1 ciphertext (first ids: 2)" in done.stdout
    reports = report_text(tmp_path / "run")
    assert "clients_hipaa.email_encrypted: 1 values are not v1 ciphertext" in reports
    everything = reports + done.stdout + done.stderr
    leaked = [p for p in [*phi, email.strip(), SANDBOX_KEY] if p in everything]
    assert not leaked, f"{len(leaked)} PHI values or secrets in the output or reports"


@pytest.mark.rehearsal
@pytest.mark.parametrize("cwd", ["checkout", "elsewhere"])
def test_the_run_folder_option_takes_a_separate_path_outside_the_checkout_from_any_folder(tmp_path: Path,
                                                                                          cwd: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # an existing folder is what pytest took for a test path
    where = ROOT if cwd == "checkout" else tmp_path
    suites = [] if cwd == "checkout" else [str(ROOT / "tests_postcheck")]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GATE_PYTEST_REJOINED")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *suites, "-m", "postmigration",
                           "--gate-run-dir", str(run_dir), "--collect-only", "-q"],
                          cwd=where, env=env | {"GATE_SANDBOX": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    assert "unrecognized arguments" not in done.stderr
    assert "tests collected" in done.stdout and "tests_postcheck/" in done.stdout
    assert list(run_dir.iterdir()) == []  # taken as the option's folder, and --collect-only writes nothing there
