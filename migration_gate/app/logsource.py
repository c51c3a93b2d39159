"""Where the app's log lines come from, and which of them were written since the deploy.

A source is a file (JSON lines or plain text) or a command from migration.toml [hooks] that prints the lines since
a time (a team calls its host's log API or CLI there: on Render or any host the logs are not a file the gate can
read). At the deploy the gate takes a marker: the UTC time, and for a file its byte offset, inode and device. The
lines since the marker are what the log check (POST-11) reads.

Not seeing the logs is never a clean log: a file that was rotated (another inode), truncated (shorter than the
offset) or is missing, a command that fails or hangs, and an empty window although requests were made in it all
raise LogsUnseen. Its message names the file, the hook and the exit code, never a log line or the command's output
(both may hold PHI).

The command contract: run by the shell, from the project root, with GATE_LOGS_SINCE (the marker's time) and
GATE_LOGS_UNTIL (now) in its environment, both ISO-8601 UTC with milliseconds ("2026-12-01T10:00:00.123Z"); it
prints the lines on stdout, in the configured format, and exits 0. Its stderr is ignored.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from migration_gate.app.hooks import LOGS_CONTRACT, hook_environment, kill_group, sigterm_unwinds
from migration_gate.config import OWN_REQUEST_PATTERN, ConfigError, LogsConfig
from migration_gate.core.errors import MigrationGateError
from migration_gate.core.paths import ROOT

SINCE_VARIABLE = "GATE_LOGS_SINCE"
UNTIL_VARIABLE = "GATE_LOGS_UNTIL"
SETTLE_POLL = 0.5
LOG_OUTPUT_LIMIT = 64 << 20  # what a log command may print for one window; more is red (lines would go unseen)
PROBE_WINDOW = timedelta(minutes=5)  # what probe() asks a command for


class LogsUnseen(MigrationGateError):  # noqa: N818 - read as "the logs are unseen", a condition rather than a crash
    """The log's lines since the marker cannot be seen; the message (PHI-free) says why."""


def utc_now() -> str:
    """Now as ISO-8601 UTC with milliseconds and a Z, the form GATE_LOGS_SINCE has."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class LogSource:
    """A resolved source: a file at `path`, or the [hooks] command `hook` (its text in `command`)."""

    kind: str  # "file" or "command"
    format: str  # "jsonl" or "text"
    path: str | None = None
    hook: str | None = None
    command: str | None = None
    error_pattern: str | None = None  # text lines: which are errors (default: the check's own pattern)
    timeout_seconds: float = 60.0
    settle_seconds: float = 0.0
    own_request_pattern: str | None = OWN_REQUEST_PATTERN  # the lines the checks' own bad requests cause ([logs])
    pass_env: tuple[str, ...] = ()  # [hooks] pass_env: the operator's variables the command sees

    @property
    def label(self) -> str:
        """How reports name the source: the file's name or the hook's, never the command's text."""
        where = f"file {Path(self.path).name}" if self.kind == "file" else f"command [hooks] {self.hook}"
        return f"{where} ({self.format})"

    @property
    def name(self) -> str:
        """The short name problem lines start with."""
        return Path(self.path).name if self.kind == "file" else f"[hooks] {self.hook}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LogSource:
        """The source as the gate handed it to a suite (GATE_LOG_SOURCE); a bad one is a configuration error."""
        try:
            data = json.loads(text)
            source = cls(**data | {"pass_env": tuple(data.get("pass_env", ()))})
        except (ValueError, TypeError):
            raise ConfigError("GATE_LOG_SOURCE is not a log source the gate wrote") from None
        if source.kind not in ("file", "command") or source.format not in ("jsonl", "text"):
            raise ConfigError("GATE_LOG_SOURCE is not a log source the gate wrote")
        return source


@dataclass(frozen=True)
class LogMarker:
    """Where the window starts: the time (every source), and for a file its offset, inode and device then (an
    inode of None: the file did not exist yet, so all of it is new)."""

    since: str = ""
    offset: int = 0
    inode: int | None = None
    device: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LogMarker:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            raise ConfigError("GATE_LOG_MARKER is not a log marker the gate wrote") from None


def configured(logs: LogsConfig, hooks: dict[str, str], app_log_file: Path | None,
               pass_env: tuple[str, ...] = ()) -> LogSource | None:
    """The source [logs] names: a file (APP_LOG_FILE first, then [logs] path) or a [hooks] command. None when a
    file source has no path: the log check then says it cannot see the logs."""
    if logs.source == "command":
        return LogSource(kind="command", format=logs.format, hook=logs.hook, command=hooks.get(logs.hook),
                         error_pattern=logs.error_pattern, timeout_seconds=logs.timeout_seconds,
                         settle_seconds=logs.settle_seconds, own_request_pattern=logs.own_request_pattern,
                         pass_env=pass_env)
    path = app_log_file or logs.path
    if path is None:
        return None
    return LogSource(kind="file", format="text" if logs.source == "text" else "jsonl", path=str(path),
                     error_pattern=logs.error_pattern, timeout_seconds=logs.timeout_seconds,
                     settle_seconds=logs.settle_seconds, own_request_pattern=logs.own_request_pattern)


