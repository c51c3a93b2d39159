"""Configuration: the environment (where the target is, the key, the fixture user) plus one TOML file that
describes the migration (table and column mappings, the expected schema, endpoints, budgets).

Everything is validated here, once, so a bad configuration stops a run with one clear line instead of a
traceback per test. Secrets never come from the TOML file.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import psycopg

from migration_gate.core.criteria import CRITERIA
from migration_gate.core.errors import MigrationGateError
from migration_gate.core.paths import ROOT
from migration_gate.core.phi import PhiKeyError, parse_key

DEFAULT_CONFIG = ROOT / "migration.toml"
# The embedded sandbox, plugged in by name (migration_gate.run.provider); [sandbox] provider or GATE_SANDBOX_PROVIDER.
DEFAULT_SANDBOX_PROVIDER = "sandbox.provider:SandboxProvider"
ON_DELETE = {"restrict": "r", "cascade": "c", "no action": "a", "set null": "n", "set default": "d"}


class ConfigError(MigrationGateError, ValueError):
    """The configuration is unusable; the message is one line naming what and where."""


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    references: str
    on_delete: str  # pg_constraint.confdeltype letter

    @property
    def label(self) -> str:
        return f"{self.table}.{self.column} -> {self.references}"


RULES = ("null", "phi", "value", "tenancy", "search_hash", "key", "derived")


@dataclass(frozen=True)
class ColumnRule:
    """How a new column without a legacy source gets its value, and so which check verifies it: "null" (every
    migrated row NULL), "phi" (a PHI column the new schema adds: NULL after the migration, v1 ciphertext once the
    app writes it), "value" (every migrated row equal to `value`), "tenancy" (the tenancy checks), "search_hash"
    (the search-hash checks), "key" (the row's key), "derived" (a derived value; `reason` names its check)."""

    kind: str
    value: object = None
    reason: str = ""


@dataclass(frozen=True)
class TableMap:
    """One legacy table and the new table it becomes (or feeds: `partial` new tables have rows of their own)."""

    new: str
    legacy: str
    key: str
    columns: dict[str, str]  # legacy -> new, non-PHI
    phi: dict[str, str]  # legacy -> new, ciphertext
    hashes: dict[str, str]  # legacy -> new, search hashes
    owner: tuple[str, str] | None = None  # (legacy, new) therapist column
    soft_delete: tuple[str, str] | None = None  # (legacy, new) deleted-flag column
    append_only: bool = False  # rows added after the backup are expected (audit logs); only older rows compared
    legacy_key: str = ""  # the legacy side's key column when it differs from `key` (default: the same)
    encrypt: dict[str, str] = field(default_factory=dict)  # legacy plaintext -> new ciphertext
    dropped: dict[str, str] = field(default_factory=dict)  # legacy column -> why it has no new column
    new_columns: dict[str, ColumnRule] = field(default_factory=dict)  # new column without a legacy source
    partial: bool = False  # the new table has rows without a legacy source (e.g. one per user, not per profile)
    name: str = ""  # the [tables.<name>] section
    count_by: tuple[str, ...] = ()  # legacy columns (mapped in `columns`) whose per-value counts must agree

    @property
    def source_key(self) -> str:
        return self.legacy_key or self.key

    def mapped_legacy(self) -> set[str]:
        return {self.source_key, *self.columns, *self.phi, *self.hashes, *self.encrypt}

    def mapped_new(self) -> set[str]:
        return {self.key, *self.columns.values(), *self.phi.values(), *self.hashes.values(), *self.encrypt.values()}


@dataclass(frozen=True)
class TableObjects:
    """What a table must carry besides its columns; anything else found there is a finding."""

    unique: tuple[tuple[str, ...], ...] = ()
    checks: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()  # key columns, then "WHERE <predicate>" for a partial index
    triggers: tuple[str, ...] = ()
    row_level_security: bool = False
    policies: tuple[str, ...] = ()


@dataclass(frozen=True)
class TenantRow:
    """Which column ties a row to its organization: directly through its owner's membership, or through a parent
    row (a session is in its patient's organization)."""

    table: str
    column: str
    owner: str | None = None  # the user column whose primary-owner membership names the organization
    through: str | None = None  # or: the column pointing at the parent row...
    parent: str | None = None  # ...of this table, whose own organization column is the same


@dataclass(frozen=True)
class Tenancy:
    organizations: str
    memberships: str
    users: str
    membership_organization: str
    membership_user: str
    primary_owner: str
    active: str
    role_column: str
    owner_role: str
    owner_flags: tuple[str, ...]
    organization_type: tuple[str, str] | None  # (column, value) every derived organization has
    organization_name: dict[str, str]  # profiles, profile_user, profile_name, fallback, suffix
    one_per_user: bool
    rows: tuple[TenantRow, ...]


@dataclass(frozen=True)
class SearchHash:
    table: str
    hash: str
    source: str
    plaintext: bool = False


@dataclass(frozen=True)
class Endpoint:
    path: str
    shape: str
    count_table: str | None = None


@dataclass(frozen=True)
class UserTable:
    """Where login's users live: the fixture user is matched by username (id, status, bcrypt hash)."""

    table: str
    key: str = "id"
    username: str = "username"
    password: str = "password"
    status: str | None = None
    active_value: str = "active"
    schema: str = "public"  # default: the migration's schema


@dataclass(frozen=True)
class AuditTable:
    """The append-only audit log the app writes on every PHI read, and how long its rows are kept."""

    table: str
    user: str = "user_id"
    resource_type: str = "resource_type"
    retention: str | None = None  # the column holding the date a row may be deleted
    retention_period: str = "7 years"
    schema: str = "public"  # default: the migration's schema


@dataclass(frozen=True)
class Visibility:
    """Which rows of `table` the signed-in user sees: their own (`owner` = the user, `active` true when named),
    or, with `organization`, the rows of organizations where an active membership grants them (the rights)."""

    table: str
    owner: str
    organization: str | None = None
    active: str | None = None


@dataclass(frozen=True)
class MembershipRight:
    """What a membership with one of `roles` sees of its organization: "all" rows (when `flag` is true), its
    "own" rows, or the rows of the "selected" owners listed in the JSON array column `list`."""

    roles: tuple[str, ...]
    sees: str
    flag: str | None = None
    list: str | None = None


@dataclass(frozen=True)
class Probe:
    """POST-16's probe as the app takes it ([api.probe]): the route creating a patient and its body's names for the
    name, email and phone; the route reading one patient back ({id}) and its field holding the decrypted email; the
    search route and its body's field. The defaults are the loma-org app's contract (target-app.md section 12)."""

    create: str = "/api/patients"
    name: str = "name"
    email: str = "contactEmail"
    phone: str = "contactPhone"
    read: str = "/api/patients/{id}"
    search: str = "/api/patients/search"
    term: str = "searchTerm"
    email_field: str = "patientContactEmail"


def load_probe(spec: object, where: str) -> Probe:
    """[api.probe] validated: routes start with /, field names are non-empty strings."""
    if spec is None:
        return Probe()
    spec = _only(spec, set(Probe.__dataclass_fields__), where)
    for key, value in spec.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: {key} must be a non-empty string")
        if key in ("create", "search", "read") and not value.startswith("/"):
            raise ConfigError(f"{where}: {key} must be a path starting with /")
        if key == "read" and "{id}" not in value:
            raise ConfigError(f"{where}: read must hold {{id}} (the created patient's id)")
    return Probe(**spec)


@dataclass(frozen=True)
class ApiRoute:
    """An authenticated GET the app must answer 2xx (POST-21). A path with "{id}" takes the id of the first record
    of the list `ids_from` answers (its `data`)."""

    path: str
    ids_from: str | None = None


@dataclass(frozen=True)
class ApiRules:
    """The app's API as the checks use it: endpoints, PHI reads that are audited, the users table login reads,
    and the visibility rule behind each count comparison (count_table -> {"new": ..., "legacy": ...})."""

    endpoints: tuple[Endpoint, ...] = ()
    audited: dict[str, str] = field(default_factory=dict)
    users: UserTable | None = None
    audit: AuditTable | None = None
    visibility: dict[str, dict[str, Visibility]] = field(default_factory=dict)
    rights: tuple[MembershipRight, ...] = ()
    memberships: Tenancy | None = None  # the [tenancy] memberships an organization rule goes through
    schema: str = "public"
    probe: Probe = field(default_factory=Probe)  # POST-16's create and search requests ([api.probe])
    debug_routes: tuple[str, ...] = ()  # GETs that must not answer without a token (POST-20)
    user_routes: tuple[str, ...] = ()  # GETs that return the signed-in user: no password hash (POST-09)
    routes: tuple[ApiRoute, ...] = ()  # further authenticated GETs that must answer 2xx (POST-21)


@dataclass(frozen=True)
class UniqueKey:
    table: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class MoneyColumns:
    table: str
    columns: tuple[str, ...]


TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")
APPEND_ONLY_FORBIDDEN = ("UPDATE", "DELETE", "TRUNCATE")


@dataclass(frozen=True)
class AppRole:
    """The role the app connects as (not the owner) and exactly the privileges it needs: `privileges` on every
    table of the schema, unless `tables` names the table; `sequences` on each sequence a nextval default draws
    from. A check holds the new tables to this, so the deploy cannot leave the app unable to write, or able to
    rewrite an append-only audit table."""

    name: str
    privileges: frozenset[str]
    sequences: frozenset[str]
    tables: dict[str, frozenset[str]] = field(default_factory=dict)

    def table_privileges(self, table: str) -> frozenset[str]:
        return self.tables.get(table, self.privileges)


def _privileges(value: object, allowed: tuple[str, ...], where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of privileges ({', '.join(allowed)})")
    found = frozenset(v.upper() for v in value)
    unknown = sorted(found - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]} is not one of {', '.join(allowed)}")
    return found


def load_app_role(spec: dict | None, where: str) -> AppRole | None:
    """[app_role]: name, privileges, sequences, and per-table privileges in [app_role.tables]."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(spec) - {"name", "privileges", "sequences", "tables"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}")
    return AppRole(
        name=_need(spec, "name", str, where),
        privileges=_privileges(_need(spec, "privileges", list, where), TABLE_PRIVILEGES, f"{where} privileges"),
        sequences=_privileges(spec.get("sequences", []), SEQUENCE_PRIVILEGES, f"{where} sequences"),
        tables={str(t): _privileges(v, TABLE_PRIVILEGES, f"{where} tables.{t}")
                for t, v in _need_dict(spec, "tables", where).items()})


def _need_dict(spec: dict, key: str, where: str) -> dict:
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{key}' must be a table")
    return value


LOG_SOURCES = ("jsonl", "text", "command")
LOG_FORMATS = ("jsonl", "text")
# The line the real app writes for every forged or malformed token ("Authentication error: JsonWebTokenError:
# invalid signature"); the sandbox API's auth_failed line carries the same name.
OWN_REQUEST_PATTERN = r"\bJsonWebTokenError\b"


@dataclass(frozen=True)
class LogsConfig:
    """[logs]: where the log check (POST-11) takes the app's lines from. "jsonl" or "text" read a file (APP_LOG_FILE,
    else `path`) from the byte offset taken at deploy; "command" runs the [hooks] command named by `hook`, which
    prints the lines since GATE_LOGS_SINCE (ISO-8601 UTC, in its environment) in `format`. `error_pattern` (a
    regex, text lines only) says which lines are errors; `settle_seconds` how long an empty window is read
    again (a host's log API lags); `timeout_seconds` bounds the command. `own_request_pattern` (a regex; "" for
    none) matches the error lines the checks' own deliberate bad requests cause (migration_gate.app.ownrequests)."""

    source: str = "jsonl"
    path: Path | None = None
    format: str = "jsonl"  # of the lines: the file's for file sources, the command's stdout for "command"
    error_pattern: str | None = None
    hook: str = "logs_since"
    timeout_seconds: float = 60.0
    settle_seconds: float = 0.0
    own_request_pattern: str | None = OWN_REQUEST_PATTERN


