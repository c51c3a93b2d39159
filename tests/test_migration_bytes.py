"""The bytes hashed are the bytes rehearsed and linted: PRE-08's copy and PRE-13's lint (in a suite, and
scripts/lint with --run-dir) check the migration file against the sha256 the cut-over recorded at its start, as
the runner does; a file changed since is refused, never rehearsed or linted in place of the recorded one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from migration_gate.checks import lint
from migration_gate.cli import lint as lint_cli
from migration_gate.config import RehearsalConfig
from migration_gate.db import migration
from migration_gate.rehearsal.scratch import rehearse_on_copy
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import GATE, MIGRATION


def _changed_after_recording(tmp_path: Path) -> tuple[Path, str]:
    """A copy of the migration, its sha256 as a run records it at start, then an edit."""
    path = tmp_path / "migrate.sql"
    path.write_text(MIGRATION.read_text())
    recorded = migration.file_sha256(path)
    path.write_text(MIGRATION.read_text() + "\nSELECT 1;\n")
    return path, recorded


def test_pre_08_refuses_a_migration_file_changed_since_the_run_recorded_it(legacy_db: str, tmp_path: Path) -> None:
    path, recorded = _changed_after_recording(tmp_path)
    gate = replace(GATE, migration_file=path, rehearsal=RehearsalConfig(kind="scratch"))
    result = rehearse_on_copy(legacy_db, gate, SANDBOX_KEY, sha256=recorded)
    assert not result.ok
    assert any(p.startswith("the migration failed on the copy (first run): ") and
               f"the migration file changed since the run started (sha256 {recorded[:16]}... recorded" in p
               for p in result.problems), result.problems


def test_pre_13_and_scripts_lint_refuse_a_migration_file_changed_since_the_run_recorded_it(tmp_path: Path,
                                                                                          capsys) -> None:
    path, recorded = _changed_after_recording(tmp_path)
    gate = replace(GATE, migration_file=path)
    result = lint.lint_gate(None, gate, tmp_path, sha256=recorded)
    assert [p for p in result.problems if "the migration file changed since the run started" in p], result.problems

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps({"migration_sha256": recorded}))
    config = tmp_path / "described.toml"
    config.write_text(f'extends = "{Path(GATE.path)}"\n[migration]\nfile = "{path}"\n')
    assert lint_cli.main(["--config", str(config), "--run-dir", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert "RED  the migration file changed since the run started" in out, out
    (run_dir / "state.json").write_text(json.dumps({"migration_sha256": migration.file_sha256(path)}))
    assert lint_cli.main(["--config", str(config), "--run-dir", str(run_dir)]) == 0, capsys.readouterr().out