def mark(source: LogSource | None) -> LogMarker:
    """The marker now (taken at the deploy): the time, and for a file its size, inode and device."""
    since = utc_now()
    if source is None or source.kind != "file":
        return LogMarker(since=since)
    try:
        stat = os.stat(source.path)
    except FileNotFoundError:
        return LogMarker(since=since)
    return LogMarker(since=since, offset=stat.st_size, inode=stat.st_ino, device=stat.st_dev)


def _read_file(source: LogSource, marker: LogMarker) -> str:
    name = Path(source.path).name
    try:
        with open(source.path, "rb") as stream:
            stat = os.fstat(stream.fileno())
            if marker.inode is not None and (stat.st_ino, stat.st_dev) != (marker.inode, marker.device):
                raise LogsUnseen(f"{name} was rotated since the deploy (another file at its path): the lines "
                                 "written in between are elsewhere")
            if stat.st_size < marker.offset:
                raise LogsUnseen(f"{name} was truncated since the deploy ({stat.st_size} bytes, "
                                 f"{marker.offset} at the deploy)")
            stream.seek(marker.offset)
            return stream.read().decode("utf-8", "replace")
    except FileNotFoundError:
        raise LogsUnseen(f"{name} does not exist") from None
    except IsADirectoryError:
        raise LogsUnseen(f"{name} is a directory") from None
    except PermissionError:
        raise LogsUnseen(f"{name} cannot be read (permission denied)") from None


def _run_command(source: LogSource, marker: LogMarker) -> str:
    hook = f"[hooks] {source.hook}"
    if not source.command:
        raise LogsUnseen(f"{hook} is not configured")
    if not marker.since:
        raise LogsUnseen(f"no time to read {hook} from: {SINCE_VARIABLE} is not set")
    # the hook's contract (hooks.hook_environment): the window and pass_env, none of the gate's secrets
    env = hook_environment(LOGS_CONTRACT, {SINCE_VARIABLE: marker.since, UNTIL_VARIABLE: utc_now()}, source.pass_env)
    # its own session, so a timeout, Ctrl-C or SIGTERM ends the whole process group (a shell's children too); stdout
    # to a file, so a child left holding the pipe cannot keep us waiting
    with tempfile.TemporaryFile() as out, sigterm_unwinds():
        child = subprocess.Popen(source.command, shell=True, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            code = child.wait(timeout=source.timeout_seconds)
        except subprocess.TimeoutExpired:
            kill_group(child)
            raise LogsUnseen(f"{hook} did not finish within {source.timeout_seconds:g} s") from None
        except BaseException:
            kill_group(child)
            raise
        if code != 0:
            raise LogsUnseen(f"{hook} exited with code {code}")
        out.seek(0)
        text = out.read(LOG_OUTPUT_LIMIT + 1)
        if len(text) > LOG_OUTPUT_LIMIT:  # lines past the cut would go unseen: red, never a partial read
            raise LogsUnseen(f"{hook} printed more than {LOG_OUTPUT_LIMIT >> 20} MiB since the deploy (cut): "
                             "its lines past the cut cannot be checked")
        return text.decode("utf-8", "replace")


def read_since(source: LogSource, marker: LogMarker) -> list[str]:
    """The source's lines since the marker (once, no waiting); LogsUnseen when they cannot be seen."""
    text = _read_file(source, marker) if source.kind == "file" else _run_command(source, marker)
    return text.splitlines()


def window(source: LogSource, marker: LogMarker, requests_made: int) -> list[str]:
    """The lines since the marker. Empty although requests were made in the window means the source does not
    show what the app logs: read again for up to settle_seconds (a host's log API lags), then LogsUnseen."""
    deadline = time.monotonic() + source.settle_seconds
    while True:
        lines = read_since(source, marker)
        if any(line.strip() for line in lines) or requests_made <= 0:
            return lines
        if time.monotonic() >= deadline:
            raise LogsUnseen(f"{source.name} shows no lines since {marker.since or 'the deploy'} although "
                             f"{requests_made} request(s) were made to the app in that window")
        time.sleep(SETTLE_POLL)


def probe(source: LogSource | None) -> str:
    """Before the window opens (a pre-flight): the source answers now. A file is there and readable; a command
    exits 0 in time when asked for the last five minutes. Returns what was found (PHI-free), or LogsUnseen."""
    if source is None:
        raise LogsUnseen("no log source (set APP_LOG_FILE, or [logs] in migration.toml)")
    if source.kind == "file":
        marker = mark(source)
        if marker.inode is None:
            raise LogsUnseen(f"{source.name} does not exist")
        read_since(source, marker)  # opens it: readable, a file
        return f"{source.label}, {marker.offset:,} bytes"
    since = (datetime.now(UTC) - PROBE_WINDOW).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    lines = read_since(source, LogMarker(since=since))
    return f"{source.label}, {sum(1 for line in lines if line.strip())} lines in the last five minutes"