def load_logs(spec: object, hooks: dict[str, str], base: Path, where: str) -> LogsConfig:
    """[logs], validated: a source we know, a format we read, a regex that compiles, a hook that exists."""
    if spec is None:
        return LogsConfig()
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(spec) - {"source", "path", "format", "error_pattern", "hook", "timeout_seconds", "settle_seconds",
                           "own_request_pattern"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}")
    source = str(spec.get("source", "jsonl"))
    if source not in LOG_SOURCES:
        raise ConfigError(f"{where}: source must be one of {', '.join(LOG_SOURCES)}")
    default_format = "text" if source == "text" else "jsonl"
    line_format = str(spec.get("format", default_format))
    if line_format not in LOG_FORMATS or (source != "command" and line_format != default_format):
        raise ConfigError(f"{where}: format must be " + ("jsonl or text" if source == "command" else default_format)
                          + f" for source {source}")
    pattern = spec.get("error_pattern")
    if pattern is not None:
        if line_format != "text":
            raise ConfigError(f"{where}: error_pattern applies to text lines only (format = \"text\")")
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise ConfigError(f"{where}: error_pattern is not a valid regular expression ({exc})") from None
    own = spec.get("own_request_pattern", OWN_REQUEST_PATTERN)
    if not isinstance(own, str):
        raise ConfigError(f"{where}: own_request_pattern must be a string (a regular expression, or \"\" for none)")
    try:
        re.compile(own)
    except re.error as exc:
        raise ConfigError(f"{where}: own_request_pattern is not a valid regular expression ({exc})") from None
    hook = str(spec.get("hook", "logs_since"))
    if source == "command" and not hooks.get(hook):
        raise ConfigError(f"{where}: source \"command\" needs the command [hooks] {hook}")
    if source == "command" and "path" in spec:
        raise ConfigError(f"{where}: path applies to file sources only")
    numbers = {k: spec.get(k, d) for k, d in (("timeout_seconds", 60.0), ("settle_seconds", 0.0))}
    timeout, settle = (_need(numbers, k, float, where) for k in numbers)
    if timeout <= 0 or settle < 0:
        raise ConfigError(f"{where}: timeout_seconds must be positive and settle_seconds not negative")
    path = (base / str(spec["path"])).resolve() if spec.get("path") else None
    return LogsConfig(source=source, path=path, format=line_format,
                      error_pattern=str(pattern) if pattern is not None else None, hook=hook,
                      timeout_seconds=timeout, settle_seconds=settle, own_request_pattern=own or None)


BACKUP_ENCRYPTION = ("age", "none")


@dataclass(frozen=True)
class BackupConfig:
    """[backup]: how the dump is kept. `encrypt` "age" (default) streams pg_dump into an age file for `recipients`
    (public keys, plus GATE_BACKUP_RECIPIENTS); "none" keeps a plaintext dump and the sign-off warns loudly. The
    identity that decrypts (a private key) comes from the environment (GATE_BACKUP_IDENTITY), never from here.
    Retention is what the sign-off states: days the local copy is kept, and the remote store's own rule."""

    encrypt: str = "age"
    recipients: tuple[str, ...] = ()
    retention_days_local: int = 7
    retention_remote: str = "as the store_backup destination's own lifecycle rule keeps it (not configured)"
    hook_timeout_seconds: float = 1800.0  # store_backup / fetch_backup may upload or download gigabytes
    dump_timeout_seconds: float = 3600.0  # pg_dump streaming into the encryptor
    change_check: str = "digest"  # before migrating: "digest" (exact) or "counters" (pg_stat_user_tables, fast)
    # pg_dump's gzip level: 0 by measurement (100,000 patients: 7.7 s for 297 MB at 0, 15.5 s for 131 MB at 1,
    # 48 s for 120 MB at 6; gzip in pg_dump's one process is the bottleneck, the age stream is not)
    compress: int = 0
    # connections and pg_restore streams a backup works with: the snapshot's checksums beside pg_dump, the
    # restore's data; 0: the machine's cores (at most 4)
    jobs: int = 0

    @property
    def workers(self) -> int:
        """`jobs`, or the machine's cores (at least 1, at most 4) when it is 0."""
        return self.jobs or max(1, min(4, os.cpu_count() or 1))


