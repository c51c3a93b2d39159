"""Configuration: the migration description (one TOML file: mappings, the expected schema, endpoints, budgets)
and the environment (where the target is, the key, the fixture user). This face hands on their names:
``model`` declares the description, ``load`` reads and checks it, ``environment`` is the one reader of the
process environment, ``context`` the run state the gate hands a phase suite, ``errors`` the one ConfigError.

Everything is validated once, so a bad configuration stops a run with one clear line instead of a traceback per
test. Secrets never come from the TOML file.
"""

from __future__ import annotations

from pathlib import Path

from migration_gate.config.environment import (
    _OFF,
    _ON,
    REHEARSAL_KIND_ENV,
    TARGET_VARIABLES,
    Environment,
    _flag,
    context_by_hand,
    load_environment,
    variable,
)
from migration_gate.config.errors import ConfigError
from migration_gate.config.load import (
    KEYS,
    SECRET_ENV,
    SECTIONS,
    _api,
    _declared_objects,
    _foreign_keys,
    _hook_pass_env,
    _hook_timeout,
    _known_keys,
    _laid_over,
    _load,
    _minutes,
    _need,
    _need_dict,
    _read_chain,
    _read_toml,
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
    ON_DELETE,
    OWN_REQUEST_PATTERN,
    REHEARSAL_KINDS,
    RULES,
    SEQUENCE_PRIVILEGES,
    TABLE_PRIVILEGES,
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

DEFAULT_CONFIG = ROOT / "migration.toml"


# What a sandbox run's reports, summaries and sign-off say, so synthetic results are never read as the target's.
SANDBOX_BANNER = "SANDBOX: synthetic data, not your database"


def load_config(path: Path | None = None) -> GateConfig:
    """Read and validate the migration description (default: migration.toml at the project root).

    A description may start with `extends = "other.toml"`: that one is read first and this one's tables are laid
    over it key by key (an array, such as [[waivers]], replaces the other's). Relative paths resolve from the
    folder of the first description in the chain, the one that extends nothing."""
    path = Path(path or variable("GATE_CONFIG") or DEFAULT_CONFIG)
    data, base = _read_chain(path, [])
    where = path.name
    _known_keys(data, where)
    try:
        return _load(data, path, base, where)
    except (ValueError, TypeError) as exc:  # int("many"), float([1]): a wrong type, named in one line
        if isinstance(exc, ConfigError):
            raise
        # the error's own text would quote the value (int("twenty"): "invalid literal ... 'twenty'"): named, not shown
        raise ConfigError(f"{where}: a value has the wrong type ({exc.__class__.__name__})") from None


# every name importers use today, handed on from model.py and load.py
__all__ = [
    'APPEND_ONLY_FORBIDDEN', 'AnswerLogin', 'AnswerRequest', 'AnswersConfig', 'ApiRoute', 'ApiRules', 'AppRole',
    'AppServerConfig', 'AuditTable', 'BACKUP_ENCRYPTION', 'BackupConfig', 'ColumnRule', 'ConfigError',
    'DEFAULT_CONFIG', 'DEFAULT_SANDBOX_PROVIDER', 'ENV_NAME', 'Endpoint', 'Environment', 'ForeignKey', 'GateConfig',
    'KEYS', 'LINT_KINDS', 'LOG_FORMATS', 'LOG_SOURCES', 'LintAllow', 'LintConfig', 'LogsConfig', 'MembershipRight',
    'MoneyColumns', 'NotApplicable', 'NotifyConfig', 'ON_DELETE', 'OWN_REQUEST_PATTERN',
    'PeopleItem', 'PerformanceConfig', 'PrecheckConfig', 'Probe', 'REHEARSAL_KINDS', 'REHEARSAL_KIND_ENV', 'RULES',
    'RehearsalConfig', 'SANDBOX_BANNER', 'SECRET_ENV', 'SECTIONS', 'SEQUENCE_PRIVILEGES', 'SearchHash',
    'TABLE_PRIVILEGES', 'TARGET_VARIABLES', 'TableMap', 'TableObjects', 'Tenancy', 'TenantRow', 'UniqueKey',
    'UserTable', 'Visibility', 'Waiver', 'WatchConfig', '_DURATION', '_ITEM_ID', '_MS', '_OFF',
    '_ON', '_api', '_declared_objects',
    '_flag', '_foreign_keys', '_hook_pass_env', '_hook_timeout', '_known_keys', '_laid_over', '_load', '_minutes',
    '_need', '_need_dict', '_read_chain', '_read_toml',
    'context_by_hand', 'duration_ms', 'holding_waivers', 'load_answers',
    'load_app_role', 'load_app_server', 'load_app_tables', 'load_backup', 'load_config', 'load_environment',
    'load_lint', 'load_logs', 'load_not_applicable', 'load_notify', 'load_people', 'load_performance',
    'load_precheck', 'load_probe', 'load_rehearsal', 'load_security', 'load_waivers', 'load_watch',
]
