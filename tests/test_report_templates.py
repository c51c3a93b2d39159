"""The reports are rendered from templates with autoescape (migration_gate/report/render.py): a value a report
shows (a check's name, a note, a phase's detail, an attestation's note, a watch check's problem) can never become
markup, and a template that names data it was not given fails instead of leaving a cell empty."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from migration_gate.config import load_config
from migration_gate.report import render, signoff
from migration_gate.run import attest
from migration_gate.run.runstate import PLAN, PhaseRecord, RunState
from migration_gate.run.watchstate import CheckRecord, RoundRecord, WatchState
from migration_gate.watch import report as watchreport
from tests.conftest import ROOT

SCRIPT = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"


def _page_with_markup_in_every_field(run_dir: Path) -> str:
    (run_dir / "integrity").mkdir()
    check = {"check": f"migration and rollback rehearsed {SCRIPT}", "checked": 3, "problems": 1, "unit": "values",
             "notes": [f"copy {SCRIPT}"], "compared": {"legacy": 3, "new": 3, "matched": 2, "unit": SCRIPT}}
    (run_dir / "integrity" / "criteria-integrity.json").write_text(json.dumps({
        "criteria": {"INT-01": {"result": "failed", "tests": [f"t.py::test_{SCRIPT}"]}},
        "checks": [check, dict(check, check=f"PHI decrypt {SCRIPT}")]}))
    attest.record(load_config(), load_config().people[0].id, by="Sam", note=SCRIPT, run_dir=run_dir)
    state = RunState(run_dir=str(run_dir), target=SCRIPT, migration_file=SCRIPT, migration_sha256="0" * 64,
                     phases=[PhaseRecord(name, status="failed", detail=SCRIPT) for name in PLAN], status="red",
                     failure=SCRIPT)
    return signoff.render(state, run_dir, {"Run by": SCRIPT}, people=load_config().people)


def test_markup_in_any_field_the_sign_off_shows_comes_out_escaped(tmp_path: Path) -> None:
    page = _page_with_markup_in_every_field(tmp_path)
    assert "<script" not in page.lower() and "alert('x')" not in page
    for section in ("timeline", "criteria", "rehearsal-copy", "phi", "comparisons", "people", "environment"):
        shown = page[page.index(f"<h2 id='{section}'>"):]
        assert ESCAPED in shown[:shown.index("</table>") if "</table>" in shown else None], section


def test_markup_in_a_watch_check_comes_out_escaped(tmp_path: Path) -> None:
    check = CheckRecord(name=SCRIPT, group="API", problems=[f"/api/{SCRIPT}: 500"], notes=[SCRIPT])
    record = RoundRecord(number=1, due=SCRIPT, started="2024-01-01T00:00:00+00:00", verdict="red", checks=[check],
                         p95_ms={SCRIPT: 12.0}, criteria=[SCRIPT], rollback_cost=SCRIPT, alert=SCRIPT)
    state = WatchState(run_dir=str(tmp_path), target=SCRIPT, anchor=0.0, factor=1.0, offsets=[0.0, 60.0],
                       rounds=[record])
    page = watchreport.write(state, tmp_path, load_config(), SCRIPT, SCRIPT).read_text()
    assert "<script" not in page.lower() and page.count(ESCAPED) >= 8
    (tmp_path / "watch").mkdir()
    state.save(tmp_path / "watch")
    section = str(signoff._watch_section(tmp_path))
    assert "<script" not in section and ESCAPED in section


def test_a_template_given_too_little_data_fails_instead_of_leaving_a_cell_empty() -> None:
    with pytest.raises(UndefinedError, match="notes"):
        render.render("signoff/rehearsal_copy.html.j2")


def test_every_template_is_shipped_as_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "migration_gate.report"]
    folder = ROOT / "migration_gate" / "report"
    shipped = {p for pattern in globs for p in folder.glob(pattern)}
    assert shipped == set(folder.glob("templates/**/*.j2")) and shipped
    assert not [p for p in shipped if re.search(r"https?://(?!www\.w3\.org/2000/svg)", p.read_text())]
