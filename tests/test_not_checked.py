"""A skipped check is "not checked", never passed: a criterion whose tests all skipped says so in the results, the
terminal and the sign-off, and the gate holds it red unless the description says why it does not apply
([[not_applicable]]: criterion, reason, decided_by; the sign-off shows the reason).

The case is real: POST-19 on a description whose [answers] lists no requests (it passed, comparing nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migration_gate.config import ConfigError, load_config
from migration_gate.core.criteria import criterion_result
from migration_gate.report import signoff
from migration_gate.run import suites
from migration_gate.run.runstate import PLAN, PhaseRecord, RunState
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import ROOT
from tests.support.suites import run_suite

ANSWERS_TEST = "test_the_app_gives_the_same_answers_as_before"
NOT_APPLICABLE = ('\n[[not_applicable]]\ncriterion = "POST-19"\nreason = "no read route to compare; INT-01..05 '
                  'compare the data"\ndecided_by = "Jane Doe (compliance officer)"\n')


def no_answers(tmp_path: Path, *extra: str) -> Path:
    """The shipped description with no [answers] requests (and these entries appended)."""
    path = tmp_path / "no-answers.toml"
    path.write_text(f'extends = "{ROOT / "migration.toml"}"\n' + "".join(extra) + "\n[answers]\nrequests = []\n")
    return path


def answers_check(dsn: str, config: Path, run_dir: Path) -> tuple[int, dict, str]:
    """POST-19's test alone against the database, as the gate runs a suite: exit code, results, terminal text."""
    results_file = run_dir / "postmigration" / "criteria-postmigration.json"
    done = run_suite("-m", "postmigration", "-k", ANSWERS_TEST, str(ROOT / "tests_postcheck" / "test_app.py"),
                     f"--gate-results={results_file}", "-rs", run_dir=run_dir / "postmigration",
                     env={"DATABASE_URL": dsn, "PHI_ENCRYPTION_KEY": SANDBOX_KEY, "GATE_CONFIG": str(config),
                          "API_BASE_URL": "http://127.0.0.1:9", "GATE_API_USERNAME": "nobody",
                          "GATE_API_PASSWORD": "unused"})
    results = suites.read_results(results_file)
    assert results is not None, done.stdout[-3000:] + done.stderr[-2000:]
    return done.returncode, results, done.stdout + done.stderr


def test_post_19_with_no_requests_is_not_checked_and_red_in_a_cut_over(migrated_db: str, tmp_path: Path) -> None:
    code, results, out = answers_check(migrated_db, no_answers(tmp_path), tmp_path)
    assert results["criteria"]["POST-19"]["result"] == "not checked", results["criteria"]
    assert results["not_checked"] == [{"criterion": "POST-19", "result": "not checked",
                                       "skipped": ["[answers] lists no requests: the app's answers are not compared"]}]
    assert "POST-19 not checked: [answers] lists no requests" in out, out[-2000:]
    green, detail = suites.judge(code, results, out)
    assert not green
    assert "NOT CHECKED: every test of the phase skipped (1): the phase checked nothing" in detail
    assert "POST-19 not checked: [answers] lists no requests" in detail and "[[not_applicable]]" in detail

    state = RunState(run_dir=str(tmp_path), target="t", migration_file="m", migration_sha256="0" * 64,
                     phases=[PhaseRecord(name, status="passed") for name in PLAN], status="red")
    page = signoff.render(state, tmp_path, {})
    assert "id='not-checked'" in page and "<td class='bad'>not checked</td>" in page


def test_a_criterion_declared_not_applicable_is_green_with_its_reason_in_the_sign_off(migrated_db: str,
                                                                                     tmp_path: Path) -> None:
    code, results, out = answers_check(migrated_db, no_answers(tmp_path, NOT_APPLICABLE), tmp_path)
    assert results["criteria"]["POST-19"]["result"] == "not applicable"
    green, detail = suites.judge(code, results, out)
    assert green, detail
    assert "POST-19 not applicable: no read route to compare" in detail and "Jane Doe" in detail
    state = RunState(run_dir=str(tmp_path), target="t", migration_file="m", migration_sha256="0" * 64,
                     phases=[PhaseRecord(name, status="passed") for name in PLAN], status="green")
    shown = signoff.render(state, tmp_path, {})
    shown = shown[shown.index("id='not-checked'"):]
    assert "no read route to compare; INT-01..05 compare the data" in shown and "Jane Doe (compliance officer)" in shown


def test_one_rule_decides_a_criterion_never_passed_when_skipped() -> None:
    assert criterion_result({"skipped"}, waived=False, not_applicable=False) == "not checked"
    assert criterion_result({"passed", "skipped"}, waived=False, not_applicable=False) == "partly checked"
    assert criterion_result({"skipped"}, waived=False, not_applicable=True) == "not applicable"
    assert criterion_result({"passed", "failed", "skipped"}, waived=False, not_applicable=True) == "failed"
    assert criterion_result({"passed"}, waived=True, not_applicable=False) == "waived"


@pytest.mark.parametrize("entry, message", [
    (NOT_APPLICABLE.replace("POST-19", "POST-99"), "[[not_applicable]] item 1: criterion POST-99 is not a checklist"),
    (NOT_APPLICABLE.replace('decided_by = "Jane Doe (compliance officer)"\n', ""),
     "[[not_applicable]] item 1: needs decided_by (a non-empty string)"),
    (NOT_APPLICABLE + 'expires = 2027-01-01\n', "[[not_applicable]] item 1: unknown key expires"),
    (NOT_APPLICABLE * 2, "[[not_applicable]]: POST-19 is declared not applicable twice"),
])
def test_a_bad_not_applicable_entry_is_one_configuration_line(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(no_answers(tmp_path, entry))
    assert message in str(raised.value) and "\n" not in str(raised.value)
