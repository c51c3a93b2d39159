"""The checks behind the phase suites. Each returns a Result; a test asserts it passed.

A Result's problems name tables, columns, counts and the first row ids: never values, so a failure message can
go into any report. Tests call ``result.expect()``, which raises CheckFailed with those lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FIRST_IDS = 5
# When a phase-suite run sets this to a list, every expect() records (check, checked, problems) for the report.
RECORDER: list[dict] | None = None


class CheckFailed(AssertionError):
    """A check found problems; the message is PHI-free by construction."""


@dataclass
class Result:
    check: str
    problems: list[str] = field(default_factory=list)
    checked: int = 0  # values or rows examined (for the PHI verification summary)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def expect(self) -> Result:
        """Raise CheckFailed naming every problem; return self when there are none."""
        __tracebackhide__ = True
        if RECORDER is not None:
            RECORDER.append({"check": self.check, "checked": self.checked, "problems": len(self.problems),
                             "notes": list(self.notes)})
        if self.problems:
            shown = self.problems[:20]
            more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
            raise CheckFailed(f"{self.check}: {len(self.problems)} problem(s)\n  " + "\n  ".join(shown) + more)
        return self

    def __repr__(self) -> str:
        return f"Result({self.check!r}, ok={self.ok}, problems={len(self.problems)}, checked={self.checked})"


def first_ids(ids: list) -> str:
    shown = ", ".join(str(i) for i in ids[:FIRST_IDS])
    return f"first ids: {shown}" + (", ..." if len(ids) > FIRST_IDS else "")
