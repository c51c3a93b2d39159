"""The process environment: the one module of the library that reads (or writes) os.environ.

What comes from it: where the target is and its secrets (Environment, load_environment: DATABASE_URL, the PHI
key, the API login), the operator's switches (GATE_CONFIG, GATE_WORKERS, CI...), and, for a phase suite run by
hand, the run state the gate would otherwise hand over in its context file (context_by_hand). Everything else
asks here: variable() for one name, variables() for a copy to build a child's environment from.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from migration_gate.config.context import SuiteContext
from migration_gate.config.errors import ConfigError
from migration_gate.core.paths import ROOT
from migration_gate.core.phi import PhiKeyError, parse_key

# The variables that name a target: set but empty (what a CI runner gives for a missing secret) is a mistake.
TARGET_VARIABLES = ("DATABASE_URL", "PHI_ENCRYPTION_KEY", "API_BASE_URL", "GATE_API_USERNAME", "GATE_API_PASSWORD",
                    "BACKUP_FILE", "BASELINE_DATABASE_URL")
# The run state a phase suite gets from its context file when the gate runs it; read from the environment only
# for a suite run by hand (context_by_hand). The gate drops them from a suite's environment: one channel.
CONTEXT_VARIABLES = ("API_BASE_URL", "APP_LOG_FILE", "APP_LOG_OFFSET", "GATE_LOGS_SINCE", "BACKUP_FILE",
                     "GATE_CARRIED_ROWS", "GATE_ALLOW_WRITES", "GATE_REHEARSAL", "GATE_REHEARSAL_KIND",
                     "GATE_MIGRATION_FILE", "GATE_SANDBOX_PROVIDER", "GATE_CONFIG", "GATE_SANDBOX")
REHEARSAL_KIND_ENV = "GATE_REHEARSAL_KIND"  # overrides [rehearsal] kind (a dress rehearsal's suites: "scratch")
_OFF, _ON = ("", "0", "false", "no", "off"), ("1", "true", "yes", "on")


def variable(name: str, default: str | None = None) -> str | None:
    """One variable of this process's environment (default when unset)."""
    return os.environ.get(name, default)


def variables() -> dict[str, str]:
    """A copy of this process's environment: what a child's environment is built from (never the live one)."""
    return dict(os.environ)


