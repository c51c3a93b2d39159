"""One status and exit-code table: the values old run folders hold stay, and the README shows the table the code
has."""

from __future__ import annotations

import json

from migration_gate.core.paths import ROOT
from migration_gate.core.status import EXIT_OF, EXITS, WATCH_EXITS, Exit, Outcome, Verdict, help_text, markdown_table


def test_the_readme_tables_are_the_codes_tables() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table(EXITS) in readme
    assert markdown_table(WATCH_EXITS, "scripts/watch") in readme


def test_every_verdict_has_an_explained_exit_code() -> None:
    assert set(EXIT_OF) == set(Verdict) - {Verdict.RUNNING}
    assert set(EXIT_OF.values()) <= set(EXITS)
    help = help_text(EXITS)
    for code in EXITS:
        assert f"\n  {int(code):<2} " in help


def test_values_are_the_plain_strings_and_numbers_of_old_run_folders() -> None:
    assert json.dumps({"status": Verdict.ROLLED_BACK_MAINTENANCE_ON, "outcome": Outcome.NOT_CHECKED,
                       "exit_code": Exit.INTERRUPTED}) == \
        '{"status": "rolled-back-maintenance-on", "outcome": "not checked", "exit_code": 130}'
    assert [int(c) for c in Exit] == [0, 1, 2, 3, 4, 5, 130]


def test_every_command_ends_its_help_with_the_one_environment_table_and_its_exit_codes() -> None:
    from migration_gate.cli.main import NEEDS
    from migration_gate.cli.watch import EPILOG as WATCH_EPILOG
    from migration_gate.core.helptext import ENVIRONMENT, epilog

    for names in NEEDS.values():
        assert set(names) <= set(ENVIRONMENT)
    text = epilog(NEEDS["cutover"])
    assert text.index("Environment:\n  DATABASE_URL ") < text.index("Exit codes (all commands):\n  0  green")
    assert epilog(()).startswith("Environment: none read\n")
    assert "  GATE_CONFIG          another migration description" in WATCH_EPILOG
    assert "  3  a rollback criterion" in WATCH_EPILOG
