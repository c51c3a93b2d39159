"""What a check returns and how it fails: a Result whose problems name tables, columns, counts and the first row
ids, never values, so a failure message can go into any report. ``result.expect()`` raises CheckFailed with those
lines. Every caller that judges something (the checks, the app's answers and load, the decryption scan) speaks it;
it needs neither pytest nor a database."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from migration_gate.core.redact import error_line, redact_text

FIRST_IDS = 5
# Every expect() logs one line here (PHI-free: check name, counts); a log line only, never how a result travels.
LOG = logging.getLogger("migration_gate.checks")
# The one channel a judged Result travels by: every expect() appends its summary() to each list collecting() opened
# in the running context (the plugin per test, the watch per check). None open (any other caller): nowhere.
HEARD: ContextVar[tuple[list[dict], ...]] = ContextVar("gate_heard", default=())
# While a phase test runs, the plugin sets what its criterion's unexpired waivers ([[waivers]]) accept: given a
# problem line, the number of the waiver it matches, else None. expect() then fails only for the rest, and its
# summary lists the waived lines: a waived finding is reported, never dropped. Unset (any other caller): none.
WAIVER: ContextVar[Callable[[str], int | None] | None] = ContextVar("gate_waiver", default=None)


class CheckFailed(AssertionError):
    """A check found problems; the message is PHI-free by construction, and so are the problem lines it carries
    (so a report can list them as data)."""

    def __init__(self, message: str, check: str = "", problems: Iterable[str] = (),
                 waived: Iterable[dict] = ()) -> None:
        super().__init__(message)
        self.check = check
        self.problems = list(problems)
        self.waived = list(waived)  # the check's findings a waiver matched: {"finding": line, "waiver": number}


@dataclass
class Result:
    check: str
    problems: list[str] = field(default_factory=list)
    checked: int = 0  # values or rows examined (for the PHI verification summary)
    notes: list[str] = field(default_factory=list)
    unit: str = "values"  # what `checked` counts: PHI values, rows, responses, log lines (the sign-off says it)
    # a comparison of two sides: rows read on each and rows matched by key ({"legacy", "new", "matched", "unit"})
    compared: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    @contextlib.contextmanager
    def guard(self, *identifiers: str) -> Iterator[None]:
        """Run one part of a check; an error there becomes a problem naming the part, and the check goes on."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - reported as a finding, never a traceback
            where = ".".join(identifiers) or self.check
            self.add(f"{where}: could not be checked: {error_text(exc)}")

    def tally(self, where: str, legacy: int, new: int, matched: int, unit: str = "rows",
              new_may_exceed: bool = False) -> None:
        """Record what a comparison read on each side and matched; a shortfall is a problem, never a pass: a legacy
        row not compared, or a new row not compared (unless the new side may hold more, a partial mapping). Two
        empty sides say so in a note and in the sign-off ("nothing compared"): the row counts prove 0 = 0, and an
        empty table is no finding."""
        self.compared = {"legacy": legacy, "new": new, "matched": matched, "unit": unit}
        if not legacy and not new:
            self.notes.append(f"{where}: compared nothing (no {unit} on either side)")
        elif matched < legacy or (matched < new and not new_may_exceed):
            self.add(f"{where}: compared {matched} of {legacy if new_may_exceed else max(legacy, new)} {unit} "
                     f"({legacy} read on the legacy side, {new} on the new side)")

    def expect(self) -> Result:
        """Raise CheckFailed naming every problem no waiver matches (and the waived ones after them); return self
        when there are none."""
        __tracebackhide__ = True
        waived = self.waived()
        matched = {w["finding"] for w in waived}
        open_problems = [p for p in self.problems if p not in matched]
        LOG.info("%s: %d checked, %d problem(s)", self.check, self.checked, len(open_problems))
        summary = self.summary(waived)
        for heard in HEARD.get():
            heard.append(dict(summary))
        if open_problems:
            shown = open_problems[:20]
            more = f"\n  ... and {len(open_problems) - 20} more" if len(open_problems) > 20 else ""
            also = (f"\n  waived ([[waivers]]), not counted above: {len(waived)}\n    "
                    + "\n    ".join(w["finding"] for w in waived[:20])) if waived else ""
            raise CheckFailed(f"{self.check}: {len(open_problems)} problem(s)\n  " + "\n  ".join(shown) + more + also,
                              check=self.check, problems=open_problems, waived=waived)
        return self

    def waived(self) -> list[dict]:
        """The problems the running test's waivers match (WAIVER), each with the number of its waiver."""
        match = WAIVER.get()
        if match is None:
            return []
        found = [{"finding": line, "waiver": match(line)} for line in self.problems]
        return [w for w in found if w["waiver"] is not None]

    def summary(self, waived: list[dict] | None = None) -> dict:
        """What the reports keep of a judged check; problems counts those no waiver matched, waived the rest."""
        waived = waived or []
        return {"check": self.check, "checked": self.checked, "unit": self.unit,
                "problems": len(self.problems) - len(waived), "notes": list(self.notes)} | (
                    {"waived": waived} if waived else {}) | ({"compared": dict(self.compared)} if self.compared else {})

    def __repr__(self) -> str:
        return f"Result({self.check!r}, ok={self.ok}, problems={len(self.problems)}, checked={self.checked})"


@contextlib.contextmanager
def collecting() -> Iterator[list[dict]]:
    """The summaries (Result.summary()) of the Results judged (expect()) while this block runs, in order: how the
    plugin learns what a test's checks found and the watch what a round's check found, as data, never as text.
    Nested blocks each hear every summary (the outer one too)."""
    heard: list[dict] = []
    token = HEARD.set((*HEARD.get(), heard))
    try:
        yield heard
    finally:
        HEARD.reset(token)


@contextlib.contextmanager
def waiving(match: Callable[[str], int | None] | None) -> Iterator[None]:
    """While this block runs, expect() waives the problem lines `match` numbers (WAIVER); None waives nothing."""
    token = WAIVER.set(match)
    try:
        yield
    finally:
        WAIVER.reset(token)


def waiver_match(held: Sequence[tuple[int, Any]]) -> Callable[[str], int | None] | None:
    """For WAIVER: given the waivers that hold (their number in the description, the waiver: anything with
    matches(line)), the number of the first one a problem line matches as the check said it or as the reports show
    it (redact_text), else None. None when none hold. The suites' plugin and the watch waive by this one rule."""
    if not held:
        return None
    return lambda line: next((n for n, w in held if w.matches(line) or w.matches(redact_text(line))), None)


def error_text(exc: BaseException) -> str:
    """An error's class and first line with quoted parts masked (database errors quote offending values)."""
    first = error_line(exc)
    return f"{exc.__class__.__name__}" + (f" ({first[:160]})" if first else "")


def first_ids(ids: list) -> str:
    shown = ", ".join(str(i) for i in ids[:FIRST_IDS])
    return f"first ids: {shown}" + (", ..." if len(ids) > FIRST_IDS else "")
