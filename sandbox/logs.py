"""The sandbox API's log as a host serves it: the JSON lines written since a time, on stdout.

    python -m sandbox.logs --file sandbox/api.log [--since 2026-12-01T10:00:00.000Z] [--until ...]

--since and --until default to GATE_LOGS_SINCE and GATE_LOGS_UNTIL (the log command contract of
migration_gate.app.logsource), so a [hooks] logs_since command of the rehearsal is this module and a path, as a team's
calls its host's log CLI. A line whose time cannot be read is printed (the check sees more, never less).
Exit codes: 0 the lines, 2 bad usage or time, 3 the log cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from migration_gate.app.logsource import SINCE_VARIABLE, UNTIL_VARIABLE


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("a time needs its zone (UTC: Z)")
    return value


def _line_time(line: str) -> datetime | None:
    try:
        record = json.loads(line)
        return _time(record["ts"]) if isinstance(record, dict) and isinstance(record.get("ts"), str) else None
    except (ValueError, KeyError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.logs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, required=True, help="the sandbox API's JSON-lines log")
    parser.add_argument("--since", default=os.environ.get(SINCE_VARIABLE), help=f"ISO-8601 (default ${SINCE_VARIABLE})")
    parser.add_argument("--until", default=os.environ.get(UNTIL_VARIABLE), help=f"ISO-8601 (default ${UNTIL_VARIABLE})")
    args = parser.parse_args(argv)
    if not args.since:
        parser.error(f"--since or {SINCE_VARIABLE} is required")
    try:
        since = _time(args.since)
        until = _time(args.until) if args.until else None
    except ValueError:
        parser.error("--since and --until must be ISO-8601 times with a zone")
    try:
        with args.file.open(encoding="utf-8", errors="replace") as stream:
            for line in stream:
                at = _line_time(line)
                if at is None or (at >= since and (until is None or at <= until)):
                    sys.stdout.write(line if line.endswith("\n") else line + "\n")
    except OSError as exc:
        print(f"sandbox.logs: cannot read the log ({exc.__class__.__name__})", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
