"""Configuration: the environment (where the target is, the key, the fixture user) plus one TOML file that
describes the migration (table and column mappings, the expected schema, endpoints, budgets).

Everything is validated here, once, so a bad configuration stops a run with one clear line instead of a
traceback per test. Secrets never come from the TOML file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from migration_gate.config.load import (
    KEYS,
    SECRET_ENV,
    SECTIONS,
    _answer_request,
    _api,
    _api_paths,
    _api_routes,
    _criterion_entries,
    _declared_objects,
    _foreign_keys,
    _hook_pass_env,
    _hook_timeout,
    _known_keys,
    _laid_over,
    _load,
    _minutes,
    _names,
    _need,
    _need_dict,
    _objects,
    _only,
    _pair,
    _privileges,
    _read_chain,
    _read_toml,
    _rule,
    _string_table,
    _tenancy,
    load_answers,
    load_app_role,
    load_app_server,
    load_app_tables,
    load_backup,
    load_lint,
    load_logs,
    load_not_applicable,
    load_notify,
    load_people,
    load_performance,
    load_precheck,
    load_probe,
    load_rehearsal,
    load_security,
    load_waivers,
    load_watch,
)
from migration_gate.config.model import (
    _DURATION,
    _ITEM_ID,
    _MS,
    APPEND_ONLY_FORBIDDEN,
    BACKUP_ENCRYPTION,
    DEFAULT_SANDBOX_PROVIDER,
    ENV_NAME,
    LINT_KINDS,
    LOG_FORMATS,
    LOG_SOURCES,
    NOT_APPLICABLE_KEYS,
    ON_DELETE,
    OWN_REQUEST_PATTERN,
    REHEARSAL_KIND_ENV,
    REHEARSAL_KINDS,
    RULES,
    SEQUENCE_PRIVILEGES,
    TABLE_PRIVILEGES,
    WAIVER_KEYS,
    AnswerLogin,
    AnswerRequest,
    AnswersConfig,
    ApiRoute,
    ApiRules,
    AppRole,
    AppServerConfig,
    AuditTable,
    BackupConfig,
    ColumnRule,
    ConfigError,
    Endpoint,
    ForeignKey,
    GateConfig,
    LintAllow,
    LintConfig,
    LogsConfig,
    MembershipRight,
    MoneyColumns,
    NotApplicable,
    NotifyConfig,
    PeopleItem,
    PerformanceConfig,
    PrecheckConfig,
    Probe,
    RehearsalConfig,
    SearchHash,
    TableMap,
    TableObjects,
    Tenancy,
    TenantRow,
    UniqueKey,
    UserTable,
    Visibility,
    Waiver,
    WatchConfig,
    duration_ms,
    holding_waivers,
)
from migration_gate.core.paths import ROOT
from migration_gate.core.phi import PhiKeyError, parse_key

DEFAULT_CONFIG = ROOT / "migration.toml"


# What a sandbox run's reports, summaries and sign-off say, so synthetic results are never read as the target's.
SANDBOX_BANNER = "SANDBOX: synthetic data, not your database"


# The variables that name a target: set but empty (what a CI runner gives for a missing secret) is a mistake.
TARGET_VARIABLES = ("DATABASE_URL", "PHI_ENCRYPTION_KEY", "API_BASE_URL", "GATE_API_USERNAME", "GATE_API_PASSWORD",
                    "BACKUP_FILE", "BASELINE_DATABASE_URL")


_OFF, _ON = ("", "0", "false", "no", "off"), ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Environment:
    """Where the target is. database_url None means: bring up the embedded sandbox, which outside CI needs no
    asking and in CI must be asked for (sandbox_requested: GATE_SANDBOX=1, or the plugin's --gate-sandbox).
    rehearsal: DATABASE_URL is the rehearsal's own sandbox (scripts/rehearse sets GATE_REHEARSAL=1 for its
    phase suites), so its reports carry the sandbox banner too."""

    database_url: str | None
    api_base_url: str | None
    phi_key: str | None
    api_username: str | None
    api_password: str | None
    reports_dir: Path
    app_log_file: Path | None
    backup_file: Path | None
    baseline_url: str | None
    extra: dict[str, str] = field(default_factory=dict)
    api_headers: dict[str, str] = field(default_factory=dict)
    ci: bool = False
    sandbox_requested: bool = False
    rehearsal: bool = False

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


def load_config(path: Path | None = None) -> GateConfig:
    """Read and validate the migration description (default: migration.toml at the project root).

    A description may start with `extends = "other.toml"`: that one is read first and this one's tables are laid
    over it key by key (an array, such as [[waivers]], replaces the other's). Relative paths resolve from the
    folder of the first description in the chain, the one that extends nothing."""
    path = Path(path or os.environ.get("GATE_CONFIG") or DEFAULT_CONFIG)
    data, base = _read_chain(path, [])
    where = path.name
    _known_keys(data, where)
    try:
        return _load(data, path, base, where)
    except (ValueError, TypeError) as exc:  # int("many"), float([1]): a wrong type, named in one line
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: a value has the wrong type ({exc.__class__.__name__}: {exc})") from None


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
    flags = {name: _flag(env, name) for name in ("CI", "GATE_SANDBOX", "GATE_REHEARSAL")}
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
        extra={k: v for k, v in (("log_offset", env.get("APP_LOG_OFFSET")),
                                 ("allow_writes", env.get("GATE_ALLOW_WRITES")),
                                 ("log_source", env.get("GATE_LOG_SOURCE")),
                                 ("log_marker", env.get("GATE_LOG_MARKER")),
                                 ("logs_since", env.get("GATE_LOGS_SINCE")),
                                 ("carried_rows", env.get("GATE_CARRIED_ROWS")),
                                 ("run_dir", env.get("GATE_RUN_DIR"))) if v},
        ci=flags["CI"], sandbox_requested=flags["GATE_SANDBOX"], rehearsal=flags["GATE_REHEARSAL"],
    )


# every name importers use today, handed on from model.py and load.py
__all__ = [
    'APPEND_ONLY_FORBIDDEN', 'AnswerLogin', 'AnswerRequest', 'AnswersConfig', 'ApiRoute', 'ApiRules', 'AppRole',
    'AppServerConfig', 'AuditTable', 'BACKUP_ENCRYPTION', 'BackupConfig', 'ColumnRule', 'ConfigError',
    'DEFAULT_CONFIG', 'DEFAULT_SANDBOX_PROVIDER', 'ENV_NAME', 'Endpoint', 'Environment', 'ForeignKey', 'GateConfig',
    'KEYS', 'LINT_KINDS', 'LOG_FORMATS', 'LOG_SOURCES', 'LintAllow', 'LintConfig', 'LogsConfig', 'MembershipRight',
    'MoneyColumns', 'NOT_APPLICABLE_KEYS', 'NotApplicable', 'NotifyConfig', 'ON_DELETE', 'OWN_REQUEST_PATTERN',
    'PeopleItem', 'PerformanceConfig', 'PrecheckConfig', 'Probe', 'REHEARSAL_KINDS', 'REHEARSAL_KIND_ENV', 'RULES',
    'RehearsalConfig', 'SANDBOX_BANNER', 'SECRET_ENV', 'SECTIONS', 'SEQUENCE_PRIVILEGES', 'SearchHash',
    'TABLE_PRIVILEGES', 'TARGET_VARIABLES', 'TableMap', 'TableObjects', 'Tenancy', 'TenantRow', 'UniqueKey',
    'UserTable', 'Visibility', 'WAIVER_KEYS', 'Waiver', 'WatchConfig', '_DURATION', '_ITEM_ID', '_MS', '_OFF',
    '_ON', '_answer_request', '_api', '_api_paths', '_api_routes', '_criterion_entries', '_declared_objects',
    '_flag', '_foreign_keys', '_hook_pass_env', '_hook_timeout', '_known_keys', '_laid_over', '_load', '_minutes',
    '_names', '_need', '_need_dict', '_objects', '_only', '_pair', '_privileges', '_read_chain', '_read_toml',
    '_rule', '_string_table', '_tenancy', 'duration_ms', 'holding_waivers', 'load_answers', 'load_app_role',
    'load_app_server', 'load_app_tables', 'load_backup', 'load_config', 'load_environment', 'load_lint',
    'load_logs', 'load_not_applicable', 'load_notify', 'load_people', 'load_performance', 'load_precheck',
    'load_probe', 'load_rehearsal', 'load_security', 'load_waivers', 'load_watch',
]
