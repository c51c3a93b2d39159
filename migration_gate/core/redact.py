"""Secrets out of anything we print: connection strings, keys, tokens."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import psycopg

MASK = "***"
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_HEX_KEY = re.compile(r"\b[0-9a-fA-F]{64}\b")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_BEARER = re.compile(r"(\bBearer\s+)[^\s'\"]+", re.IGNORECASE)
# Environment variables whose values are secrets by their name (a hook's RENDER_API_KEY, GATE_API_PASSWORD...).
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL|AUTH|DATABASE_URL|DSN", re.IGNORECASE)
_AGE_KEY = re.compile(r"AGE-SECRET-KEY-1[0-9A-Za-z]+")  # an age identity (the backup's private key)
_QUOTED = re.compile(r"(\"[^\"]*\"|'[^']*')")


def redact_dsn(dsn: str) -> str:
    """The connection string with its password masked, in URL or key=value form."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password is not None:
            netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
            dsn = urlunsplit(parts._replace(netloc=netloc))
        return re.sub(r"([?&]password=)[^&]*", rf"\g<1>{MASK}", dsn)
    return _KV_PASSWORD.sub(rf"\g<1>{MASK}", dsn)


def redact_text(text: str) -> str:
    """Mask passwords in connection strings, 64-hex keys, JWTs and age identities anywhere in free text."""
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)
    text = _KV_PASSWORD.sub(rf"\g<1>{MASK}", text)
    text = _HEX_KEY.sub(MASK, text)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    text = _AGE_KEY.sub(MASK, text)
    return _JWT.sub(MASK, text)


def secret_values(env: dict[str, str]) -> list[str]:
    """The values of the variables in `env` that a name marks as secret (6 characters or more)."""
    return [value for name, value in env.items() if _SECRET_NAME.search(name) and len(value.strip()) >= 6]


def dsn_passwords(values: Iterable[str]) -> list[str]:
    """The passwords inside connection strings among `values` (what a hook is given: GATE_COPY_SOURCE...)."""
    found = []
    for value in values:
        if "://" in value or "password" in value:
            with contextlib.suppress(psycopg.ProgrammingError):
                password = psycopg.conninfo.conninfo_to_dict(value).get("password")
                if password:
                    found.append(str(password))
    return found


def mask_values(text: str, secrets: list[str]) -> str:
    """Every known secret value masked where it appears, the longest first (a pattern cannot know a password)."""
    for value in sorted({v for v in secrets if v and len(v) >= 6}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def describe_target(dsn: str) -> str:
    """host:port/dbname of a connection string, for reports (no user, no password)."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def mask_quoted(text: str) -> str:
    """Quoted parts replaced by '…': database errors quote the offending values, which may be PHI."""
    return _QUOTED.sub("'…'", text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(text: str) -> str:
    """Control characters (tabs, newlines, escapes) and runs of spaces as one space: fit for a terminal line."""
    return re.sub(r" {2,}", " ", _CONTROL.sub(" ", text)).strip()


def own_error(exc: BaseException) -> bool:
    """Raised by the gate itself: its text is composed to name tables, columns, files and keys, never values."""
    return type(exc).__module__.split(".")[0] == "migration_gate"


def safe_line(text: str, *, values_quoted: bool = True) -> str:
    """THE rule for putting error text on one line anywhere (report, log, terminal): control characters folded,
    quoted parts masked (database and library errors quote the offending value, which may be PHI; pass
    values_quoted=False only for the gate's own composed text, whose apostrophes are not quotes), and
    passwords (URL and key=value), 64-hex keys, bearer tokens, JWTs and age identities redacted."""
    text = one_line(text)
    return redact_text(mask_quoted(text) if values_quoted else text)


def error_line(exc: BaseException) -> str:
    """An error's first line under the one rule (safe_line), quoted parts masked unless the gate raised it; ''
    when the error says nothing. Every other error-to-line form is built on this: safe_message ("Class: line",
    reports), core.result.error_text ("Class (line)", a check's problem line), failure_line (a command's stderr)."""
    text = str(exc).strip()
    return safe_line(text.splitlines()[0], values_quoted=not own_error(exc)) if text else ""


def safe_message(exc: BaseException) -> str:
    """Type and first line of an error under the one rule (error_line): fit for any report."""
    return f"{exc.__class__.__name__}: {error_line(exc)}"


def failure_line(exc: BaseException) -> str:
    """What a command prints after its name when a step failed: why, on one line under the one rule, never a
    traceback (a file's error names the file; a lost or refused connection says so with the server's cause)."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif isinstance(exc, psycopg.errors.QueryCanceled):  # an OperationalError, but the database did answer
        text = f"a statement was cancelled (statement_timeout or lock_timeout): {connection_cause(exc)}"
    elif isinstance(exc, psycopg.OperationalError):
        text = f"database unreachable or connection lost: {connection_cause(exc)}"
    else:
        return error_line(exc) or exc.__class__.__name__
    return safe_line(text, values_quoted=not own_error(exc))


def connection_cause(exc: BaseException) -> str:
    """Why a connection failed, as the server or the socket said it ("Connection refused", "password
    authentication failed for user ..."), without libpq's hints on further lines; secrets redacted."""
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    cause = next((line.rsplit("failed: ", 1)[1] for line in lines if "failed: " in line), lines[0] if lines else "")
    return redact_text(one_line(cause)) or exc.__class__.__name__