def export(name: str, value: str | None) -> None:
    """Set (None: unset) a variable of this process, for what it starts afterwards (pytest's own re-start)."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def operator() -> str:
    """The login name of whoever runs the gate (SUDO_USER when run through sudo), never a bare uid."""
    for name in (variable("SUDO_USER"), _login()):
        if name and not name.isdigit():
            return name
    return f"uid {os.getuid()} (no user name)"


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a bare container uid
        return None


@dataclass(frozen=True)
class Environment:
    """Where the target is. database_url None means: bring up the embedded sandbox, which outside CI needs no
    asking and in CI must be asked for (sandbox_requested: GATE_SANDBOX=1, or the plugin's --gate-sandbox).
    rehearsal: DATABASE_URL is the rehearsal's own sandbox (GATE_REHEARSAL=1), so its reports carry the sandbox
    banner too. The log position, writes and carried rows are what a user gives a suite run by hand (the gate
    hands them over in the context file instead)."""

    database_url: str | None
    api_base_url: str | None
    phi_key: str | None
    api_username: str | None
    api_password: str | None
    reports_dir: Path
    app_log_file: Path | None
    backup_file: Path | None
    baseline_url: str | None
    api_headers: dict[str, str] = field(default_factory=dict)
    ci: bool = False
    sandbox_requested: bool = False
    rehearsal: bool = False
    log_offset: int = 0  # APP_LOG_OFFSET
    logs_since: str | None = None  # GATE_LOGS_SINCE
    allow_writes: bool = False  # GATE_ALLOW_WRITES
    carried_rows: Path | None = None  # GATE_CARRIED_ROWS

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def synthetic(self) -> bool:
        """The data checked is the sandbox's: every report of the run says so."""
        return self.embedded or self.rehearsal

    def sandbox_refused(self, asked: bool) -> str | None:
        """Why the embedded sandbox may not stand in for a missing target (None: it may), so that a CI job
        whose DATABASE_URL secret is missing never goes green on synthetic data."""
        if not self.embedded or not self.ci or asked or self.sandbox_requested:
            return None
        return "no target: DATABASE_URL is not set; in CI the sandbox runs only with --gate-sandbox or GATE_SANDBOX=1"


def _flag(env: dict[str, str], name: str) -> bool:
    """A yes/no variable as runners set it (CI=true, GATE_SANDBOX=1). CI with any other non-empty value is still
    CI (some runners put their name there); a GATE_* flag with another value is refused, not guessed."""
    value = env.get(name, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON or name == "CI":
        return True
    raise ConfigError(f"{name} must be 1 or 0 (or unset)")


def load_environment(env: dict[str, str] | None = None) -> Environment:
    """Read the target from the environment; the key, when given, must be well-formed. A target variable that
    is set but empty is refused by name (a CI secret that is missing), never read as "no target"."""
    env = dict(os.environ if env is None else env)
    if "DATABASE_URL" in env and not env["DATABASE_URL"].strip():
        raise ConfigError("DATABASE_URL is set but empty (a missing CI secret?): set it to the target's connection "
                          "string, or unset it")
    if env.get("DATABASE_URL"):
        empty = [name for name in TARGET_VARIABLES if name in env and not env[name].strip()]
        if empty:
            raise ConfigError(f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} set but empty "
                              "(a missing CI secret?): set or unset " + ("it" if len(empty) == 1 else "them"))
    flags = {name: _flag(env, name) for name in ("CI", "GATE_SANDBOX", "GATE_REHEARSAL", "GATE_ALLOW_WRITES")}
    if flags["GATE_SANDBOX"] and env.get("DATABASE_URL"):
        raise ConfigError("GATE_SANDBOX=1 asks for the sandbox but DATABASE_URL names a target: unset one of them")
    key = env.get("PHI_ENCRYPTION_KEY") or None
    if key is not None:
        try:
            parse_key(key)
        except PhiKeyError as exc:
            raise ConfigError(str(exc)) from None
    try:
        headers = json.loads(env.get("GATE_API_HEADERS") or "{}")
        if not isinstance(headers, dict):
            raise ValueError
    except ValueError:
        raise ConfigError('GATE_API_HEADERS must be a JSON object, e.g. {"X-Maintenance-Bypass": "..."}') from None
    if env.get("DATABASE_URL"):
        try:
            psycopg.conninfo.conninfo_to_dict(env["DATABASE_URL"])
        except psycopg.ProgrammingError:
            raise ConfigError("DATABASE_URL is not a valid connection string") from None
    if env.get("DATABASE_URL") and not key:
        raise ConfigError("DATABASE_URL is set but PHI_ENCRYPTION_KEY is not: the checks need the key")
    offset = (env.get("APP_LOG_OFFSET") or "0").strip()
    if not offset.isdigit():
        raise ConfigError("APP_LOG_OFFSET must be a byte offset (a whole number)")
    return Environment(
        database_url=env.get("DATABASE_URL") or None,
        api_base_url=(env.get("API_BASE_URL") or "").rstrip("/") or None,
        phi_key=key,
        api_username=env.get("GATE_API_USERNAME") or None,
        api_password=env.get("GATE_API_PASSWORD") or None,
        reports_dir=Path(env.get("GATE_REPORTS_DIR") or ROOT / "reports"),
        app_log_file=Path(env["APP_LOG_FILE"]) if env.get("APP_LOG_FILE") else None,
        backup_file=Path(env["BACKUP_FILE"]) if env.get("BACKUP_FILE") else None,
        baseline_url=env.get("BASELINE_DATABASE_URL") or None,
        api_headers={str(k): str(v) for k, v in headers.items()},
        ci=flags["CI"], sandbox_requested=flags["GATE_SANDBOX"], rehearsal=flags["GATE_REHEARSAL"],
        log_offset=int(offset), logs_since=env.get("GATE_LOGS_SINCE") or None,
        allow_writes=flags["GATE_ALLOW_WRITES"],
        carried_rows=Path(env["GATE_CARRIED_ROWS"]) if env.get("GATE_CARRIED_ROWS") else None,
    )


def context_by_hand(env: Environment, run_dir: Path, config: Path | None = None,
                    sandbox_provider: str | None = None) -> SuiteContext:
    """The context of a phase suite run by hand (`pytest -m premigration`, no --gate-context): its one run
    folder (--gate-run-dir, or a new one under reports/), the rest from the environment as the README lists it."""
    migration = variable("GATE_MIGRATION_FILE")
    return SuiteContext(
        run_dir=Path(run_dir), config=config, sandbox_provider=sandbox_provider,
        migration_file=Path(migration).resolve() if migration else None,
        rehearsal_kind=variable(REHEARSAL_KIND_ENV) or None, synthetic=env.synthetic,
        api_base_url=env.api_base_url, app_log_file=env.app_log_file, log_offset=env.log_offset,
        logs_since=env.logs_since, backup_file=env.backup_file, carried_rows=env.carried_rows,
        allow_writes=env.allow_writes)
