"""The app's log since the deploy: no error lines, and nothing that looks like an email, token, hash or
ciphertext. Lines are pointed at by number; their text is never repeated (a log line may hold PHI)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from migration_gate.app import ownrequests
from migration_gate.app.client import BCRYPT, CIPHERTEXT, EMAIL, HEX64, JWT, is_int
from migration_gate.app.logsource import LogMarker, LogSource, LogsUnseen, window
from migration_gate.app.ownrequests import OwnRequest
from migration_gate.core.result import Result, first_ids

LOG_LEAKS = {"an email address": EMAIL, "a JWT": JWT, "a bcrypt hash": BCRYPT, "PHI ciphertext": CIPHERTEXT,
             "a 64-hex value (key or search hash)": HEX64}


LOG_ERROR_TEXT = re.compile(r"failed to log|skipping audit log", re.IGNORECASE)


PLAIN_ERROR_LINE = re.compile(r"^\s*\[?(error|fatal)\b|\b[A-Za-z]*Error: ", re.IGNORECASE)


SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,60}$")  # event and exception class names are safe to repeat


def _lines(numbers: list[int]) -> str:
    return first_ids(numbers).replace("first ids", "new lines")


def log_offset(log_file: Path) -> int:
    """The log's size now: pass it to log_clean later so only lines written since count."""
    try:
        return Path(log_file).stat().st_size
    except FileNotFoundError:
        return 0


def _log_error(line: str, text_errors: re.Pattern[str] | None = None) -> tuple[bool, str | None]:
    """(is this an error line, a safe name for it: the JSON event and exception class, when they are names).
    `text_errors` replaces the plain-text error pattern for a text source; the audit failures always count."""
    if text_errors is not None:
        return bool(LOG_ERROR_TEXT.search(line) or text_errors.search(line)), None
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict):
        level = record.get("level")
        is_error = (isinstance(level, str) and level.lower() in ("error", "fatal", "critical")
                    or is_int(level) and level >= 50)  # pino: 50 error, 60 fatal
        parts = [record[k] for k in ("event", "error") if isinstance(record.get(k), str) and SAFE_NAME.match(record[k])]
        return is_error or bool(LOG_ERROR_TEXT.search(line)), "/".join(parts) or None
    return bool(LOG_ERROR_TEXT.search(line) or PLAIN_ERROR_LINE.search(line)), None


