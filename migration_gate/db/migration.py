"""Running a migration file: SQL statements plus Python data steps, all in one transaction.

A migration file is plain SQL. A line ``-- migration-gate: data-step package.module:function`` runs a Python
function at that point, inside the same transaction, for what SQL cannot do (encrypting with the PHI key).
The function receives the open connection and a ``DataStepContext``. Any error rolls the whole file back.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import sqlparse

from migration_gate.core.errors import MigrationGateError
from migration_gate.core.phi import PhiCodec

# Where a rehearsal keeps the time each step of the migration took (keyed by the step's line), for the lint.
TIMES_FILE = Path("rehearsal") / "statement_times.json"
MARKER = re.compile(r"^--\s*migration-gate:\s*data-step\s+(\S+)\s*$", re.MULTILINE)


class MigrationFileError(MigrationGateError, ValueError):
    """The migration file cannot be read or names a data step that does not exist."""


@dataclass(frozen=True)
class Step:
    kind: str  # "sql" or "data"
    text: str  # the statement, or "module:function"
    line: int

    @property
    def label(self) -> str:
        if self.kind == "data":
            return f"data step {self.text}"
        first = sqlparse.format(self.text, strip_comments=True).strip().splitlines()[0]
        return first if len(first) <= 90 else first[:87] + "..."


@dataclass
class DataStepContext:
    codec: PhiCodec
    progress: Callable[[str], None] = lambda _message: None


@dataclass
class StepTiming:
    step: Step
    seconds: float
    rows: int | None = None


@dataclass
class MigrationResult:
    path: Path
    timings: list[StepTiming] = field(default_factory=list)
    sha256: str = ""  # of the very bytes that ran

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.timings)


def parse(text: str) -> list[Step]:
    """Split a migration into statements and data steps, in order, with their line numbers."""
    steps: list[Step] = []
    cursor = 0
    for match in [*MARKER.finditer(text), None]:
        segment_end = match.start() if match else len(text)
        segment = text[cursor:segment_end]
        line = text.count("\n", 0, cursor) + 1
        offset = 0
        for statement in sqlparse.split(segment):
            at = segment.find(statement, offset)
            offset = at + len(statement)
            if sqlparse.format(statement, strip_comments=True).strip():
                steps.append(Step("sql", statement, line + segment.count("\n", 0, at)))
        if match:
            steps.append(Step("data", match.group(1), text.count("\n", 0, match.start()) + 1))
            cursor = match.end()
    return steps


def load(path: Path, sha256: str | None = None) -> list[Step]:
    """The file's steps; with `sha256` (what a run recorded at its start), only if these very bytes hash to it."""
    return _load(path, sha256)[0]


def _load(path: Path, sha256: str | None) -> tuple[list[Step], str]:
    """Read once: the bytes hashed are the bytes parsed (and run)."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationFileError(f"cannot read migration file {path}: {exc.__class__.__name__}") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise MigrationFileError(changed_line(sha256, digest))
    steps = parse(text)
    if not steps:
        raise MigrationFileError(f"migration file {path} holds no SQL statements")
    for step in steps:
        if step.kind == "data":
            resolve_data_step(step.text)
    return steps, digest


def changed_line(recorded: str, now: str) -> str:
    return (f"the migration file changed since the run started (sha256 {recorded[:16]}... recorded, "
            f"{now[:16]}... now): nothing was run")


def resolve_data_step(target: str) -> Callable[[psycopg.Connection, DataStepContext], int | None]:
    module_name, _, function_name = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError):
        raise MigrationFileError(f"data step {target} not found (expected package.module:function)") from None
    if not callable(function):
        raise MigrationFileError(f"data step {target} is not a function")
    return function


def apply(conn: psycopg.Connection, steps: list[Step], context: DataStepContext,
          on_step: Callable[[int, int, StepTiming], None] | None = None) -> list[StepTiming]:
    """Run every step on an open transaction (the caller commits or rolls back)."""
    timings = []
    for index, step in enumerate(steps, start=1):
        started = time.perf_counter()
        rows: int | None = None
        if step.kind == "sql":
            cur = conn.execute(step.text)
            rows = cur.rowcount if cur.rowcount >= 0 else None
        else:
            rows = resolve_data_step(step.text)(conn, context)
        timing = StepTiming(step, time.perf_counter() - started, rows)
        timings.append(timing)
        if on_step:
            on_step(index, len(steps), timing)
    return timings


def run_file(dsn: str, path: Path, key: str, *, lock_timeout: str = "10s", statement_timeout: str = "0",
             on_step: Callable[[int, int, StepTiming], None] | None = None,
             before: Callable[[psycopg.Connection], None] | None = None,
             sha256: str | None = None) -> MigrationResult:
    """Run a migration (or rollback) file in one transaction; on any error nothing is changed. `before` runs
    first in the same transaction (a rollback's preparation: the deploy's tables, migration_gate.db.deploytables).
    `sha256`: the run's record of the file; other bytes are refused before anything runs."""
    steps, digest = _load(path, sha256)
    context = DataStepContext(codec=PhiCodec(key))
    # not db.connect: the migration is the user's SQL, written for the target's own search_path (unqualified
    # names in public), so its session keeps it; the gate's own sessions pin theirs (migration_gate.db.connection)
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                     (lock_timeout, statement_timeout))
        if before is not None:
            before(conn)
        timings = apply(conn, steps, context, on_step)
    return MigrationResult(path=path, timings=timings, sha256=digest)


def save_times(result: MigrationResult, run_dir: Path) -> Path:
    """Record each step's time of a rehearsed migration in the run folder, with the file's sha256, so the lint
    names the time a statement took on the copy (and ignores times of another version of the file)."""
    path = run_dir / TIMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = {str(t.step.line): {"kind": t.step.kind, "seconds": round(t.seconds, 4), "rows": t.rows}
             for t in result.timings}
    path.write_text(json.dumps({"file": result.path.name, "sha256": result.sha256 or file_sha256(result.path),
                               "steps": steps},
                               indent=1), encoding="utf-8")
    return path


def load_times(run_dir: Path, migration_file: Path) -> dict[int, float] | None:
    """The rehearsal's seconds per step line for this very file; None when no rehearsal of it was recorded."""
    try:
        recorded = json.loads((run_dir / TIMES_FILE).read_text(encoding="utf-8"))
        if recorded.get("sha256") != file_sha256(migration_file):
            return None
        return {int(line): float(step["seconds"]) for line, step in recorded["steps"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