def load_backup(spec: object, where: str) -> BackupConfig:
    """[backup] validated: unknown keys, wrong types and an unknown mode are one line each."""
    if spec is None:
        return BackupConfig()
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table")
    allowed = set(BackupConfig.__dataclass_fields__)
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}")
    encrypt = spec.get("encrypt", "age")
    if encrypt not in BACKUP_ENCRYPTION:
        raise ConfigError(f"{where}: encrypt must be one of {', '.join(BACKUP_ENCRYPTION)}")
    recipients = spec.get("recipients", [])
    if not isinstance(recipients, list) or not all(isinstance(r, str) and r.startswith("age1") for r in recipients):
        raise ConfigError(f"{where}: recipients must be a list of age public keys (age1...)")
    change_check = spec.get("change_check", "digest")
    if change_check not in ("digest", "counters"):
        raise ConfigError(f"{where}: change_check must be 'digest' or 'counters'")
    numbers = {}
    for key in ("retention_days_local", "hook_timeout_seconds", "dump_timeout_seconds"):
        value = spec.get(key, getattr(BackupConfig, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: {key} must be a non-negative number")
        numbers[key] = value
    for key, most in (("compress", 9), ("jobs", 64)):
        value = spec.get(key, getattr(BackupConfig, key))
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
            raise ConfigError(f"{where}: {key} must be a whole number from 0 to {most}")
        numbers[key] = value
    if not isinstance(spec.get("retention_remote", ""), str):
        raise ConfigError(f"{where}: retention_remote must be a string")
    return BackupConfig(encrypt=encrypt, recipients=tuple(recipients),
                        retention_days_local=int(numbers["retention_days_local"]),
                        retention_remote=spec.get("retention_remote", BackupConfig.retention_remote),
                        hook_timeout_seconds=float(numbers["hook_timeout_seconds"]),
                        dump_timeout_seconds=float(numbers["dump_timeout_seconds"]), change_check=change_check,
                        compress=numbers["compress"], jobs=numbers["jobs"])


# A PostgreSQL duration as SET accepts it ("2s", "500ms", "10min"; a bare number is milliseconds).
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$")
_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text: str) -> float:
    """Milliseconds of a PostgreSQL duration ("2s" is 2000.0); ValueError when it is not one."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _MS[match.group(2) or "ms"]


@dataclass(frozen=True)
class PrecheckConfig:
    """[precheck]: the settings every pre-check session on the live target starts with. The app is serving while
    the pre-checks run, so a check that would wait for a lock gives up after lock_timeout (red, one line) rather
    than queue with the app's queries behind it; statement_timeout bounds any one query (the checksums included)."""

    lock_timeout: str = "2s"
    statement_timeout: str = "10min"

    def settings(self) -> dict[str, str]:
        return {"lock_timeout": self.lock_timeout, "statement_timeout": self.statement_timeout}


def load_precheck(spec: object, where: str) -> PrecheckConfig:
    """[precheck] validated: both timeouts PostgreSQL durations above zero (0 would mean wait forever)."""
    if spec is None:
        return PrecheckConfig()
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table")
    values = {}
    for key in ("lock_timeout", "statement_timeout"):
        value = spec.get(key, getattr(PrecheckConfig, key))
        try:
            if isinstance(value, bool) or not isinstance(value, str) or duration_ms(value) <= 0:
                raise ValueError(value)
        except ValueError:
            raise ConfigError(f"{where}: {key} must be a duration above zero such as '2s' or '10min' "
                              "(0 would let a pre-check wait forever)") from None
        values[key] = value.strip()
    return PrecheckConfig(**values)


LINT_KINDS = ("table-rewrite", "full-scan-under-lock", "destructive", "no-lock-timeout")


@dataclass(frozen=True)
class LintAllow:
    line: int
    kind: str
    reason: str


@dataclass(frozen=True)
class LintConfig:
    """[lint]: which of the migration's hazards (migration_gate.checks.lint) are red. Nothing is denied by default: the
    gate migrates inside the maintenance window, where a lock blocks no user and the window's length is the
    budgets' business; a team that migrates while the app serves denies table-rewrite and full-scan-under-lock.
    A hazard on a table below every configured size threshold stays a note; an allowed one is a note with its
    reason."""

    deny: tuple[str, ...] = ()
    min_rows: int = 0
    min_bytes: int = 0
    allow: tuple[LintAllow, ...] = ()


def load_lint(spec: object, where: str) -> LintConfig:
    """[lint] validated: known kinds only, thresholds whole numbers >= 0, every allow with line, kind and reason."""
    if spec is None:
        return LintConfig()
    spec = _only(spec, {"deny", "min_rows", "min_bytes", "allow"}, where)
    deny = spec.get("deny", [])
    if not isinstance(deny, list) or any(k not in LINT_KINDS for k in deny):
        raise ConfigError(f"{where}: deny must be a list of {', '.join(LINT_KINDS)}")
    numbers = {}
    for key in ("min_rows", "min_bytes"):
        value = spec.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: {key} must be a whole number >= 0")
        numbers[key] = value
    allow = []
    for entry in spec.get("allow", []):
        line, kind, reason = (entry.get(k) for k in ("line", "kind", "reason")) if isinstance(entry, dict) else (
            None, None, None)
        if (isinstance(line, bool) or not isinstance(line, int) or kind not in LINT_KINDS
                or not isinstance(reason, str) or not reason.strip() or set(entry) - {"line", "kind", "reason"}):
            raise ConfigError(f"{where}: each allow entry needs line (a number), kind (one of "
                              f"{', '.join(LINT_KINDS)}) and a reason, nothing else")
        allow.append(LintAllow(line, kind, reason.strip()))
    return LintConfig(deny=tuple(deny), allow=tuple(allow), **numbers)


@dataclass(frozen=True)
class PerformanceConfig:
    """[performance]: the baseline the pre-checks measure on the legacy app and the budget the post-checks and
    go-live hold the new schema to: red when p95_after > p95_factor * p95_before + p95_allowance_ms (or the error
    rate rises). `requests` per endpoint, sent by `workers` threads (1: one after another)."""

    requests: int = 40
    workers: int = 1
    p95_factor: float = 1.5
    p95_allowance_ms: float = 50.0
    max_seconds: float = 120.0


def load_performance(spec: object, where: str) -> PerformanceConfig:
    """[performance] validated: counts at least 1, factor at least 1, allowance and duration not negative."""
    if spec is None:
        return PerformanceConfig()
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table")
    values: dict[str, float] = {}
    for key, least in (("requests", 1), ("workers", 1), ("p95_factor", 1), ("p95_allowance_ms", 0),
                       ("max_seconds", 1)):
        value = spec.get(key, getattr(PerformanceConfig, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or value < least:
            raise ConfigError(f"{where}: {key} must be a number of at least {least}")
        values[key] = value
    return PerformanceConfig(requests=int(values["requests"]), workers=int(values["workers"]),
                             p95_factor=float(values["p95_factor"]),
                             p95_allowance_ms=float(values["p95_allowance_ms"]),
                             max_seconds=float(values["max_seconds"]))


@dataclass(frozen=True)
class AnswerLogin:
    """One login the app's answers are recorded for: a username and the NAME of the environment variable holding
    its password (never the password: it does not belong in the description)."""

    username_env: str = "GATE_API_USERNAME"
    password_env: str = "GATE_API_PASSWORD"
    username: str | None = None  # a literal username instead of username_env


@dataclass(frozen=True)
class AnswerRequest:
    """One read request whose answers must be the same after the cut-over. `path` may hold "{id}": it is then
    requested once per record id of the request `ids_from` (at most [answers] sample of them per login).
    `records`: where the records are in the JSON (dotted; a list, or one object); `id`: each record's id field."""

    path: str
    records: str = "data"
    id: str = "id"
    ids_from: str | None = None
    paginated: bool = False  # walk ?page=N&limit=[answers] page_size up to [answers] max_pages
    new_path: str | None = None  # the new app's route for the same records (default: path; {id} the same ids)
    on_new: bool = True  # False (new_path = false): the new app has no such route; recorded before, not compared


@dataclass(frozen=True)
class AnswersConfig:
    """[answers]: the app's answers recorded before the cut-over and compared per record after it."""

    logins: tuple[AnswerLogin, ...] = (AnswerLogin(),)
    requests: tuple[AnswerRequest, ...] = ()
    sample: int = 20  # ids per login for a request with {id}; 0: all of them
    page_size: int = 100
    max_pages: int = 20
    renames: dict[str, str] = field(default_factory=dict)  # legacy field name -> the new API's
    ignore: tuple[str, ...] = ()  # fields left out on both sides (names or shell patterns: "*Encrypted")
    added: tuple[str, ...] = ()  # fields only the new API has (expected, not compared; patterns too)
    nested: tuple[str, ...] = ()  # nested objects compared by their own keys, as dotted fields (patient.name)
    absent_equals_null: bool = True  # a field left out on one side equals null on the other


def _names(spec: dict, key: str, where: str) -> tuple[str, ...]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key} must be a list of field names")
    return tuple(value)


def _answer_request(spec: object, paths: set[str], where: str) -> AnswerRequest:
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or not spec["path"].startswith("/"):
        raise ConfigError(f"{where}: each request needs a path starting with /")
    unknown = set(spec) - {"path", "records", "id", "ids_from", "paginated", "new_path"}
    if unknown:
        raise ConfigError(f"{where}: request {spec['path']}: unknown key {sorted(unknown)[0]}")
    new_path = spec.get("new_path")
    if new_path is not None and new_path is not False and not (isinstance(new_path, str) and new_path.startswith("/")):
        raise ConfigError(f"{where}: request {spec['path']}: new_path must be a path starting with / (or false: "
                          "the new app has no such route)")
    if isinstance(new_path, str) and ("{id}" in new_path) != ("{id}" in spec["path"]):
        raise ConfigError(f"{where}: request {spec['path']}: new_path must hold {{id}} exactly when path does")
    request = AnswerRequest(path=spec["path"], records=str(spec.get("records", "data")), id=str(spec.get("id", "id")),
                            ids_from=spec.get("ids_from"), paginated=bool(spec.get("paginated", False)),
                            new_path=new_path or None, on_new=new_path is not False)
    templated = "{id}" in request.path
    if templated != (request.ids_from is not None):
        raise ConfigError(f"{where}: request {request.path}: a path with {{id}} needs ids_from (and only it)")
    if request.ids_from is not None and request.ids_from not in paths:
        raise ConfigError(f"{where}: request {request.path}: ids_from {request.ids_from} is not a request "
                          "listed before it")
    return request


def load_answers(spec: object, where: str) -> AnswersConfig:
    """[answers] validated: logins name environment variables, requests are well-formed, counts positive."""
    if spec is None:
        return AnswersConfig()
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table")
    logins = []
    for item in spec.get("logins", [{}]):
        if not isinstance(item, dict) or set(item) - {"username", "username_env", "password_env"}:
            raise ConfigError(f"{where}: each login is {{ username_env = ..., password_env = ... }} "
                              "(or username = ...): the password itself never goes in this file")
        if "password" in item:
            raise ConfigError(f"{where}: a login names the environment variable of its password (password_env)")
        login = AnswerLogin(username_env=str(item.get("username_env", "GATE_API_USERNAME")),
                            password_env=str(item.get("password_env", "GATE_API_PASSWORD")),
                            username=item.get("username"))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", login.password_env):
            raise ConfigError(f"{where}: password_env must be an environment variable's name")
        logins.append(login)
    requests: list[AnswerRequest] = []
    for item in spec.get("requests", []):
        requests.append(_answer_request(item, {r.path for r in requests}, where))
    counts = {}
    for key, least in (("sample", 0), ("page_size", 1), ("max_pages", 1)):
        value = spec.get(key, getattr(AnswersConfig, key))
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}: {key} must be a whole number of at least {least}")
        counts[key] = value
    renames = spec.get("renames", {})
    if not isinstance(renames, dict) or not all(isinstance(v, str) for v in renames.values()):
        raise ConfigError(f"{where}: renames must map legacy field names to the new API's")
    unknown = set(spec) - {"logins", "requests", "sample", "page_size", "max_pages", "renames", "ignore", "added",
                           "nested", "absent_equals_null"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}")
    absent = spec.get("absent_equals_null", True)
    if not isinstance(absent, bool):
        raise ConfigError(f"{where}: absent_equals_null must be true or false")
    return AnswersConfig(logins=tuple(logins) or (AnswerLogin(),), requests=tuple(requests), renames=dict(renames),
                         ignore=_names(spec, "ignore", where), added=_names(spec, "added", where),
                         nested=_names(spec, "nested", where), absent_equals_null=absent, **counts)


@dataclass(frozen=True)
class PeopleItem:
    """One human item of the checklist ([[people]]): what someone attests (scripts/attest) before or after the
    cut-over. `decision_maker` marks the item whose attestation names the rollback decision maker."""

    id: str
    text: str
    required_before_cutover: bool = True
    decision_maker: bool = False


_ITEM_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def load_people(spec: object, where: str) -> tuple[PeopleItem, ...]:
    """[[people]] validated: unique ids a command line can name, a text each, at most one decision maker."""
    if spec is None:
        return ()
    if not isinstance(spec, list) or not all(isinstance(item, dict) for item in spec):
        raise ConfigError(f"{where}: must be an array of tables ([[people]])")
    items = []
    for number, item in enumerate(spec, 1):
        unknown = sorted(set(item) - set(PeopleItem.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"{where} item {number}: unknown key {unknown[0]} (known: "
                              f"{', '.join(PeopleItem.__dataclass_fields__)})")
        if not isinstance(item.get("id"), str) or not _ITEM_ID.match(item["id"]):
            raise ConfigError(f"{where} item {number}: id must be lower-case letters, digits, '-' or '_'")
        if not isinstance(item.get("text"), str) or not item["text"].strip():
            raise ConfigError(f"{where} {item['id']}: text must be a non-empty string")
        flags = {k: item.get(k, getattr(PeopleItem, k)) for k in ("required_before_cutover", "decision_maker")}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ConfigError(f"{where} {item['id']}: required_before_cutover and decision_maker must be true or false")
        items.append(PeopleItem(id=item["id"], text=item["text"].strip(), **flags))
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: item id {next(i for i in ids if ids.count(i) > 1)} appears twice")
    if sum(i.decision_maker for i in items) > 1:
        raise ConfigError(f"{where}: only one item may be the decision_maker")
    return tuple(items)


@dataclass(frozen=True)
class Waiver:
    """A known fault of the app a team goes live with knowingly ([[waivers]]): the criterion, the exact problem line
    it matches (or a pattern the whole line matches, for counts that differ between rehearsal and production),
    why, who decided and until when. A finding it matches is shown as waived, never hidden; an expired waiver, or
    one that matched nothing in a run of its criterion, is red."""

    criterion: str
    reason: str
    decided_by: str
    expires: date  # the last day it holds
    finding: str = ""  # the exact problem line, as the report shows it
    finding_regex: str = ""  # or a pattern the whole problem line matches

    @property
    def label(self) -> str:
        """How messages name it: the criterion and the finding (or its pattern) it was written for."""
        return f"{self.criterion} '{self.finding}'" if self.finding else f"{self.criterion} /{self.finding_regex}/"

    def matches(self, line: str) -> bool:
        line = line.strip()
        return line == self.finding if self.finding else re.fullmatch(self.finding_regex, line) is not None

    def expired(self, today: date) -> bool:
        return today > self.expires


def holding_waivers(waivers: tuple[Waiver, ...], criterion: str | None, today: date) -> list[tuple[int, Waiver]]:
    """The waivers of this criterion that hold today, each with its number in the description (the suites' plugin
    and the watch both waive by these, so a finding waived at the post-checks is waived in the watch too)."""
    return [(n, w) for n, w in enumerate(waivers) if criterion and w.criterion == criterion and not w.expired(today)]


WAIVER_KEYS = ("criterion", "finding", "finding_regex", "reason", "decided_by", "expires")


def _criterion_entries(spec: object, where: str, section: str, keys: tuple[str, ...],
                       example: str) -> Iterator[tuple[str, dict, dict[str, str]]]:
    """An array of tables about checklist criteria ([[waivers]], [[not_applicable]]), each entry checked the same
    way: known keys only, a non-empty criterion, reason and decided_by, and a criterion the checklist has. Yields
    (where the entry is, the entry, those three texts stripped)."""
    if spec is None:
        return
    if not isinstance(spec, list) or not all(isinstance(item, dict) for item in spec):
        raise ConfigError(f"{where}: must be an array of tables ([[{section}]])")
    for number, item in enumerate(spec, 1):
        spot = f"{where} item {number}"
        unknown = sorted(set(item) - set(keys))
        if unknown:
            raise ConfigError(f"{spot}: unknown key {unknown[0]} (known: {', '.join(keys)})")
        texts = {}
        for key in ("criterion", "reason", "decided_by"):
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{spot}: needs {key} (a non-empty string)")
            texts[key] = value.strip()
        if texts["criterion"] not in CRITERIA:
            raise ConfigError(f"{spot}: criterion {texts['criterion']} is not a checklist criterion (e.g. {example})")
        yield spot, item, texts


def load_waivers(spec: object, where: str) -> tuple[Waiver, ...]:
    """[[waivers]] validated: a known criterion, one finding (exact or a pattern), a reason, who decided and an
    expiry date each; the same finding waived twice for one criterion is refused (which one would it be?)."""
    found: list[Waiver] = []
    for spot, item, texts in _criterion_entries(spec, where, "waivers", WAIVER_KEYS, "POST-09"):
        given = [k for k in ("finding", "finding_regex") if k in item]
        if len(given) != 1 or not isinstance(item[given[0]], str) or not item[given[0]].strip():
            raise ConfigError(f"{spot}: give the finding it waives as finding (the exact problem line) or "
                              "finding_regex (a pattern of the whole line), one of them, a non-empty string")
        if given == ["finding_regex"]:
            try:
                re.compile(item["finding_regex"])
            except re.error as exc:
                raise ConfigError(f"{spot}: finding_regex is not a valid regular expression ({exc})") from None
        expires = item.get("expires")
        if isinstance(expires, str):
            try:
                expires = date.fromisoformat(expires.strip())
            except ValueError:
                expires = None
        if not isinstance(expires, date) or isinstance(expires, datetime):
            raise ConfigError(f"{spot}: expires must be a date such as 2027-01-31 (the last day the waiver holds)")
        found.append(Waiver(**texts, expires=expires, **{given[0]: item[given[0]].strip()}))
    labels = [w.label for w in found]
    twice = next((label for label in labels if labels.count(label) > 1), None)
    if twice:
        raise ConfigError(f"{where}: {twice} is waived twice")
    return tuple(found)


@dataclass(frozen=True)
class NotApplicable:
    """A criterion the description says does not apply to this migration ([[not_applicable]]): why, and who
    decided. A criterion whose tests all skipped is "not checked" and red in a cut-over unless one of these
    names it; then it is "not applicable" with this reason, in the reports and the sign-off."""

    criterion: str
    reason: str
    decided_by: str


NOT_APPLICABLE_KEYS = ("criterion", "reason", "decided_by")


def load_not_applicable(spec: object, where: str) -> tuple[NotApplicable, ...]:
    """[[not_applicable]] validated as [[waivers]] are: a known criterion, a reason and who decided, each once."""
    found: list[NotApplicable] = []
    for _spot, _item, texts in _criterion_entries(spec, where, "not_applicable", NOT_APPLICABLE_KEYS, "POST-19"):
        if any(n.criterion == texts["criterion"] for n in found):
            raise ConfigError(f"{where}: {texts['criterion']} is declared not applicable twice")
        found.append(NotApplicable(**texts))
    return tuple(found)


@dataclass(frozen=True)
class NotifyConfig:
    """[notify]: how often the [hooks] notify command is called while the maintenance window is open (besides
    every phase change), and how long one call may take before it is stopped (the cut-over never waits on it)."""

    interval_minutes: float = 30.0
    timeout_seconds: float = 30.0


def load_notify(spec: object, where: str) -> NotifyConfig:
    """[notify] validated: both positive numbers (the section itself is checked for unknown keys)."""
    spec = spec if isinstance(spec, dict) else {}
    values = {}
    for key in ("interval_minutes", "timeout_seconds"):
        value = spec.get(key, getattr(NotifyConfig, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{where}: {key} must be a positive number")
        values[key] = float(value)
    return NotifyConfig(**values)


def load_security(spec: object, where: str) -> str:
    """[security] allow_insecure_transport: the operator's reason, as the sign-off records it; "" when absent. Not a
    boolean: an opt-out of verified TLS to a remote target says why (one line, for whoever signs the run off)."""
    spec = spec if isinstance(spec, dict) else {}
    if "allow_insecure_transport" not in spec:
        return ""
    reason = spec["allow_insecure_transport"]
    if not isinstance(reason, str) or not reason.strip() or "\n" in reason.strip():
        raise ConfigError(f"{where}: allow_insecure_transport must be one non-empty line saying why TLS is not "
                          "verified (e.g. \"the database is reached through an SSH tunnel\")")
    return reason.strip()


REHEARSAL_KINDS = ("scratch", "local", "hooks")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class AppServerConfig:
    """[rehearsal.app_new] / [rehearsal.app_legacy]: a team's own app the rehearsal starts in place of the
    reference API on the side it serves (migration_gate.app.appserver). The gate hands it the database (the app
    role's DSN), the PHI key and a port through the variables named here; its environment holds those, `env`,
    the `pass_env` names copied from the gate's environment and a minimal PATH/HOME/LANG, nothing else."""

    command: str
    cwd: Path
    health: str = "/health"
    env: dict[str, str] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # every request of the gate to it carries them
    dsn_env: str = "DATABASE_URL"
    key_env: str = "PHI_ENCRYPTION_KEY"
    port_env: str = "PORT"
    start_timeout_seconds: float = 120.0
    # whose DSN it gets: "app" ([app_role], the default) or "owner" (the role the migration ran as), for an app
    # whose host hands it the database's owner (Neon's default role) and whose start runs its own migrations
    database_role: str = "app"

    @property
    def label(self) -> str:
        """How reports name it (the command and the folder: no value of its environment)."""
        return f"your app: {self.command} in {self.cwd}"


def _string_table(spec: dict, key: str, where: str) -> dict[str, str]:
    value = spec.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{where}: {key} must be a table of strings, e.g. {{ NAME = \"value\" }}")
    return {str(k): v for k, v in value.items()}


def load_app_server(spec: object, base: Path, where: str) -> AppServerConfig | None:
    """One app of [rehearsal], validated: a command, a folder that exists, variable names that are names."""
    if spec is None:
        return None
    spec = _only(spec, set(AppServerConfig.__dataclass_fields__), where)
    command = spec.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ConfigError(f"{where}: command must be a shell command (a non-empty string)")
    cwd = (base / str(spec.get("cwd", "."))).resolve()
    if not cwd.is_dir():
        raise ConfigError(f"{where}: cwd {cwd} is not a folder")
    health = str(spec.get("health", "/health"))
    if not health.startswith("/"):
        raise ConfigError(f"{where}: health must be a path starting with / (got {health!r})")
    env, headers = _string_table(spec, "env", where), _string_table(spec, "headers", where)
    pass_env = spec.get("pass_env", [])
    if not isinstance(pass_env, list) or not all(isinstance(n, str) for n in pass_env):
        raise ConfigError(f"{where}: pass_env must be a list of variable names")
    names = {k: str(spec.get(k, AppServerConfig.__dataclass_fields__[k].default))
             for k in ("dsn_env", "key_env", "port_env")}
    bad = [n for n in [*env, *pass_env, *names.values()] if not ENV_NAME.fullmatch(n)]
    if bad:
        raise ConfigError(f"{where}: {bad[0]!r} is not an environment variable name")
    if len(set(names.values())) < 3:
        raise ConfigError(f"{where}: dsn_env, key_env and port_env must be three different names")
    handed = sorted(set(names.values()) & (set(env) | set(pass_env)))
    if handed:
        raise ConfigError(f"{where}: {handed[0]} is handed over by the gate; it cannot also be in env or pass_env")
    timeout = spec.get("start_timeout_seconds", AppServerConfig.start_timeout_seconds)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{where}: start_timeout_seconds must be a positive number of seconds")
    role = spec.get("database_role", "app")
    if role not in ("app", "owner"):
        raise ConfigError(f"{where}: database_role must be 'app' or 'owner'")
    return AppServerConfig(command=command, cwd=cwd, health=health, env=env, pass_env=tuple(pass_env),
                           headers=headers, start_timeout_seconds=float(timeout), database_role=role, **names)


REHEARSAL_KIND_ENV = "GATE_REHEARSAL_KIND"  # overrides [rehearsal] kind (a dress rehearsal's suites: "scratch")


@dataclass(frozen=True)
class RehearsalConfig:
    """[rehearsal]: where PRE-08 (and scripts/rehearse --against-copy) rehearse, so a team can keep that load off
    the production server. "scratch": scratch databases on the target's own server (needs CREATEDB there);
    "local": a throwaway local PostgreSQL the gate starts and restores a fresh dump of the target into; "hooks":
    create_copy prints a copy's DSN (or a JSON object with dsn, as_of, label), delete_copy removes it (e.g. a
    Neon branch): no dump of production at all."""

    kind: str = "scratch"
    create_copy: str | None = None
    delete_copy: str | None = None
    timeout_seconds: float = 1800.0  # each hook call; a copy of a large database takes a while
    app_new: AppServerConfig | None = None  # the team's app in place of the reference API from the deploy on
    app_legacy: AppServerConfig | None = None  # ... on the legacy side (before the window, after a rollback)


def load_rehearsal(spec: object, where: str, base: Path = ROOT) -> RehearsalConfig:
    """[rehearsal] validated (GATE_REHEARSAL_KIND overrides kind): one line per problem."""
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = sorted(set(spec) - set(RehearsalConfig.__dataclass_fields__))
    if unknown:
        known = ", ".join(RehearsalConfig.__dataclass_fields__)
        raise ConfigError(f"{where}: unknown key {unknown[0]} (known: {known})")
    kind = os.environ.get(REHEARSAL_KIND_ENV) or spec.get("kind", "scratch")
    if kind not in REHEARSAL_KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(REHEARSAL_KINDS)} (got {kind!r})")
    hooks = {}
    for name in ("create_copy", "delete_copy"):
        value = spec.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{where}: {name} must be a shell command (a non-empty string)")
        hooks[name] = value
    if kind == "hooks" and not (hooks["create_copy"] and hooks["delete_copy"]):
        raise ConfigError(f"{where}: kind 'hooks' needs both create_copy and delete_copy commands")
    timeout = spec.get("timeout_seconds", RehearsalConfig.timeout_seconds)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{where}: timeout_seconds must be a positive number of seconds")
    apps = {name: load_app_server(spec.get(name), base, f"{where} {name}") for name in ("app_new", "app_legacy")}
    return RehearsalConfig(kind=kind, timeout_seconds=float(timeout), **hooks, **apps)


def load_app_tables(spec: object, where: str) -> tuple[str, ...]:
    """[deploy] app_tables: the tables the app's own migrations may create when it starts on the new schema (a
    list of table names in [migration] schema); none declared: the deploy may create nothing."""
    spec = {} if spec is None else spec
    value = spec.get("app_tables", [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: app_tables must be a list of table names")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: app_tables names a table twice")
    return tuple(value)


@dataclass(frozen=True)
class WatchConfig:
    """[watch]: the 48 hours after go-live (scripts/watch). The schedule as the checklist states it, what a round's
    latency is held to, and the rollback decision criteria, so the watch says when one is met instead of a human
    working it out from charts at 3 a.m."""

    schedule: tuple[tuple[float, float], ...] = ((2, 15), (24, 60), (48, 240))  # (until_hours, every_minutes)
    latency_samples: int = 5  # timed GETs per endpoint per round
    baseline_factor: float = 1.5  # p95 budget = the run's baseline p95 x this (else [budgets] api_p95_ms)
    invariant_red: bool = True  # criterion: any database invariant red
    error_rate_over: float = 0.05  # criterion: the round's requests not answered 2xx, as a fraction, over this...
    error_rate_rounds: int = 2  # ...for this many rounds in a row
    p95_over_budget_rounds: int = 3  # criterion: some endpoint's p95 over budget this many rounds in a row (0: off)


def load_watch(spec: object, where: str) -> WatchConfig:
    """[watch] validated: a schedule whose segments end later and later, thresholds that make sense."""
    if spec is None:
        return WatchConfig()
    spec = _only(spec, {"schedule", "latency_samples", "baseline_factor", "rollback_criteria"}, where)
    criteria = _only(spec.get("rollback_criteria", {}), {"invariant_red", "error_rate_over", "error_rate_rounds",
                                                         "p95_over_budget_rounds"}, f"{where}.rollback_criteria")
    schedule, last = [], 0.0
    for item in spec.get("schedule", [{"until_hours": h, "every_minutes": m} for h, m in WatchConfig.schedule]):
        item = _only(item, {"until_hours", "every_minutes"}, f"{where} schedule")
        until, every = float(item.get("until_hours", 0)), float(item.get("every_minutes", 0))
        if until <= last or every <= 0:
            raise ConfigError(f"{where}: schedule entries need until_hours rising past {last:g} and every_minutes "
                              "above zero")
        schedule.append((until, every))
        last = until
    if not schedule:
        raise ConfigError(f"{where}: schedule is empty")
    found = WatchConfig(
        schedule=tuple(schedule), latency_samples=int(spec.get("latency_samples", 5)),
        baseline_factor=float(spec.get("baseline_factor", 1.5)),
        invariant_red=bool(criteria.get("invariant_red", True)),
        error_rate_over=float(criteria.get("error_rate_over", 0.05)),
        error_rate_rounds=int(criteria.get("error_rate_rounds", 2)),
        p95_over_budget_rounds=int(criteria.get("p95_over_budget_rounds", 3)))
    if found.latency_samples < 1 or found.baseline_factor <= 0 or not 0 <= found.error_rate_over <= 1 \
            or found.error_rate_rounds < 1 or found.p95_over_budget_rounds < 0:
        raise ConfigError(f"{where}: latency_samples >= 1, baseline_factor > 0, rollback_criteria.error_rate_over "
                          "between 0 and 1, error_rate_rounds >= 1, p95_over_budget_rounds >= 0")
    return found


@dataclass(frozen=True)
class GateConfig:
    path: Path
    migration_file: Path
    rollback_file: Path | None
    lock_timeout: str
    statement_timeout: str
    downtime_minutes: float
    phase_minutes: dict[str, float]
    api_p95_ms: float
    api_latency_samples: int
    sandbox_patients: int
    sandbox_seed: int
    sandbox_username: str
    sandbox_password: str
    api: ApiRules
    tables: tuple[TableMap, ...]
    search_hashes: tuple[SearchHash, ...]
    unique_keys: tuple[UniqueKey, ...]
    money: tuple[MoneyColumns, ...]
    new_schema: dict[str, dict[str, str]]
    legacy_schema: dict[str, dict[str, str]]
    new_foreign_keys: tuple[ForeignKey, ...]
    legacy_foreign_keys: tuple[ForeignKey, ...]
    rollback_method: str = "restore"  # restore the verified backup, or "sql": run rollback_file
    hooks: dict[str, str] = field(default_factory=dict)
    schema: str = "public"  # where the app's tables live (both sides)
    new_objects: dict[str, TableObjects] = field(default_factory=dict)
    legacy_objects: dict[str, TableObjects] = field(default_factory=dict)
    # [new_catalog] / [legacy_catalog]: every other object of the schema, "<kind> <identity>" -> its spec
    # (catalog.SchemaObject); None when the description has no such section (the check then says it checked nothing)
    new_catalog: dict[str, str] | None = None
    legacy_catalog: dict[str, str] | None = None
    new_tables: dict[str, str] = field(default_factory=dict)  # new table derived wholesale -> how (which check)
    dropped_tables: dict[str, str] = field(default_factory=dict)  # legacy table not carried over -> why
    tenancy: Tenancy | None = None
    deploy_wait_seconds: float = 300.0  # how long a deploy may take until the app reports the expected schema
    sandbox_provider: str = DEFAULT_SANDBOX_PROVIDER  # module:attribute, see migration_gate.run.provider
    app_role: AppRole | None = None  # [app_role]: the app's own role and its privileges
    hook_timeout_seconds: float = 600.0  # [hooks] timeout_seconds: a hook that runs longer is stopped, red
    hook_pass_env: tuple[str, ...] = ()  # [hooks] pass_env: the operator's variables the hooks see (hooks.py)
    logs: LogsConfig = field(default_factory=LogsConfig)  # [logs]: where the log check reads the app's lines
    backup: BackupConfig = field(default_factory=BackupConfig)  # [backup]: encryption, retention, checks
    precheck: PrecheckConfig = field(default_factory=PrecheckConfig)  # [precheck]: pre-check session timeouts
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)  # [performance]: baseline, budget
    people: tuple[PeopleItem, ...] = ()  # [[people]]: the checklist's human items (migration_gate.run.attest)
    notify: NotifyConfig = field(default_factory=NotifyConfig)  # [notify]: status updates (migration_gate.run.notify)
    watch: WatchConfig = field(default_factory=WatchConfig)  # [watch]: the 48 hours after go-live
    lint: LintConfig = field(default_factory=LintConfig)  # [lint]: which migration hazards are red
    rehearsal: RehearsalConfig = field(default_factory=RehearsalConfig)  # [rehearsal]: PRE-08's copy
    answers: AnswersConfig = field(default_factory=AnswersConfig)  # [answers]: same answers before and after
    waivers: tuple[Waiver, ...] = ()  # [[waivers]]: known app faults gone live with knowingly (plugin, sign-off)
    # [security] allow_insecure_transport: why a target off this host may go without verified TLS (sslmode
    # verify-full, an https API); "" (the default): the pre-flight requires both (migration_gate.run.preflight)
    insecure_transport: str = ""
    # [[not_applicable]]: criteria that cannot apply here, with why (a skipped criterion is otherwise red)
    not_applicable: tuple[NotApplicable, ...] = ()
    app_tables: tuple[str, ...] = ()  # [deploy] app_tables: what the app's own migrations may create at the deploy

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.api.endpoints

    @property
    def audited(self) -> dict[str, str]:
        return self.api.audited

    def table(self, name: str) -> TableMap:
        for mapping in self.tables:
            if mapping.name == name:
                return mapping
        raise KeyError(name)

    def legacy_phi_columns(self) -> list[tuple[str, str]]:
        return sorted({(t.legacy, c) for t in self.tables for c in t.phi})

    def removed_tables(self) -> list[str]:
        """Tables only the new schema has: gone again after a rollback."""
        return sorted(set(self.new_schema) - set(self.legacy_schema))

    def relationships(self, mapping: TableMap) -> list[str]:
        """The mapping's new columns that are foreign keys: the links a migration must preserve."""
        fk_columns = {fk.column for fk in self.new_foreign_keys if fk.table == mapping.new}
        return sorted(c for c in mapping.columns.values() if c in fk_columns)

    def new_encrypted_columns(self) -> list[tuple[str, str]]:
        """Every ciphertext column of the new schema: mapped PHI, encrypted on the way, and PHI columns it adds."""
        found = {(t.new, c) for t in self.tables for c in [*t.phi.values(), *t.encrypt.values()]}
        found |= {(t.new, c) for t in self.tables for c, rule in t.new_columns.items() if rule.kind == "phi"}
        return sorted(found)


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


def _need(data: dict, key: str, kind: type, where: str):
    if key not in data:
        raise ConfigError(f"{where}: '{key}' is missing")
    value = data[key]
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' must be a {kind.__name__}")
    return value


def _minutes(value: object, where: str) -> float:
    """A budget in minutes: a number above zero (the forecast and the timeline compare against it)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        shown = "missing" if value is None else f"{value!r}"[:40]
        raise ConfigError(f"{where} must be a number of minutes above zero (found {shown})")
    return float(value)


def _foreign_keys(data: dict, where: str) -> tuple[ForeignKey, ...]:
    found = []
    for table, items in data.items():
        for i, item in enumerate(items):
            spot = f"{where}.{table}[{i}]"
            on_delete = _need(item, "on_delete", str, spot).lower()
            if on_delete not in ON_DELETE:
                raise ConfigError(f"{spot}: on_delete must be one of {', '.join(ON_DELETE)}")
            found.append(ForeignKey(table, _need(item, "column", str, spot), _need(item, "references", str, spot),
                                    ON_DELETE[on_delete]))
    return tuple(found)


def _rule(value: object, where: str) -> ColumnRule:
    if isinstance(value, dict):
        if "value" not in value:
            raise ConfigError(f"{where}: a table rule needs 'value' (or use a string rule)")
        return ColumnRule("value", value["value"])
    text = str(value)
    kind, _, reason = text.partition(":")
    if kind.strip() not in RULES or kind.strip() == "value":
        raise ConfigError(f"{where}: rule must be one of null, phi, tenancy, search_hash, key, 'derived: <how>' or "
                          "{ value = ... }")
    return ColumnRule(kind.strip(), reason=reason.strip())


def _objects(spec: dict, where: str) -> TableObjects:
    unknown = set(spec) - {"unique", "checks", "indexes", "triggers", "row_level_security", "policies"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}")
    return TableObjects(unique=tuple(tuple(u) for u in spec.get("unique", [])), checks=tuple(spec.get("checks", [])),
                        indexes=tuple(tuple(i) for i in spec.get("indexes", [])),
                        triggers=tuple(spec.get("triggers", [])),
                        row_level_security=bool(spec.get("row_level_security", False)),
                        policies=tuple(spec.get("policies", [])))


def _declared_objects(data: dict, section: str, where: str) -> dict[str, str] | None:
    """[<side>_catalog]: "<kind> <identity>" = "<spec>" (scripts/describe-schema writes it); None when absent."""
    if section not in data:
        return None
    spec = data[section]
    if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
        raise ConfigError(f"{where} [{section}]: each entry must be \"<kind> <identity>\" = \"<properties>\" "
                          "(a string, \"\" for none)")
    return dict(spec)


def _tenancy(spec: dict, where: str) -> Tenancy:
    kind = spec.get("organization_type")
    rows = []
    for i, row in enumerate(_need(spec, "rows", list, where)):
        spot = f"{where} rows[{i}]"
        rows.append(TenantRow(_need(row, "table", str, spot), _need(row, "column", str, spot), row.get("owner"),
                              row.get("through"), row.get("parent")))
        if not (rows[-1].owner or (rows[-1].through and rows[-1].parent)):
            raise ConfigError(f"{spot}: needs 'owner', or 'through' and 'parent'")
    return Tenancy(
        organizations=_need(spec, "organizations", str, where), memberships=_need(spec, "memberships", str, where),
        users=_need(spec, "users", str, where),
        membership_organization=_need(spec, "membership_organization", str, where),
        membership_user=_need(spec, "membership_user", str, where),
        primary_owner=_need(spec, "primary_owner", str, where), active=_need(spec, "active", str, where),
        role_column=_need(spec, "role_column", str, where), owner_role=_need(spec, "owner_role", str, where),
        owner_flags=tuple(spec.get("owner_flags", [])),
        organization_type=(_need(kind, "column", str, where), _need(kind, "value", str, where)) if kind else None,
        organization_name={str(k): str(v) for k, v in spec.get("organization_name", {}).items()},
        one_per_user=bool(spec.get("one_per_user", False)), rows=tuple(rows))


def _pair(value: object, where: str) -> tuple[str, str] | None:
    """A column named the same on both sides ("deleted"), or { legacy = ..., new = ... }."""
    if value is None:
        return None
    if isinstance(value, str):
        return value, value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a column name or {{ legacy = ..., new = ... }}")
    return _need(value, "legacy", str, where), _need(value, "new", str, where)


def _only(spec: object, allowed: set[str], where: str) -> dict:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}")
    return spec


def _api_paths(spec: dict, key: str, where: str) -> tuple[str, ...]:
    """A list of paths ("/api/..."), each once."""
    paths = spec.get(key, [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and p.startswith("/") for p in paths):
        raise ConfigError(f"{where}: {key} must be a list of paths starting with /")
    return tuple(dict.fromkeys(paths))


def _api_routes(spec: dict, where: str) -> tuple[ApiRoute, ...]:
    """[api] routes: paths, or { path = ".../{id}", ids_from = "/api/..." } for a route that needs a record id."""
    routes = []
    for i, item in enumerate(spec.get("routes", [])):
        spot = f"{where} routes[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        item = _only(item, {"path", "ids_from"}, spot)
        route = ApiRoute(_need(item, "path", str, spot), item.get("ids_from"))
        if not route.path.startswith("/"):
            raise ConfigError(f"{spot}: path must start with /")
        if ("{id}" in route.path) != (route.ids_from is not None):
            raise ConfigError(f"{spot}: a path with {{id}} needs ids_from (a list path), and ids_from needs {{id}}")
        if route.ids_from is not None and (not isinstance(route.ids_from, str) or not route.ids_from.startswith("/")):
            raise ConfigError(f"{spot}: ids_from must be a path starting with /")
        routes.append(route)
    return tuple(routes)


def _api(spec: dict, tenancy: Tenancy | None, schema: str, where: str) -> ApiRules:
    _only(spec, {"endpoints", "audited", "users", "audit", "visibility", "membership_rights", "probe", "debug_routes",
                 "user_routes", "routes"}, where)
    users = spec.get("users")
    audit = spec.get("audit")
    visibility: dict[str, dict[str, Visibility]] = {}
    for name, sides in spec.get("visibility", {}).items():
        spot = f"{where} visibility.{name}"
        visibility[name] = {}
        for side, rule in _only(sides, {"new", "legacy"}, spot).items():
            rule = _only(rule, {"table", "owner", "organization", "active"}, f"{spot}.{side}")
            visibility[name][side] = Visibility(_need(rule, "table", str, f"{spot}.{side}"),
                                                _need(rule, "owner", str, f"{spot}.{side}"),
                                                rule.get("organization"), rule.get("active"))
            if rule.get("organization") and tenancy is None:
                raise ConfigError(f"{spot}.{side}: an organization rule needs [tenancy] (its memberships)")
    rights = []
    for i, right in enumerate(spec.get("membership_rights", [])):
        spot = f"{where} membership_rights[{i}]"
        _only(right, {"roles", "sees", "flag", "list"}, spot)
        sees = _need(right, "sees", str, spot)
        if sees not in ("all", "own", "selected") or (sees == "selected" and not right.get("list")):
            raise ConfigError(f"{spot}: sees must be 'all', 'own' or 'selected' (with list)")
        rights.append(MembershipRight(tuple(_need(right, "roles", list, spot)), sees, right.get("flag"),
                                      right.get("list")))
    endpoints = []
    for e in spec.get("endpoints", []):
        endpoint = Endpoint(_need(e, "path", str, where), _need(e, "shape", str, where), e.get("count_table"))
        if endpoint.count_table and endpoint.count_table not in visibility:
            raise ConfigError(f"{where}: count_table {endpoint.count_table} of {endpoint.path} has no "
                              f"[api.visibility.{endpoint.count_table}] rule")
        endpoints.append(endpoint)
    return ApiRules(
        endpoints=tuple(endpoints), audited=dict(spec.get("audited", {})),
        users=UserTable(**{"schema": schema, **_only(users, set(UserTable.__dataclass_fields__), f"{where}.users")})
        if users else None,
        audit=AuditTable(**{"schema": schema, **_only(audit, set(AuditTable.__dataclass_fields__), f"{where}.audit")})
        if audit else None,
        visibility=visibility, rights=tuple(rights), memberships=tenancy, schema=schema,
        probe=load_probe(spec.get("probe"), f"{where}.probe"),
        debug_routes=_api_paths(spec, "debug_routes", where), user_routes=_api_paths(spec, "user_routes", where),
        routes=_api_routes(spec, where))


# What a description may hold: a misspelt section or key is refused, never silently ignored.
SECTIONS = ("migration", "hooks", "budgets", "sandbox", "api", "app_role", "tables", "new_tables", "dropped_tables",
            "tenancy", "search_hashes", "preconditions", "new_foreign_keys", "legacy_foreign_keys", "legacy_schema",
            "legacy_objects", "new_schema", "new_objects", "legacy_catalog", "new_catalog", "backup", "logs",
            "precheck", "performance", "people",
            "notify", "watch", "lint", "rehearsal", "answers", "waivers",
            "not_applicable", "deploy", "security")
KEYS = {"migration": ("file", "rollback_file", "lock_timeout", "statement_timeout", "rollback_method", "schema"),
        "budgets": ("downtime_minutes", "api_p95_ms", "api_latency_samples", "deploy_wait_seconds", "phase_minutes"),
        "sandbox": ("patients", "seed", "username", "password", "provider"),
        "precheck": ("lock_timeout", "statement_timeout"),
        "performance": ("requests", "workers", "p95_factor", "p95_allowance_ms", "max_seconds"),
        "notify": ("interval_minutes", "timeout_seconds"),
        "deploy": ("app_tables",),
        "security": ("allow_insecure_transport",)}


def _known_keys(data: dict, where: str) -> None:
    """Unknown sections, unknown keys of the fixed sections, and [hooks] values that are not commands."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown section [{unknown[0]}] (known: {', '.join(SECTIONS)})")
    for section, allowed in KEYS.items():
        spec = data.get(section, {})
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        unknown = sorted(set(spec) - set(allowed))
        if unknown:
            raise ConfigError(f"{where} [{section}]: unknown key {unknown[0]} (known: {', '.join(allowed)})")
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise ConfigError(f"{where}: [hooks] must be a table")
    for name, value in hooks.items():
        if name not in ("timeout_seconds", "pass_env") and not isinstance(value, str):
            raise ConfigError(f"{where} [hooks]: {name} must be a shell command (a string)")


# What no hook is handed through pass_env: the gate's secrets (a copy hook's contract hands its source DSN itself)
# and the gate's own GATE_* names (each hook's contract says which of those it gets).
SECRET_ENV = ("DATABASE_URL", "PHI_ENCRYPTION_KEY", "GATE_API_PASSWORD", "GATE_BACKUP_IDENTITY")


def _hook_pass_env(data: dict, where: str) -> tuple[str, ...]:
    """[hooks] pass_env: the operator's variables every hook sees (RENDER_API_KEY...); names only, no secret of
    the gate's."""
    names = data.get("hooks", {}).get("pass_env", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where} [hooks]: pass_env must be a list of variable names")
    bad = [n for n in names if not ENV_NAME.fullmatch(n)]
    if bad:
        raise ConfigError(f"{where} [hooks]: pass_env: {bad[0]!r} is not an environment variable name")
    refused = [n for n in names if n in SECRET_ENV or n.startswith("GATE_")]
    if refused:
        raise ConfigError(f"{where} [hooks]: pass_env cannot hand {refused[0]} to the hooks (the gate's own "
                          "secrets and GATE_* variables reach a hook only through its contract)")
    return tuple(dict.fromkeys(names))


def _hook_timeout(data: dict, where: str) -> float:
    value = data.get("hooks", {}).get("timeout_seconds", 600)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where} [hooks]: timeout_seconds must be a positive number of seconds")
    return float(value)


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


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc.__class__.__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None


def _read_chain(path: Path, seen: list[Path]) -> tuple[dict, Path]:
    """The description with what it extends laid under it, and the folder relative paths resolve from."""
    data = _read_toml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, path.parent
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path.name}: extends must be the path of another description")
    resolved = (path.parent / parent).resolve()
    if resolved in seen or resolved == path.resolve():
        raise ConfigError(f"{path.name}: extends {parent} goes round in a circle")
    under, base = _read_chain(resolved, [*seen, path.resolve()])
    return _laid_over(under, data), base


def _laid_over(under: dict, over: dict) -> dict:
    """`over`'s keys over `under`'s, table by table; any other value (arrays included) replaces."""
    merged = dict(under)
    for key, value in over.items():
        merged[key] = (_laid_over(under[key], value) if isinstance(value, dict) and isinstance(under.get(key), dict)
                       else value)
    return merged


def _load(data: dict, path: Path, base: Path, where: str) -> GateConfig:
    mig = _need(data, "migration", dict, where)
    # GATE_MIGRATION_FILE: rehearse another migration file with the same description (scripts/rehearse --migration)
    migration_file = Path(os.environ.get("GATE_MIGRATION_FILE") or base / _need(mig, "file", str,
                                                                                  f"{where} [migration]")).resolve()
    if not migration_file.is_file():
        raise ConfigError(f"{where} [migration]: migration file {migration_file} not found")
    rollback = mig.get("rollback_file")
    rollback_file = (base / rollback).resolve() if rollback else None
    if rollback_file and not rollback_file.is_file():
        raise ConfigError(f"{where} [migration]: rollback file {rollback_file} not found")
    budgets = _need(data, "budgets", dict, where)
    sandbox = data.get("sandbox", {})
    api = data.get("api", {})
    tables = []
    for name, spec in _need(data, "tables", dict, where).items():
        spot = f"{where} [tables.{name}]"
        owner = spec.get("owner")
        tables.append(TableMap(
            name=name, new=str(spec.get("new", name)), legacy=_need(spec, "legacy", str, spot),
            key=_need(spec, "key", str, spot), legacy_key=str(spec.get("legacy_key", "")),
            columns=dict(spec.get("columns", {})), phi=dict(spec.get("phi", {})),
            hashes=dict(spec.get("hashes", {})), encrypt=dict(spec.get("encrypt", {})),
            dropped={str(k): str(v) for k, v in spec.get("dropped", {}).items()},
            new_columns={str(k): _rule(v, f"{spot} new_columns.{k}") for k, v in spec.get("new_columns", {}).items()},
            owner=(_need(owner, "legacy", str, spot + " owner"), _need(owner, "new", str, spot + " owner"))
            if owner else None, partial=bool(spec.get("partial", False)),
            soft_delete=_pair(spec.get("soft_delete"), spot + " soft_delete"),
            append_only=bool(spec.get("append_only", False)), count_by=tuple(spec.get("count_by", []))))
        for column in tables[-1].count_by:
            if column not in tables[-1].columns:
                raise ConfigError(f"{spot}: count_by column {column} is not mapped in columns")
    pre = data.get("preconditions", {})
    tenancy = _tenancy(data["tenancy"], f"{where} [tenancy]") if "tenancy" in data else None
    config = GateConfig(
        path=path, migration_file=migration_file, rollback_file=rollback_file,
        lock_timeout=str(mig.get("lock_timeout", "10s")), statement_timeout=str(mig.get("statement_timeout", "0")),
        downtime_minutes=_need(budgets, "downtime_minutes", float, f"{where} [budgets]"),
        phase_minutes={str(k): _minutes(v, f"{where} [budgets.phase_minutes] {k}")
                       for k, v in _need_dict(budgets, "phase_minutes", f"{where} [budgets]").items()},
        api_p95_ms=_need(budgets, "api_p95_ms", float, f"{where} [budgets]"),
        api_latency_samples=int(budgets.get("api_latency_samples", 20)),
        deploy_wait_seconds=float(budgets.get("deploy_wait_seconds", 300)),
        sandbox_provider=os.environ.get("GATE_SANDBOX_PROVIDER") or str(sandbox.get("provider",
                                                                                  DEFAULT_SANDBOX_PROVIDER)),
        sandbox_patients=int(sandbox.get("patients", 300)), sandbox_seed=int(sandbox.get("seed", 1)),
        sandbox_username=str(sandbox.get("username", "demo_therapist1")),
        sandbox_password=str(sandbox.get("password", "demo-password-1")),
        api=_api(api, tenancy, str(mig.get("schema", "public")), f"{where} [api]"),
        tables=tuple(tables),
        search_hashes=tuple(SearchHash(_need(h, "table", str, f"{where} [[search_hashes]]"),
                                       _need(h, "hash", str, f"{where} [[search_hashes]]"),
                                       _need(h, "source", str, f"{where} [[search_hashes]]"),
                                       bool(h.get("plaintext", False))) for h in data.get("search_hashes", [])),
        unique_keys=tuple(UniqueKey(u["table"], tuple(u["columns"])) for u in pre.get("unique", [])),
        money=tuple(MoneyColumns(m["table"], tuple(m["columns"])) for m in pre.get("money", [])),
        new_schema={t: dict(c) for t, c in _need(data, "new_schema", dict, where).items()},
        legacy_schema={t: dict(c) for t, c in _need(data, "legacy_schema", dict, where).items()},
        new_foreign_keys=_foreign_keys(data.get("new_foreign_keys", {}), f"{where} [new_foreign_keys]"),
        legacy_foreign_keys=_foreign_keys(data.get("legacy_foreign_keys", {}), f"{where} [legacy_foreign_keys]"),
        rollback_method=str(mig.get("rollback_method", "restore")),
        hooks={k: str(v) for k, v in data.get("hooks", {}).items() if k not in ("timeout_seconds", "pass_env")},
        hook_timeout_seconds=_hook_timeout(data, where),
        hook_pass_env=_hook_pass_env(data, where),
        schema=str(mig.get("schema", "public")),
        new_objects={t: _objects(o, f"{where} [new_objects.{t}]") for t, o in data.get("new_objects", {}).items()},
        legacy_objects={t: _objects(o, f"{where} [legacy_objects.{t}]")
                        for t, o in data.get("legacy_objects", {}).items()},
        new_catalog=_declared_objects(data, "new_catalog", where),
        legacy_catalog=_declared_objects(data, "legacy_catalog", where),
        new_tables={str(k): str(v) for k, v in data.get("new_tables", {}).items()},
        dropped_tables={str(k): str(v) for k, v in data.get("dropped_tables", {}).items()},
        tenancy=tenancy,
        app_role=load_app_role(data.get("app_role"), f"{where} [app_role]"),
        logs=load_logs(data.get("logs"), {k: str(v) for k, v in data.get("hooks", {}).items() if k != "pass_env"}, base,
                       f"{where} [logs]"),
        backup=load_backup(data.get("backup"), f"{where} [backup]"),
        precheck=load_precheck(data.get("precheck"), f"{where} [precheck]"),
        performance=load_performance(data.get("performance"), f"{where} [performance]"),
        people=load_people(data.get("people"), f"{where} [[people]]"),
        notify=load_notify(data.get("notify"), f"{where} [notify]"),
        watch=load_watch(data.get("watch"), f"{where} [watch]"),
        lint=load_lint(data.get("lint"), f"{where} [lint]"),
        rehearsal=load_rehearsal(data.get("rehearsal"), f"{where} [rehearsal]", base),
        answers=load_answers(data.get("answers"), f"{where} [answers]"),
        waivers=load_waivers(data.get("waivers"), f"{where} [[waivers]]"),
        not_applicable=load_not_applicable(data.get("not_applicable"), f"{where} [[not_applicable]]"),
        app_tables=load_app_tables(data.get("deploy"), f"{where} [deploy]"),
        insecure_transport=load_security(data.get("security"), f"{where} [security]"),
    )
    if config.rollback_method not in ("restore", "sql"):
        raise ConfigError(f"{where} [migration]: rollback_method must be 'restore' or 'sql'")
    if config.rollback_method == "sql" and config.rollback_file is None:
        raise ConfigError(f"{where} [migration]: rollback_method 'sql' needs rollback_file")
    for name in config.app_tables:
        if name in config.new_schema or name in config.legacy_schema:
            raise ConfigError(f"{where} [deploy]: app_tables names {name}, a table of the migration's own schema "
                              "([new_schema] or [legacy_schema]), not one the app's deploy creates")
    for mapping in config.tables:
        if mapping.new not in config.new_schema:
            raise ConfigError(f"{where} [tables.{mapping.name}]: table {mapping.new} is not in [new_schema]")
        if mapping.legacy not in config.legacy_schema:
            raise ConfigError(f"{where} [tables.{mapping.name}]: legacy table {mapping.legacy} is not in "
                              "[legacy_schema]")
        for legacy_col, new_col in [*mapping.columns.items(), *mapping.phi.items(), *mapping.hashes.items(),
                                    *mapping.encrypt.items()]:
            if new_col not in config.new_schema[mapping.new]:
                raise ConfigError(f"{where} [tables.{mapping.name}]: column {new_col} is not in "
                                  f"[new_schema.{mapping.new}]")
            if legacy_col not in config.legacy_schema[mapping.legacy]:
                raise ConfigError(f"{where} [tables.{mapping.name}]: column {legacy_col} is not in "
                                  f"[legacy_schema.{mapping.legacy}]")
    return config


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
