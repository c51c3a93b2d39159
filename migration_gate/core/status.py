"""Every status the gate writes and every exit code its commands and suites end with, in one place.

The values are what the run folder's JSON files hold (state.json, criteria-<marker>.json, watch/state.json) and
what the shell sees; they are StrEnum/IntEnum members, so they compare equal to, and serialise as, the plain
strings and numbers older run folders hold. Change a value and old run folders stop reading: don't.

Exit codes of every command (the README's table is rendered from EXITS, tests/test_status.py compares them):

    0    green                        3    a human must look now (rollback not verified, held, maintenance on)
    1    red                          4    refused
    2    bad usage or configuration   5    forced
    130  interrupted

scripts/watch uses the same numbers with its own meanings (WATCH_EXITS): 3 a rollback criterion was met, 4
another watch of the run is running. The phase suites (pytest -m <phase>) end with pytest's own codes
(pytest.ExitCode: 0 passed, 1 tests failed, 4 usage error, e.g. an unreachable target), which the gate reads
together with criteria-<marker>.json (run/suites.judge).
"""

from __future__ import annotations

import textwrap
from enum import IntEnum, StrEnum


class Outcome(StrEnum):
    """A test's outcome and a criterion's result in criteria-<marker>.json (and the sign-off)."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  # the test could not run (its setup or teardown failed)
    SKIPPED = "skipped"
    WAIVED = "waived"  # passed only because [[waivers]] matched its findings
    NOT_CHECKED = "not checked"  # every test of the criterion skipped
    PARTLY_CHECKED = "partly checked"  # some skipped beside passes
    NOT_APPLICABLE = "not applicable"  # not checked, and [[not_applicable]] says why


class Phase(StrEnum):
    """A phase's (or a rollback step's) status in state.json."""

    PENDING = "pending"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    HELD = "held"  # a rollback held because it would discard rows written since the migration


class Verdict(StrEnum):
    """How a run stands or ended: state.json's status."""

    RUNNING = "running"
    GREEN = "green"
    RED = "red"
    FORCED = "forced"
    OVER_LIMIT = "over-limit"
    ROLLED_BACK = "rolled-back"
    ROLLBACK_FAILED = "rollback-failed"
    ROLLBACK_HELD = "rollback-held"
    ROLLED_BACK_MAINTENANCE_ON = "rolled-back-maintenance-on"
    REFUSED = "refused"
    INTERRUPTED = "interrupted"


class Round(StrEnum):
    """A watch round's verdict (watch/state.json), and the watch's worst so far."""

    GREEN = "green"
    RED = "red"
    CRITERION = "criterion"  # a rollback criterion was met


class Exit(IntEnum):
    """The exit codes (see the module's table)."""

    GREEN = 0
    RED = 1
    USAGE = 2
    HUMAN = 3
    REFUSED = 4
    FORCED = 5
    INTERRUPTED = 130


# The exit code of each run verdict; a status not listed (an old or unknown one) exits red.
EXIT_OF: dict[str, Exit] = {
    Verdict.GREEN: Exit.GREEN, Verdict.RED: Exit.RED, Verdict.ROLLED_BACK: Exit.RED, Verdict.OVER_LIMIT: Exit.RED,
    Verdict.ROLLBACK_FAILED: Exit.HUMAN, Verdict.ROLLBACK_HELD: Exit.HUMAN,
    Verdict.ROLLED_BACK_MAINTENANCE_ON: Exit.HUMAN, Verdict.REFUSED: Exit.REFUSED, Verdict.FORCED: Exit.FORCED,
    Verdict.INTERRUPTED: Exit.INTERRUPTED}


def exit_of(verdict: str) -> Exit:
    return EXIT_OF.get(verdict, Exit.RED)


# What each exit code means, for every command's --help and the README.
EXITS: dict[Exit, str] = {
    Exit.GREEN: "green: every gate passed (scripts/rollback: the rollback ran and was verified, or nothing to roll "
                "back); with findings a [[waivers]] entry matched it says \"GREEN with N waived findings\" "
                "(sign-off: Waivers)",
    Exit.RED: "red: a gate failed; nothing was migrated, or the rollback ran and was verified",
    Exit.USAGE: "bad usage or configuration (one line)",
    Exit.HUMAN: "red and the rollback could NOT be verified, or it is held because it would discard rows written "
                "since the migration (scripts/rollback --dry-run shows them), or it was verified but maintenance "
                "mode could not be switched off (the app still shuts users out): a human must look now",
    Exit.REFUSED: "refused: another cut-over holds the database, earlier gates are not green, the backup changed, or "
                  "the forecast of the window breaks a budget (--accept-forecast overrides; cutover --dry-run shows "
                  "it)",
    Exit.FORCED: "forced: scripts/cutover --force went on past red pre-checks, backup checks or missing "
                 "attestations (the verdict names them) and every phase after them passed; live on the new schema, "
                 "but never GREEN (scripts/watch watches it)",
    Exit.INTERRUPTED: "interrupted (the run's state is kept; the next invocation resumes or rolls back)",
}
WATCH_EXITS: dict[Exit, str] = {
    Exit.GREEN: "every round so far green (or the watch is over, all green)",
    Exit.RED: "a round was red (the alert hook was called)",
    Exit.USAGE: "bad usage or configuration, or the run did not go live (one line)",
    Exit.HUMAN: "a rollback criterion of [watch] rollback_criteria was met: the decision maker decides (the watch "
                "never rolls back; scripts/rollback --run-dir RUN --dry-run shows what a rollback would discard)",
    Exit.REFUSED: "another watch of this run is running",
    Exit.INTERRUPTED: "interrupted (the state is kept; the same command resumes at the next due round)",
}
LINT_EXITS: dict[Exit, str] = {
    Exit.GREEN: "nothing red",
    Exit.RED: "a finding [lint] denies",
    Exit.USAGE: "bad input (configuration, file, connection)",
}
EMERGENCY_EXITS: dict[Exit, str] = {
    Exit.GREEN: "maintenance switched through the hook and recorded in the run (--dry-run: it could be)",
    Exit.RED: "the maintenance hook failed: the attempt is recorded; switch maintenance by hand now",
    Exit.USAGE: "bad usage or configuration: no run folder, no --by or --why, no such hook (one line)",
}
# The watch's exit code of its worst round so far.
WATCH_EXIT_OF: dict[str, Exit] = {Round.GREEN: Exit.GREEN, Round.RED: Exit.RED, Round.CRITERION: Exit.HUMAN}


def markdown_table(exits: dict[Exit, str], heading: str = "meaning") -> str:
    """The README's table of exit codes."""
    rows = "".join(f"| {int(code)} | {meaning} |\n" for code, meaning in exits.items())
    return f"| exit code | {heading} |\n|---|---|\n{rows}"


def help_text(exits: dict[Exit, str], title: str = "Exit codes (all commands):") -> str:
    """The exit codes as every command's --help ends."""
    lines = [title]
    for code, meaning in exits.items():
        lines += textwrap.wrap(meaning, 112, initial_indent=f"  {int(code):<2} ", subsequent_indent="     ")
    return "\n".join(lines) + "\n"
