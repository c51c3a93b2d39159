"""The checks' own deliberate bad requests, kept as data so the log check does not count the app's answers to them.

POST-08 (and the go-live's smoke test) send requests the app must refuse: without a token, and with forged tokens.
The real app writes one line per forged or malformed token ("Authentication error: JsonWebTokenError: ..."), so
without this a log check would hold the gate's own probes against the app. Each such request is recorded here,
in <run>/own-requests.jsonl (this module is the file's only writer; owner-only, 0600): its kind, method, path and
the UTC times it was sent and answered. Never a token, a body or an answer.

The log check (POST-11, the watch's rounds) then leaves out error lines matching [logs] own_request_pattern, at
most one per recorded request; when a line carries its time (a JSON ts/time/timestamp field, or a leading ISO-8601
time), only inside a recorded request's window (a few seconds' slack for the host's clock). Lines beyond that
number, or outside those windows, still count; so does every other line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

FILE = "own-requests.jsonl"
SLACK = timedelta(seconds=2)  # between our clock and the log's: the same machine, or a host's synced clock
_LEADING_TIME = re.compile(r"^\s*\[?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)")
_TIME_KEYS = ("ts", "time", "timestamp")


@dataclass(frozen=True)
class OwnRequest:
    """One deliberate bad request: `kind` says which ("no token", "forged token"), the times are ISO-8601 UTC."""

    kind: str
    method: str
    path: str
    started: str
    ended: str

    def window(self) -> tuple[datetime, datetime] | None:
        start, end = parse_time(self.started), parse_time(self.ended)
        return None if start is None or end is None else (start - SLACK, end + SLACK)


def path_of(run_dir: Path) -> Path:
    return Path(run_dir) / FILE


def note(run_dir: Path, request: OwnRequest) -> None:
    """Append one request to the run's record (created owner-only; one short line per write, appended)."""
    file = path_of(run_dir)
    file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, (json.dumps(asdict(request), sort_keys=True) + "\n").encode())
    finally:
        os.close(descriptor)


def recorder(run_dir: Path | None) -> Callable[[OwnRequest], None] | None:
    """What a check calls for each deliberate bad request (None: nowhere to record, nothing is left out later)."""
    if run_dir is None:
        return None
    return lambda request: note(run_dir, request)


def read(run_dir: Path | None, since: str = "") -> list[OwnRequest]:
    """The recorded requests answered at or after `since` (all of them without it); unreadable lines are skipped
    (the check then leaves out fewer lines, never more)."""
    if run_dir is None:
        return []
    try:
        text = path_of(run_dir).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    start = parse_time(since) if since else None
    found = []
    for line in text.splitlines():
        try:
            request = OwnRequest(**json.loads(line))
        except (ValueError, TypeError):
            continue
        window = request.window()
        if window is None or (start is not None and window[1] < start):
            continue
        found.append(request)
    return found


def parse_time(text: object) -> datetime | None:
    """An ISO-8601 time (a zone-less one is taken as UTC), or epoch seconds or milliseconds; None otherwise."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        seconds = text / 1000 if text > 1e11 else text
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def line_time(line: str) -> datetime | None:
    """The time a log line carries: a JSON line's ts, time or timestamp field, or a leading ISO-8601 time."""
    stripped = line.lstrip()
    if stripped.startswith("{"):
        try:
            record = json.loads(stripped)
        except ValueError:
            record = None
        if isinstance(record, dict):
            for key in _TIME_KEYS:
                found = parse_time(record.get(key))
                if found is not None:
                    return found
            return None
    match = _LEADING_TIME.match(line)
    return parse_time(match.group(1).replace(" ", "T")) if match else None


def leave_out(candidates: Iterable[tuple[int, datetime | None]], requests: Sequence[OwnRequest]) -> set[int]:
    """Which candidate lines (number, its time or None) the recorded requests account for: each request at most
    one line; a timed line only inside a request's window (earliest-ending free window first, so as many lines
    as possible are matched and none twice); then the lines without a time, in order, take the requests left."""
    candidates = list(candidates)
    windows = sorted((w for w in (r.window() for r in requests) if w is not None), key=lambda w: w[1])
    free = [True] * len(windows)
    excused: set[int] = set()
    timed = sorted(((at, number) for number, at in candidates if at is not None))
    untimed = [number for number, at in candidates if at is None]
    for at, number in timed:
        for i, (start, end) in enumerate(windows):
            if free[i] and start <= at <= end:
                free[i] = False
                excused.add(number)
                break
    left = sum(free)
    excused.update(untimed[:left])
    return excused