def _scan(result: Result, name: str, lines: list[str], where: str, text_errors: re.Pattern[str] | None = None,
          own_pattern: str | None = None, own_requests: Sequence[OwnRequest] = ()) -> None:
    """Error lines and leaks in `lines`, as problems naming line numbers, counts and safe names only. Error lines
    matching `own_pattern` that the checks' own recorded bad requests account for are left out, with a note."""
    errors: list[int] = []
    kinds: dict[int, str] = {}
    leaks: dict[str, list[int]] = {label: [] for label in LOG_LEAKS}
    own = re.compile(own_pattern) if own_pattern else None
    candidates: list[tuple[int, datetime | None]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        result.checked += 1
        is_error, kind = _log_error(line, text_errors)
        if is_error:
            errors.append(number)
            kinds[number] = kind or "unnamed"
            if own is not None and own.search(line):
                candidates.append((number, ownrequests.line_time(line)))
        for label, pattern in LOG_LEAKS.items():
            if pattern.search(line):
                leaks[label].append(number)
    if own is not None:
        left_out = ownrequests.leave_out(candidates, own_requests)
        _note_own(result, len(candidates), len(left_out), own_requests)
        errors = [number for number in errors if number not in left_out]
    if errors:
        counted = Counter(kinds[number] for number in errors)
        shown = ", ".join(f"{kind} x{n}" for kind, n in counted.most_common(5))
        result.add(f"{name}: {len(errors)} error lines {where} ({_lines(errors)}; {shown})")
    for label, numbers in leaks.items():
        if numbers:
            result.add(f"{name}: {len(numbers)} lines hold what looks like {label} ({_lines(numbers)})")


def _note_own(result: Result, matching: int, left_out: int, requests: Sequence[OwnRequest]) -> None:
    """The report says how many lines were left out and why, and how many like them still count."""
    if not matching and not requests:
        return
    kinds = Counter(request.kind for request in requests)
    made = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"
    note = (f"{left_out} error line(s) left out: they match [logs] own_request_pattern and are the app's answers to "
            f"the checks' own deliberate bad requests ({len(requests)} recorded in {ownrequests.FILE}: {made})")
    if matching > left_out:
        note += (f"; {matching - left_out} more matching line(s) count: more than the checks caused, or outside "
                 "the times of their requests")
    result.notes.append(note)


def log_clean(log_file: Path, since_offset: int = 0) -> Result:
    """No error lines ("Failed to log", "skipping audit log", level error) in the app's log after the offset
    (taken at deploy), and nothing that looks like an email, JWT, bcrypt hash, ciphertext or key/hash."""
    log_file = Path(log_file)
    result = Result("the app's log has no errors and no PHI or secrets since the deploy", unit="log lines")
    try:
        with log_file.open("rb") as stream:
            stream.seek(since_offset)
            text = stream.read().decode("utf-8", "replace")
    except FileNotFoundError:
        result.add(f"{log_file.name}: not found")
        return result
    _scan(result, log_file.name, text.splitlines(), f"after byte {since_offset}")
    return result


def logs_clean(source: LogSource | None, marker: LogMarker | None, requests_made: int,
               own_requests: Sequence[OwnRequest] = ()) -> Result:
    """log_clean over the configured source's lines since the deploy's marker. Not seeing them is red, never a
    pass: no source, a rotated, truncated or missing file, a failing or hanging command, or an empty window
    although `requests_made` requests went to the app in it. A note names the source and the lines read.
    `own_requests` (migration_gate.app.ownrequests.read) are the checks' deliberate bad requests: as many error lines
    matching the source's own_request_pattern, inside their time windows when the lines carry times, are left
    out; the requests answered before the marker are not counted."""
    result = Result("the app's log has no errors and no PHI or secrets since the deploy", unit="log lines")
    if source is None:
        result.add("cannot see the logs: no log source (set APP_LOG_FILE, or [logs] in migration.toml)")
        return result
    marker = marker or LogMarker()  # a file with no marker is read whole; a command needs GATE_LOGS_SINCE
    try:
        lines = window(source, marker, requests_made)
    except LogsUnseen as exc:
        result.add(f"cannot see the logs: {exc}")
        return result
    since = f"since {marker.since}" if marker.since else f"after byte {marker.offset}"
    result.notes.append(f"log source: {source.label}; {len(lines)} lines {since}; at least {requests_made} "
                        "request(s) made in the window")
    text_errors = _text_errors(source)
    start = ownrequests.parse_time(marker.since)
    if start is not None:
        own_requests = [r for r in own_requests if (w := r.window()) is not None and w[1] >= start]
    _scan(result, source.name, lines, "since the deploy", text_errors, source.own_request_pattern, own_requests)
    return result


def _text_errors(source: LogSource) -> re.Pattern[str] | None:
    """A text source's error rule ([logs] error_pattern, else the plain one); None for JSON lines."""
    if source.format != "text":
        return None
    return re.compile(source.error_pattern) if source.error_pattern else PLAIN_ERROR_LINE


def line_levels(lines: Sequence[str], source: LogSource) -> tuple[list[int], list[str]]:
    """Which of `lines` are error lines by the log check's own rule for the source's format (their indexes), and a
    safe name for each (the JSON event and exception class, else "unnamed"): a diagnosis counts them without ever
    repeating a line's text."""
    text_errors = _text_errors(source)
    found: list[int] = []
    kinds: list[str] = []
    for index, line in enumerate(lines):
        is_error, kind = _log_error(line, text_errors)
        if is_error:
            found.append(index)
            kinds.append(kind or "unnamed")
    return found, kinds
