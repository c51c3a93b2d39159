"""Waivers, never silence: a known fault a team goes live with is recorded in [[waivers]] (criterion, finding,
reason, who decided, expiry); a finding it matches shows as "waived" in the results, the reports and the
sign-off, never hidden; an expired waiver, or one that matches nothing, is red; a bad one is one line.

The finding is real: a column the description does not know, added to a migrated database, makes POST-01 red
(the post-migration suite's schema test, run alone against it as DATABASE_URL)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import psycopg
import pytest

from migration_gate.app.hooks import CutoverTarget, ShellHooks
from migration_gate.config import ConfigError, load_config
from migration_gate.core.phi import PhiCodec
from migration_gate.core.progress import Progress
from migration_gate.report import signoff
from migration_gate.report.verdict import finish_run
from migration_gate.run import suites
from migration_gate.run.gate import Gate
from migration_gate.run.runstate import PLAN, PhaseRecord, RunState
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import ROOT
from tests.support.suites import run_suite
from tests.support.waivers import TOMORROW, YESTERDAY, description, waiver

SCHEMA_TEST = "test_every_new_table_has_its_columns_and_types_and_no_leftovers"


def finding(column: str) -> str:
    return f'"public"."organizations"."{column}" is in the database but not in the description'


def schema_check(dsn: str, config: Path, run_dir: Path) -> tuple[int, dict, str]:
    """POST-01's test alone against the database: exit code, the results as data, the terminal's text."""
    done = run_suite("-m", "postmigration", "-k", SCHEMA_TEST, str(ROOT / "tests_postcheck" / "test_schema.py"),
                     f"--gate-results={run_dir / 'postmigration' / 'criteria-postmigration.json'}",
                     run_dir=run_dir / "postmigration",
                     env={"DATABASE_URL": dsn, "PHI_ENCRYPTION_KEY": SANDBOX_KEY, "GATE_CONFIG": str(config)})
    results = suites.read_results(run_dir / "postmigration" / "criteria-postmigration.json")
    assert results is not None, done.stdout[-3000:] + done.stderr[-2000:]
    return done.returncode, results, done.stdout + done.stderr


def add_columns(dsn: str, *columns: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for column in columns:
            conn.execute(f"ALTER TABLE organizations ADD COLUMN {column} integer")


def test_a_waived_finding_passes_its_phase_as_waived_and_the_sign_off_says_so(migrated_db: str,
                                                                               tmp_path: Path) -> None:
    add_columns(migrated_db, "legacy_flag")
    code, results, out = schema_check(migrated_db, description(tmp_path, waiver(finding("legacy_flag"))), tmp_path)
    assert code == 0, out[-3000:]
    test = next(t for t in results["tests"] if SCHEMA_TEST in t["nodeid"])
    assert test["outcome"] == "waived" and [w["finding"] for w in test["waived"]] == [finding("legacy_flag")]
    assert test["waived"][0]["decided_by"] == "Jane Doe (compliance officer)"
    assert results["criteria"]["POST-01"]["result"] == "waived" and results["counts"]["waived"] == 1
    assert [(w["status"], w["red"]) for w in results["waivers"]] == [("matched", False)]
    assert suites.judge(code, results, out) == (
        True, "checks: 1 passed only by waivers in " + f"{results['duration']:.1f} s; 1 finding(s) waived "
        "([[waivers]], see the sign-off)")
    assert "1 waived in" in out and "TICKET-123" in out, out
    junit = ET.parse(tmp_path / "postmigration" / "postmigration.xml").getroot()
    case = next(c for c in junit.iter("testcase") if c.get("name") == SCHEMA_TEST)
    assert case.find("failure") is None
    assert [p.get("value") for p in case.iter("property") if p.get("name") == "waived"][0].startswith(
        finding("legacy_flag") + " - waived by POST-01")
    assert "Passed (waived)" in (tmp_path / "postmigration" / "postmigration.html").read_text()

    state = RunState(run_dir=str(tmp_path), target="t", migration_file="m", migration_sha256="0" * 64,
                     phases=[PhaseRecord(name, status="passed") for name in PLAN], status="green")
    page = signoff.render(state, tmp_path, {})
    waivers = page[page.index("id='waivers'"):]
    assert "Waivers" in waivers and finding("legacy_flag").replace('"', "&quot;") in waivers
    assert "Jane Doe (compliance officer)" in waivers and TOMORROW.isoformat() in waivers
    for as_json in (False, True):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exit_code = finish_run(argparse.Namespace(json=as_json), load_config(), state, {})
        assert exit_code == 0
        if as_json:
            summary = json.loads(printed.getvalue())
            assert [w["finding"] for w in summary["waived"]] == [finding("legacy_flag")]
        else:
            assert "Verdict: GREEN with 1 waived finding" in printed.getvalue()


def test_an_unwaived_second_finding_keeps_the_test_red_and_names_what_was_waived(migrated_db: str,
                                                                                  tmp_path: Path) -> None:
    add_columns(migrated_db, "legacy_flag", "stray_column")
    pattern = finding(r"legacy_\w+").replace(".", r"\.")  # a pattern of the whole line waives it as well
    code, results, out = schema_check(migrated_db, description(tmp_path, waiver(pattern, key="finding_regex")),
                                      tmp_path)
    assert code == 1
    test = next(t for t in results["tests"] if SCHEMA_TEST in t["nodeid"])
    assert test["outcome"] == "failed" and test["problems"] == [finding("stray_column")]
    assert [w["finding"] for w in test["waived"]] == [finding("legacy_flag")]
    assert results["criteria"]["POST-01"]["result"] == "failed"
    assert "waived ([[waivers]]), not counted above: 1" in out
    green, detail = suites.judge(code, results, out)
    assert not green and finding("stray_column") in detail


def test_an_expired_waiver_and_one_that_matches_nothing_are_red(migrated_db: str, tmp_path: Path) -> None:
    add_columns(migrated_db, "legacy_flag")
    config = description(tmp_path, waiver(finding("legacy_flag"), expires=YESTERDAY),
                         waiver(finding("long_gone")))
    code, results, out = schema_check(migrated_db, config, tmp_path)
    assert code == 1
    test = next(t for t in results["tests"] if SCHEMA_TEST in t["nodeid"])
    assert test["outcome"] == "failed" and test["problems"] == [finding("legacy_flag")]  # expired: waives nothing
    assert [(w["status"], w["red"]) for w in results["waivers"]] == [("expired", True), ("unused", True)]
    green, detail = suites.judge(code, results, out)
    assert not green
    assert f"waiver POST-01 '{finding('legacy_flag')}': expired on {YESTERDAY.isoformat()}" in detail
    assert f"waiver POST-01 '{finding('long_gone')}': matched nothing in this run of POST-01" in detail
    assert "RED waiver POST-01" in out

    with psycopg.connect(migrated_db, autocommit=True) as conn:  # every test green: the unused waiver alone is red
        conn.execute("ALTER TABLE organizations DROP COLUMN legacy_flag")
    code, results, out = schema_check(migrated_db, description(tmp_path, waiver(finding("long_gone"))),
                                      tmp_path / "clean")
    assert code == 1 and results["counts"]["passed"] == 1 and results["waivers"][0]["status"] == "unused", out
    assert not suites.judge(code, results, out)[0]



def test_an_expired_waiver_is_red_in_the_pre_checks_before_any_cut_over_starts(legacy_db: str,
                                                                                tmp_path: Path) -> None:
    expired = description(tmp_path, waiver("GET /api/therapists: 1 values look like a bcrypt hash", YESTERDAY,
                                           criterion="POST-09"))
    done = run_suite("-m", "premigration", "-k", "test_phi_key_is_present_and_64_hex_characters",
                     str(ROOT / "tests_precheck"), f"--gate-results={tmp_path / 'pre.json'}", run_dir=tmp_path / "pre",
                     env={"DATABASE_URL": legacy_db, "PHI_ENCRYPTION_KEY": SANDBOX_KEY, "GATE_CONFIG": str(expired)})
    results = suites.read_results(tmp_path / "pre.json")
    assert done.returncode == 1 and results["counts"]["passed"] == 1, done.stdout[-3000:]
    assert [w["status"] for w in results["waivers"]] == ["expired"]
    assert f"expired on {YESTERDAY.isoformat()}" in suites.judge(done.returncode, results, done.stdout)[1]


def test_the_gate_passes_a_phase_whose_only_finding_is_waived(legacy_db: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-check suite as the gate runs it (one test of it: PRE-05, red for a plaintext value): the phase is
    green from the results it wrote, and its detail counts the waived finding."""
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        email = PhiCodec(SANDBOX_KEY).decrypt(
            conn.execute("SELECT email_encrypted FROM clients_hipaa WHERE id = 2").fetchone()[0])
        conn.execute("UPDATE clients_hipaa SET email_encrypted = %s WHERE id = 2", (email,))
    monkeypatch.setenv("PYTEST_PLUGINS", "tests.support.decoy_output")  # it keeps only the tests named here
    monkeypatch.setenv("GATE_DECOY_KEEP", "test_every_legacy_phi_value_is_well_formed_v1_ciphertext")
    known = "clients_hipaa.email_encrypted: 1 values are not v1 ciphertext (first ids: 2)"
    gate = load_config(description(tmp_path, waiver(known, criterion="PRE-05")))
    target = CutoverTarget(dsn=legacy_db, key=SANDBOX_KEY, api_base_url="", api_username="", api_password="",
                           hooks=ShellHooks({}))
    runner = Gate(gate, target, tmp_path / "run", Progress(quiet=True))
    record = runner.state.phase("premigration")
    assert runner.run_suite("premigration", record), record.detail
    assert "1 passed only by waivers" in record.detail and "1 finding(s) waived" in record.detail, record.detail
    assert [w["finding"] for w in signoff.waived_findings(tmp_path / "run")] == [known]
    assert email.strip() not in (tmp_path / "run" / "premigration" / "criteria-premigration.json").read_text()


@pytest.mark.parametrize("entry, message", [
    (waiver("x", criterion="POST-99"), "[[waivers]] item 1: criterion POST-99 is not a checklist criterion"),
    (waiver("x").replace('reason = "the app\'s own column; dropped in TICKET-123"\n', ""),
     "[[waivers]] item 1: needs reason (a non-empty string)"),
    (waiver("x").replace(f"expires = {TOMORROW.isoformat()}", 'expires = "end of January"'),
     "[[waivers]] item 1: expires must be a date such as 2027-01-31"),
    (waiver("x").replace("finding = 'x'", "finding_regex = '('"),
     "[[waivers]] item 1: finding_regex is not a valid regular expression"),
])
def test_a_bad_waiver_is_one_configuration_line(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(description(tmp_path, entry))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_shipped_description_has_no_waivers() -> None:
    assert load_config().waivers == ()
