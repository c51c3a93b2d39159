"""The migration description's model: what each section of migration.toml becomes once read (frozen dataclasses),
with the constants its values are checked against. Declarations only; reading and checking is config/load.py, and
the fields' msgspec annotations (types, bounds, the wording of their one-line errors) are the schema
(migration_gate.config.schema) that editors validate a description against."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from migration_gate.core.criteria import CRITERIA

# The embedded sandbox, plugged in by name (migration_gate.run.provider); [sandbox] provider or GATE_SANDBOX_PROVIDER.
DEFAULT_SANDBOX_PROVIDER = "sandbox.provider:SandboxProvider"


ON_DELETE = {"restrict": "r", "cascade": "c", "no action": "a", "set null": "n", "set default": "d"}




@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    references: str
    on_delete: str  # pg_constraint.confdeltype letter

    @property
    def label(self) -> str:
        return f"{self.table}.{self.column} -> {self.references}"


@dataclass(frozen=True)
class ForeignKeyEntry:
    """One entry of [new_foreign_keys] / [legacy_foreign_keys] <table> = [...]: the column, the table it references
    and what its ON DELETE must be."""

    column: Annotated[str, Meta(pattern=r"\S", description="a column name")]
    references: Annotated[str, Meta(pattern=r"\S", description="a table name")]
    on_delete: Annotated[str, Meta(description=f"one of {', '.join(ON_DELETE)}",
                                   extra_json_schema={"enum": list(ON_DELETE)})]

    def __post_init__(self) -> None:
        if self.on_delete.lower() not in ON_DELETE:
            raise ValueError(f"on_delete must be one of {', '.join(ON_DELETE)}")

    def key(self, table: str) -> ForeignKey:
        return ForeignKey(table, self.column, self.references, ON_DELETE[self.on_delete.lower()])


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


def column_rule(value: str | dict, key: str) -> ColumnRule:
    """A [tables.*.new_columns] rule: "null", "phi", "tenancy", "search_hash", "key", "derived: <how>", or
    { value = ... }."""
    if isinstance(value, dict):
        if set(value) != {"value"}:
            raise ValueError(f"new_columns.{key}: a table rule is {{ value = ... }} (or use a string rule)")
        return ColumnRule("value", value["value"])
    kind, _, reason = value.partition(":")
    if kind.strip() not in RULES or kind.strip() == "value":
        raise ValueError(f"new_columns.{key}: rule must be one of null, phi, tenancy, search_hash, key, "
                         "'derived: <how>' or { value = ... }")
    return ColumnRule(kind.strip(), reason=reason.strip())


_COLUMN = Annotated[str, Meta(pattern=r"\S", description="a column name")]
_COLUMN_MAP = Annotated[dict[str, str], Meta(description="a table of legacy column = new column")]


@dataclass(frozen=True)
class ColumnPair:
    """A column named differently on the two sides: { legacy = ..., new = ... }."""

    legacy: _COLUMN
    new: _COLUMN


@dataclass(frozen=True)
class TableSection:
    """[tables.<name>] as the description writes it (TableMap says what each key means)."""

    legacy: Annotated[str, Meta(pattern=r"\S", description="a table name")]
    key: _COLUMN
    new: Annotated[str | None, Meta(description="a table name (default: the section's name)")] = None
    legacy_key: Annotated[str, Meta(description="a column name")] = ""
    columns: _COLUMN_MAP = field(default_factory=dict)
    phi: _COLUMN_MAP = field(default_factory=dict)
    hashes: _COLUMN_MAP = field(default_factory=dict)
    encrypt: _COLUMN_MAP = field(default_factory=dict)
    dropped: Annotated[dict[str, str], Meta(description="a table of legacy column = why it has no new column")] = \
        field(default_factory=dict)
    new_columns: Annotated[dict[str, str | dict], Meta(
        description="a table of new column = its rule (null, phi, tenancy, search_hash, key, 'derived: <how>' or "
                    "{ value = ... })")] = field(default_factory=dict)
    owner: Annotated[ColumnPair | None, Meta(description="a table { legacy, new }")] = None
    soft_delete: Annotated[str | ColumnPair | None, Meta(
        description="a column name or { legacy = ..., new = ... }")] = None
    partial: Annotated[bool, Meta(description="true or false")] = False
    append_only: Annotated[bool, Meta(description="true or false")] = False
    count_by: Annotated[tuple[str, ...], Meta(description="a list of legacy columns mapped in columns")] = ()

    def __post_init__(self) -> None:
        for key, value in self.new_columns.items():
            column_rule(value, key)
        for column in self.count_by:
            if column not in self.columns:
                raise ValueError(f"count_by column {column} is not mapped in columns")

    def mapping(self, name: str) -> TableMap:
        soft = self.soft_delete
        return TableMap(
            name=name, new=self.new or name, legacy=self.legacy, key=self.key, legacy_key=self.legacy_key,
            columns=dict(self.columns), phi=dict(self.phi), hashes=dict(self.hashes), encrypt=dict(self.encrypt),
            dropped=dict(self.dropped), new_columns={k: column_rule(v, k) for k, v in self.new_columns.items()},
            owner=(self.owner.legacy, self.owner.new) if self.owner else None, partial=self.partial,
            soft_delete=(soft, soft) if isinstance(soft, str) else (soft.legacy, soft.new) if soft else None,
            append_only=self.append_only, count_by=self.count_by)


@dataclass(frozen=True)
class TableObjects:
    """What a table must carry besides its columns; anything else found there is a finding."""

    unique: Annotated[tuple[tuple[str, ...], ...], Meta(description="a list of column lists")] = ()
    checks: Annotated[tuple[str, ...], Meta(description="a list of CHECK constraints' expressions")] = ()
    # key columns, then "WHERE <predicate>" for a partial index
    indexes: Annotated[tuple[tuple[str, ...], ...], Meta(
        description='a list of column lists (then "WHERE <predicate>" for a partial index)')] = ()
    triggers: Annotated[tuple[str, ...], Meta(description="a list of trigger names")] = ()
    row_level_security: Annotated[bool, Meta(description="true or false")] = False
    policies: Annotated[tuple[str, ...], Meta(description="a list of policy names")] = ()


@dataclass(frozen=True)
class TenantRow:
    """Which column ties a row to its organization: directly through its owner's membership, or through a parent
    row (a session is in its patient's organization)."""

    table: Annotated[str, Meta(description="a table name")]
    column: Annotated[str, Meta(description="a column name")]
    # the user column whose primary-owner membership names the organization
    owner: Annotated[str | None, Meta(description="a column name")] = None
    # or: the column pointing at the parent row of `parent`, whose own organization column is the same
    through: Annotated[str | None, Meta(description="a column name")] = None
    parent: Annotated[str | None, Meta(description="a table name")] = None

    def __post_init__(self) -> None:
        if not (self.owner or (self.through and self.parent)):
            raise ValueError("needs 'owner', or 'through' and 'parent'")


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


_NAME = Annotated[str, Meta(description="a table or column name")]


@dataclass(frozen=True)
class OrganizationType:
    """[tenancy] organization_type: the column every derived organization has and its value there."""

    column: _NAME
    value: Annotated[str, Meta(description="a string")]


@dataclass(frozen=True)
class TenancySection:
    """[tenancy] as the description writes it (Tenancy holds it): the organizations and memberships tables and
    their columns, the flags an owner's membership has, and which column ties each row to its organization."""

    organizations: _NAME
    memberships: _NAME
    users: _NAME
    membership_organization: _NAME
    membership_user: _NAME
    primary_owner: _NAME
    active: _NAME
    role_column: _NAME
    owner_role: _NAME
    rows: Annotated[tuple[TenantRow, ...], Meta(
        description="a list of { table, column, owner } or { table, column, through, parent }")]
    owner_flags: Annotated[tuple[str, ...], Meta(description="a list of column names")] = ()
    organization_type: Annotated[OrganizationType | None, Meta(description="a table { column, value }")] = None
    organization_name: Annotated[dict[str, str], Meta(description="a table of strings")] = \
        field(default_factory=dict)
    one_per_user: Annotated[bool, Meta(description="true or false")] = False

    def tenancy(self) -> Tenancy:
        kind = self.organization_type
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Tenancy(**fields | {"organization_type": (kind.column, kind.value) if kind else None})


@dataclass(frozen=True)
class SearchHash:
    """[[search_hashes]]: a search-hash column, the column it is the hash of, in `table` (`plaintext`: the source
    column holds plaintext, not ciphertext)."""

    table: Annotated[str, Meta(description="a table name")]
    hash: Annotated[str, Meta(description="a column name")]
    source: Annotated[str, Meta(description="a column name")]
    plaintext: Annotated[bool, Meta(description="true or false")] = False


@dataclass(frozen=True)
class Endpoint:
    """[api] endpoints: a list GET, the shape of its answer, and the table whose visible rows it counts."""

    path: Annotated[str, Meta(pattern="^/", description="a path starting with /")]
    shape: Annotated[str, Meta(description="the answer's shape (list or paginated)")]
    count_table: Annotated[str | None, Meta(description="an [api.visibility] table")] = None


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

    table: Annotated[str, Meta(description="a table name")]
    owner: Annotated[str, Meta(description="a column name")]
    organization: Annotated[str | None, Meta(description="a column name")] = None
    active: Annotated[str | None, Meta(description="a column name")] = None


@dataclass(frozen=True)
class VisibilitySides:
    """[api.visibility.<table>]: the rule on each side."""

    new: Annotated[Visibility | None, Meta(description="a table { table, owner, organization, active }")] = None
    legacy: Annotated[Visibility | None, Meta(description="a table { table, owner, organization, active }")] = None


@dataclass(frozen=True)
class MembershipRight:
    """What a membership with one of `roles` sees of its organization: "all" rows (when `flag` is true), its
    "own" rows, or the rows of the "selected" owners listed in the JSON array column `list`."""

    roles: Annotated[tuple[str, ...], Meta(description="a list of role names")]
    sees: Annotated[str, Meta(description="'all', 'own' or 'selected' (with list)",
                              extra_json_schema={"enum": ["all", "own", "selected"]})]
    flag: Annotated[str | None, Meta(description="a column name")] = None
    list: Annotated[str | None, Meta(description="a column name")] = None

    def __post_init__(self) -> None:
        if self.sees not in ("all", "own", "selected") or (self.sees == "selected" and not self.list):
            raise ValueError("sees must be 'all', 'own' or 'selected' (with list)")


# A field's description is the schema's documentation and the end of its one-line error ("<key> must be <it>").
_Route = Annotated[str, Meta(pattern="^/", description="a path starting with /")]
_Field = Annotated[str, Meta(pattern=r"\S", description="a non-empty string")]
_Flag = Annotated[bool, Meta(description="true or false")]


def _stripped(item: object, *keys: str) -> None:
    """A frozen declaration's text fields without the spaces around them (as the reports show them)."""
    for key in keys:
        object.__setattr__(item, key, getattr(item, key).strip())


@dataclass(frozen=True)
class Probe:
    """POST-16's probe as the app takes it ([api.probe]): the route creating a patient and its body's names for the
    name, email and phone; the route reading one patient back ({id}) and its field holding the decrypted email; the
    search route and its body's field. The defaults are the loma-org app's contract (target-app.md section 12)."""

    create: _Route = "/api/patients"
    name: _Field = "name"
    email: _Field = "contactEmail"
    phone: _Field = "contactPhone"
    read: _Route = "/api/patients/{id}"
    search: _Route = "/api/patients/search"
    term: _Field = "searchTerm"
    email_field: _Field = "patientContactEmail"

    def __post_init__(self) -> None:
        if "{id}" not in self.read:
            raise ValueError("read must hold {id} (the created patient's id)")


@dataclass(frozen=True)
class ApiRoute:
    """An authenticated GET the app must answer 2xx (POST-21). A path with "{id}" takes the id of the first record
    of the list `ids_from` answers (its `data`)."""

    path: _Route
    ids_from: _Route | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError("path must start with /")
        if ("{id}" in self.path) != (self.ids_from is not None):
            raise ValueError("a path with {id} needs ids_from (a list path), and ids_from needs {id}")


_PATHS = Annotated[tuple[Annotated[str, Meta(pattern="^/")], ...], Meta(description="a list of paths starting with /")]


@dataclass(frozen=True)
class ApiSection:
    """[api] as the description writes it (ApiRules says what each key means); users and audit take the
    [migration] schema unless they name one."""

    endpoints: Annotated[tuple[Endpoint, ...], Meta(description="a list of { path, shape, count_table }")] = ()
    audited: Annotated[dict[str, str], Meta(description="a table of path = the audit log's resource type")] = \
        field(default_factory=dict)
    users: Annotated[UserTable | None, Meta(description="a table { table, key, username, password, ... }")] = None
    audit: Annotated[AuditTable | None, Meta(description="a table { table, user, resource_type, ... }")] = None
    visibility: Annotated[dict[str, VisibilitySides], Meta(
        description="a table of count_table = { new, legacy }")] = field(default_factory=dict)
    membership_rights: Annotated[tuple[MembershipRight, ...], Meta(
        description="a list of { roles, sees, flag, list }")] = ()
    probe: Probe = field(default_factory=Probe)
    debug_routes: _PATHS = ()
    user_routes: _PATHS = ()
    routes: Annotated[tuple[_Route | ApiRoute, ...], Meta(
        description='a list of paths, or { path = ".../{id}", ids_from = "/api/..." }')] = ()


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


_COLUMNS = Annotated[tuple[str, ...], Meta(min_length=1, description="a non-empty list of column names")]


@dataclass(frozen=True)
class UniqueKey:
    """[preconditions] unique: legacy columns whose values must be unique before the migration (it adds the key)."""

    table: Annotated[str, Meta(description="a table name")]
    columns: _COLUMNS


@dataclass(frozen=True)
class MoneyColumns:
    """[preconditions] money: legacy columns whose values must fit the new schema's money type."""

    table: Annotated[str, Meta(description="a table name")]
    columns: _COLUMNS


@dataclass(frozen=True)
class PreconditionsSection:
    """[preconditions]: what the legacy data must satisfy for the migration to go through."""

    unique: Annotated[tuple[UniqueKey, ...], Meta(description="a list of { table, columns }")] = ()
    money: Annotated[tuple[MoneyColumns, ...], Meta(description="a list of { table, columns }")] = ()


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


_TABLE_GRANTS = Annotated[tuple[str, ...], Meta(description=f"a list of privileges ({', '.join(TABLE_PRIVILEGES)})")]


def _granted(found: tuple[str, ...], allowed: tuple[str, ...], key: str) -> frozenset[str]:
    """Privileges as GRANT spells them, any case; one the list does not know is refused."""
    upper = frozenset(p.upper() for p in found)
    unknown = sorted(upper - set(allowed))
    if unknown:
        raise ValueError(f"{key}: {unknown[0]} is not one of {', '.join(allowed)}")
    return upper


@dataclass(frozen=True)
class AppRoleSection:
    """[app_role] as the description writes it (AppRole says what it means): privileges in any case, each one
    PostgreSQL grants on a table (sequences: on a sequence); [app_role.tables] maps a table to its own list."""

    name: _Field
    privileges: _TABLE_GRANTS
    sequences: Annotated[tuple[str, ...], Meta(
        description=f"a list of privileges ({', '.join(SEQUENCE_PRIVILEGES)})")] = ()
    tables: Annotated[dict[str, tuple[str, ...]], Meta(
        description=f"a table of table name = [privileges ({', '.join(TABLE_PRIVILEGES)})]")] = \
        field(default_factory=dict)

    def __post_init__(self) -> None:
        self.role()

    def role(self) -> AppRole:
        return AppRole(name=self.name, privileges=_granted(self.privileges, TABLE_PRIVILEGES, "privileges"),
                       sequences=_granted(self.sequences, SEQUENCE_PRIVILEGES, "sequences"),
                       tables={t: _granted(v, TABLE_PRIVILEGES, f"tables.{t}") for t, v in self.tables.items()})


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


def _compiles(pattern: str, key: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{key} is not a valid regular expression ({exc})") from None


@dataclass(frozen=True)
class LogsSection:
    """[logs] as the description writes it (LogsConfig says what each key means): a source we know, a format we
    read, regular expressions that compile; `path` resolves from the description's folder (config())."""

    source: Annotated[Literal[LOG_SOURCES], Meta(description=f"one of {', '.join(LOG_SOURCES)}")] = "jsonl"
    path: Annotated[str | None, Meta(description="a file's path (file sources only)")] = None
    format: Annotated[Literal[LOG_FORMATS] | None, Meta(
        description="jsonl or text (a file source's own; the command's output for source command)")] = None
    error_pattern: Annotated[str | None, Meta(description="a regular expression (text lines only)")] = None
    hook: Annotated[str, Meta(description="the name of a [hooks] command")] = LogsConfig.hook
    timeout_seconds: Annotated[float, Meta(gt=0, description="positive (a number of seconds)")] = \
        LogsConfig.timeout_seconds
    settle_seconds: Annotated[float, Meta(ge=0, description="not negative (a number of seconds)")] = \
        LogsConfig.settle_seconds
    own_request_pattern: Annotated[str, Meta(description='a regular expression, or "" for none')] = \
        OWN_REQUEST_PATTERN

    def __post_init__(self) -> None:
        own = "text" if self.source == "text" else "jsonl"
        if self.format is None:
            object.__setattr__(self, "format", own)
        if self.source != "command" and self.format != own:
            raise ValueError(f"format must be {own} for source {self.source}")
        if self.error_pattern is not None:
            if self.format != "text":
                raise ValueError("error_pattern applies to text lines only (format = \"text\")")
            _compiles(self.error_pattern, "error_pattern")
        _compiles(self.own_request_pattern, "own_request_pattern")
        if self.source == "command" and self.path is not None:
            raise ValueError("path applies to file sources only")

    def config(self, base: Path) -> LogsConfig:
        return LogsConfig(source=self.source, path=(base / self.path).resolve() if self.path else None,
                          format=self.format, error_pattern=self.error_pattern, hook=self.hook,
                          timeout_seconds=float(self.timeout_seconds), settle_seconds=float(self.settle_seconds),
                          own_request_pattern=self.own_request_pattern or None)


BACKUP_ENCRYPTION = ("age", "none")


_NON_NEGATIVE = Meta(ge=0, description="a non-negative number")


@dataclass(frozen=True)
class BackupConfig:
    """[backup]: how the dump is kept. `encrypt` "age" (default) streams pg_dump into an age file for `recipients`
    (public keys, plus GATE_BACKUP_RECIPIENTS); "none" keeps a plaintext dump and the sign-off warns loudly. The
    identity that decrypts (a private key) comes from the environment (GATE_BACKUP_IDENTITY), never from here.
    Retention is what the sign-off states: days the local copy is kept, and the remote store's own rule."""

    encrypt: Annotated[Literal[BACKUP_ENCRYPTION], Meta(description="one of age, none")] = "age"
    recipients: Annotated[tuple[Annotated[str, Meta(pattern="^age1")], ...],
                          Meta(description="a list of age public keys (age1...)")] = ()
    retention_days_local: Annotated[int, _NON_NEGATIVE] = 7
    retention_remote: Annotated[str, Meta(description="a string")] = (
        "as the store_backup destination's own lifecycle rule keeps it (not configured)")
    hook_timeout_seconds: Annotated[float, _NON_NEGATIVE] = 1800.0  # store/fetch_backup may move gigabytes
    dump_timeout_seconds: Annotated[float, _NON_NEGATIVE] = 3600.0  # pg_dump streaming into the encryptor
    # before migrating: "digest" (exact) or "counters" (pg_stat_user_tables, fast)
    change_check: Annotated[Literal["digest", "counters"], Meta(description="'digest' or 'counters'")] = "digest"
    # pg_dump's gzip level: 0 by measurement (100,000 patients: 7.7 s for 297 MB at 0, 15.5 s for 131 MB at 1,
    # 48 s for 120 MB at 6; gzip in pg_dump's one process is the bottleneck, the age stream is not)
    compress: Annotated[int, Meta(ge=0, le=9, description="a whole number from 0 to 9")] = 0
    # connections and pg_restore streams a backup works with: the snapshot's checksums beside pg_dump, the
    # restore's data; 0: the machine's cores (at most 4)
    jobs: Annotated[int, Meta(ge=0, le=64, description="a whole number from 0 to 64")] = 0

    @property
    def workers(self) -> int:
        """`jobs`, or the machine's cores (at least 1, at most 4) when it is 0."""
        return self.jobs or max(1, min(4, os.cpu_count() or 1))


# A PostgreSQL duration as SET accepts it ("2s", "500ms", "10min"; a bare number is milliseconds).
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$")


_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text: str) -> float:
    """Milliseconds of a PostgreSQL duration ("2s" is 2000.0); ValueError when it is not one."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _MS[match.group(2) or "ms"]


_TIMEOUT = Meta(description="a duration above zero such as '2s' or '10min' (0 would let a pre-check wait forever)")


@dataclass(frozen=True)
class PrecheckConfig:
    """[precheck]: the settings every pre-check session on the live target starts with. The app is serving while
    the pre-checks run, so a check that would wait for a lock gives up after lock_timeout (red, one line) rather
    than queue with the app's queries behind it; statement_timeout bounds any one query (the checksums included)."""

    lock_timeout: Annotated[str, _TIMEOUT] = "2s"
    statement_timeout: Annotated[str, _TIMEOUT] = "10min"

    def __post_init__(self) -> None:
        for key in ("lock_timeout", "statement_timeout"):
            try:
                if duration_ms(getattr(self, key)) <= 0:
                    raise ValueError(key)
            except ValueError:
                raise ValueError(f"{key} must be {_TIMEOUT.description}") from None
            object.__setattr__(self, key, getattr(self, key).strip())

    def settings(self) -> dict[str, str]:
        return {"lock_timeout": self.lock_timeout, "statement_timeout": self.statement_timeout}


LINT_KINDS = ("table-rewrite", "full-scan-under-lock", "destructive", "no-lock-timeout")


_WHOLE = Meta(ge=0, description="a whole number >= 0")


@dataclass(frozen=True)
class LintAllow:
    line: int
    kind: Literal[LINT_KINDS]
    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("reason must be a non-empty string")
        object.__setattr__(self, "reason", self.reason.strip())


@dataclass(frozen=True)
class LintConfig:
    """[lint]: which of the migration's hazards (migration_gate.checks.lint) are red. Nothing is denied by default: the
    gate migrates inside the maintenance window, where a lock blocks no user and the window's length is the
    budgets' business; a team that migrates while the app serves denies table-rewrite and full-scan-under-lock.
    A hazard on a table below every configured size threshold stays a note; an allowed one is a note with its
    reason."""

    deny: Annotated[tuple[Literal[LINT_KINDS], ...],
                    Meta(description=f"a list of {', '.join(LINT_KINDS)}")] = ()
    min_rows: Annotated[int, _WHOLE] = 0
    min_bytes: Annotated[int, _WHOLE] = 0
    allow: Annotated[tuple[LintAllow, ...], Meta(
        description=f"a list of entries each with line (a number), kind (one of {', '.join(LINT_KINDS)}) and a "
                    "reason, nothing else")] = ()


_AT_LEAST_1 = Meta(ge=1, description="a number of at least 1")


@dataclass(frozen=True)
class PerformanceConfig:
    """[performance]: the baseline the pre-checks measure on the legacy app and the budget the post-checks and
    go-live hold the new schema to: red when p95_after > p95_factor * p95_before + p95_allowance_ms (or the error
    rate rises). `requests` per endpoint, sent by `workers` threads (1: one after another)."""

    requests: Annotated[int, _AT_LEAST_1] = 40
    workers: Annotated[int, _AT_LEAST_1] = 1
    p95_factor: Annotated[float, _AT_LEAST_1] = 1.5
    p95_allowance_ms: Annotated[float, Meta(ge=0, description="a number of at least 0")] = 50.0
    max_seconds: Annotated[float, _AT_LEAST_1] = 120.0


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


_ITEM_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


_WHOLE_1 = Meta(ge=1, description="a whole number of at least 1")
_ENV_VAR = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="an environment variable's name")]
_FIELD_NAMES = Annotated[tuple[Annotated[str, Meta(pattern=r"\S")], ...], Meta(description="a list of field names")]


@dataclass(frozen=True)
class AnswerLoginSection:
    """One of [answers] logins as the description writes it: the NAMES of the variables holding the username and
    the password (a literal username may stand in for username_env; the password never goes in the file)."""

    username_env: _ENV_VAR = AnswerLogin.username_env
    password_env: _ENV_VAR = AnswerLogin.password_env
    username: Annotated[str | None, Meta(description="a username (instead of username_env)")] = None


@dataclass(frozen=True)
class AnswerRequestSection:
    """One of [answers] requests as the description writes it (AnswerRequest says what each key means); new_path
    false: the new app has no such route."""

    path: _Route
    records: Annotated[str, Meta(description="a dotted path into the JSON answer")] = AnswerRequest.records
    id: Annotated[str, Meta(description="a record's id field")] = AnswerRequest.id
    ids_from: Annotated[str | None, Meta(description="the path of a request listed before this one")] = None
    paginated: _Flag = False
    new_path: Annotated[str | bool | None, Meta(
        description="a path starting with / (or false: the new app has no such route)")] = None

    def __post_init__(self) -> None:
        new = self.new_path
        if new is True or (isinstance(new, str) and not new.startswith("/")):
            raise ValueError(f"request {self.path}: new_path must be a path starting with / (or false: the new app "
                             "has no such route)")
        if isinstance(new, str) and ("{id}" in new) != ("{id}" in self.path):
            raise ValueError(f"request {self.path}: new_path must hold {{id}} exactly when path does")
        if ("{id}" in self.path) != (self.ids_from is not None):
            raise ValueError(f"request {self.path}: a path with {{id}} needs ids_from (and only it)")

    def request(self) -> AnswerRequest:
        return AnswerRequest(path=self.path, records=self.records, id=self.id, ids_from=self.ids_from,
                             paginated=self.paginated, new_path=self.new_path or None,
                             on_new=self.new_path is not False)


@dataclass(frozen=True)
class AnswersSection:
    """[answers] as the description writes it (AnswersConfig says what each key means)."""

    logins: Annotated[tuple[AnswerLoginSection, ...], Meta(
        description="a list of { username_env, password_env } (or username)")] = (AnswerLoginSection(),)
    requests: Annotated[tuple[AnswerRequestSection, ...], Meta(
        description="a list of { path, records, id, ids_from, paginated, new_path }")] = ()
    sample: Annotated[int, Meta(ge=0, description="a whole number of at least 0")] = AnswersConfig.sample
    page_size: Annotated[int, _WHOLE_1] = AnswersConfig.page_size
    max_pages: Annotated[int, _WHOLE_1] = AnswersConfig.max_pages
    renames: Annotated[dict[str, str], Meta(description="a table mapping legacy field names to the new API's")] = \
        field(default_factory=dict)
    ignore: _FIELD_NAMES = ()
    added: _FIELD_NAMES = ()
    nested: _FIELD_NAMES = ()
    absent_equals_null: _Flag = AnswersConfig.absent_equals_null

    def config(self) -> AnswersConfig:
        logins = tuple(AnswerLogin(**dataclasses.asdict(login)) for login in self.logins)
        return AnswersConfig(logins=logins or (AnswerLogin(),), requests=tuple(r.request() for r in self.requests),
                             sample=self.sample, page_size=self.page_size, max_pages=self.max_pages,
                             renames=dict(self.renames), ignore=self.ignore, added=self.added, nested=self.nested,
                             absent_equals_null=self.absent_equals_null)


@dataclass(frozen=True)
class PeopleItem:
    """One human item of the checklist ([[people]]): what someone attests (scripts/attest) before or after the
    cut-over. `decision_maker` marks the item whose attestation names the rollback decision maker."""

    id: Annotated[str, Meta(pattern=_ITEM_ID.pattern, description="lower-case letters, digits, '-' or '_'")]
    text: _Field
    required_before_cutover: _Flag = True
    decision_maker: _Flag = False

    def __post_init__(self) -> None:
        _stripped(self, "text")


def _a_criterion(criterion: str, example: str) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion {criterion} is not a checklist criterion (e.g. {example})")


@dataclass(frozen=True)
class Waiver:
    """A known fault of the app a team goes live with knowingly ([[waivers]]): the criterion, the exact problem line
    it matches (or a pattern the whole line matches, for counts that differ between rehearsal and production),
    why, who decided and until when. A finding it matches is shown as waived, never hidden; an expired waiver, or
    one that matched nothing in a run of its criterion, is red."""

    criterion: _Field
    reason: _Field
    decided_by: _Field
    # the last day it holds
    expires: Annotated[date, Meta(description="a date such as 2027-01-31 (the last day the waiver holds)")]
    finding: _Field = ""  # the exact problem line, as the report shows it
    finding_regex: _Field = ""  # or a pattern the whole problem line matches

    def __post_init__(self) -> None:
        _stripped(self, "criterion", "reason", "decided_by", "finding", "finding_regex")
        _a_criterion(self.criterion, "POST-09")
        if bool(self.finding) == bool(self.finding_regex):
            raise ValueError("give the finding it waives as finding (the exact problem line) or finding_regex (a "
                             "pattern of the whole line), one of them, a non-empty string")
        try:
            re.compile(self.finding_regex)
        except re.error as exc:
            raise ValueError(f"finding_regex is not a valid regular expression ({exc})") from None

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


@dataclass(frozen=True)
class NotApplicable:
    """A criterion the description says does not apply to this migration ([[not_applicable]]): why, and who
    decided. A criterion whose tests all skipped is "not checked" and red in a cut-over unless one of these
    names it; then it is "not applicable" with this reason, in the reports and the sign-off."""

    criterion: _Field
    reason: _Field
    decided_by: _Field

    def __post_init__(self) -> None:
        _stripped(self, "criterion", "reason", "decided_by")
        _a_criterion(self.criterion, "POST-19")


_POSITIVE = Meta(gt=0, description="a positive number")


@dataclass(frozen=True)
class NotifyConfig:
    """[notify]: how often the [hooks] notify command is called while the maintenance window is open (besides
    every phase change), and how long one call may take before it is stopped (the cut-over never waits on it)."""

    interval_minutes: Annotated[float, _POSITIVE] = 30.0
    timeout_seconds: Annotated[float, _POSITIVE] = 30.0


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


_ENV_NAME = Annotated[str, Meta(pattern=f"^{ENV_NAME.pattern}$")]
_ENV_NAMES = Annotated[tuple[_ENV_NAME, ...], Meta(description="a list of environment variable names")]
_STRINGS = Annotated[dict[str, str], Meta(description='a table of strings, e.g. { NAME = "value" }')]


@dataclass(frozen=True)
class AppServerSection:
    """[rehearsal.app_new] / [rehearsal.app_legacy] as the description writes them (AppServerConfig says what each
    key means): a command, variable names that are names, the three the gate hands over different and not also in
    env or pass_env; `cwd` resolves from the description's folder (config())."""

    command: Annotated[str, Meta(description="a shell command (a non-empty string)")] = ""
    cwd: Annotated[str, Meta(description="a folder (relative to the description's)")] = "."
    health: Annotated[str, Meta(pattern="^/", description="a path starting with /")] = AppServerConfig.health
    env: _STRINGS = field(default_factory=dict)
    pass_env: _ENV_NAMES = ()
    headers: _STRINGS = field(default_factory=dict)
    dsn_env: Annotated[_ENV_NAME, Meta(description="an environment variable name")] = AppServerConfig.dsn_env
    key_env: Annotated[_ENV_NAME, Meta(description="an environment variable name")] = AppServerConfig.key_env
    port_env: Annotated[_ENV_NAME, Meta(description="an environment variable name")] = AppServerConfig.port_env
    start_timeout_seconds: Annotated[float, Meta(gt=0, description="a positive number of seconds")] = \
        AppServerConfig.start_timeout_seconds
    database_role: Annotated[Literal["app", "owner"], Meta(description="'app' or 'owner'")] = \
        AppServerConfig.database_role

    def __post_init__(self) -> None:
        if not self.command.strip():
            raise ValueError("command must be a shell command (a non-empty string)")
        bad = [n for n in self.env if not ENV_NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not an environment variable name")
        handed = (self.dsn_env, self.key_env, self.port_env)
        if len(set(handed)) < 3:
            raise ValueError("dsn_env, key_env and port_env must be three different names")
        twice = sorted(set(handed) & (set(self.env) | set(self.pass_env)))
        if twice:
            raise ValueError(f"{twice[0]} is handed over by the gate; it cannot also be in env or pass_env")

    def config(self, base: Path) -> AppServerConfig:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return AppServerConfig(**fields | {"cwd": (base / self.cwd).resolve(),
                                           "start_timeout_seconds": float(self.start_timeout_seconds)})




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


_COMMAND = Annotated[str | None, Meta(description="a shell command (a non-empty string)")]


@dataclass(frozen=True)
class RehearsalSection:
    """[rehearsal] as the description writes it (RehearsalConfig says what each key means): a kind we know, the
    hooks kind with both commands, the apps' folders resolved from the description's folder (config())."""

    kind: Annotated[str, Meta(description=f"one of {', '.join(REHEARSAL_KINDS)}",
                              extra_json_schema={"enum": list(REHEARSAL_KINDS)})] = RehearsalConfig.kind
    create_copy: _COMMAND = None
    delete_copy: _COMMAND = None
    timeout_seconds: Annotated[float, Meta(gt=0, description="a positive number of seconds")] = \
        RehearsalConfig.timeout_seconds
    app_new: Annotated[AppServerSection | None, Meta(description="a table ([rehearsal.app_new])")] = None
    app_legacy: Annotated[AppServerSection | None, Meta(description="a table ([rehearsal.app_legacy])")] = None

    def __post_init__(self) -> None:
        if self.kind not in REHEARSAL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(REHEARSAL_KINDS)} (got {self.kind!r})")
        for name in ("create_copy", "delete_copy"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ValueError(f"{name} must be a shell command (a non-empty string)")
        if self.kind == "hooks" and not (self.create_copy and self.delete_copy):
            raise ValueError("kind 'hooks' needs both create_copy and delete_copy commands")

    def config(self, base: Path) -> RehearsalConfig:
        return RehearsalConfig(kind=self.kind, create_copy=self.create_copy, delete_copy=self.delete_copy,
                               timeout_seconds=float(self.timeout_seconds),
                               app_new=self.app_new.config(base) if self.app_new else None,
                               app_legacy=self.app_legacy.config(base) if self.app_legacy else None)


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
    after_golive: str = "start"  # the cut-over starts the watch (detached), or "print": its command, run not complete
    no_alert_because: str = ""  # why there is no [hooks] alert ("": the pre-flight refuses a description without one)


@dataclass(frozen=True)
class WatchSlot:
    """One segment of [watch] schedule: a round every `every_minutes` until `until_hours` after go-live."""

    until_hours: Annotated[float, Meta(gt=0, description="a number of hours above zero")]
    every_minutes: Annotated[float, Meta(gt=0, description="a number of minutes above zero")]


@dataclass(frozen=True)
class RollbackCriteria:
    """[watch.rollback_criteria]: when the watch says a rollback criterion is met (WatchConfig says each)."""

    invariant_red: _Flag = WatchConfig.invariant_red
    error_rate_over: Annotated[float, Meta(ge=0, le=1, description="a fraction from 0 to 1")] = \
        WatchConfig.error_rate_over
    error_rate_rounds: Annotated[int, _WHOLE_1] = WatchConfig.error_rate_rounds
    p95_over_budget_rounds: Annotated[int, Meta(ge=0, description="a whole number >= 0 (0: off)")] = \
        WatchConfig.p95_over_budget_rounds


@dataclass(frozen=True)
class WatchSection:
    """[watch] as the description writes it (a schedule of tables, the criteria in their own table); read into
    WatchConfig, the shape the watch works with."""

    schedule: Annotated[tuple[WatchSlot, ...], Meta(
        min_length=1, description="a non-empty list of { until_hours, every_minutes }")] = tuple(
        WatchSlot(until, every) for until, every in WatchConfig.schedule)
    latency_samples: Annotated[int, _WHOLE_1] = WatchConfig.latency_samples
    baseline_factor: Annotated[float, Meta(gt=0, description="a number above zero")] = WatchConfig.baseline_factor
    rollback_criteria: Annotated[RollbackCriteria, Meta(description="a table ([watch.rollback_criteria])")] = \
        field(default_factory=RollbackCriteria)
    after_golive: Annotated[Literal["start", "print"], Meta(description="'start' or 'print'")] = \
        WatchConfig.after_golive
    no_alert_because: Annotated[str, Meta(
        pattern=r"^\s*[^\n]*\S[^\n]*\s*$",
        description="one non-empty line saying why no [hooks] alert tells anyone of a red watch round")] = ""

    def __post_init__(self) -> None:
        _stripped(self, "no_alert_because")
        last = 0.0
        for slot in self.schedule:
            if slot.until_hours <= last:
                raise ValueError(f"schedule entries need until_hours rising past {last:g} and every_minutes above "
                                 "zero")
            last = slot.until_hours

    def config(self) -> WatchConfig:
        return WatchConfig(schedule=tuple((float(s.until_hours), float(s.every_minutes)) for s in self.schedule),
                           latency_samples=self.latency_samples, baseline_factor=float(self.baseline_factor),
                           after_golive=self.after_golive, no_alert_because=self.no_alert_because,
                           **dataclasses.asdict(self.rollback_criteria))


@dataclass(frozen=True)
class EscalationStep:
    """One step of [[escalation]]: who is told next (`name`, by `command`, a shell command run as [hooks] alert is,
    with GATE_ESCALATION_NAME and GATE_ESCALATION_STEP besides) when a red watch round is still not acknowledged
    (scripts/watch --ack ROUND --by NAME) `after_minutes` after it ended. Steps in rising after_minutes."""

    name: _Field
    command: _Field
    after_minutes: Annotated[float, Meta(gt=0, description="a number of minutes above zero")]

    def __post_init__(self) -> None:
        _stripped(self, "name")


@dataclass(frozen=True)
class SecurityConfig:
    """[security]: allow_insecure_transport is the operator's reason, as the sign-off records it ("" when absent).
    Not a boolean: an opt-out of verified TLS to a remote target says why (one line, for whoever signs off)."""

    allow_insecure_transport: Annotated[str, Meta(
        pattern=r"^\s*[^\n]*\S[^\n]*\s*$",
        description="one non-empty line saying why TLS is not verified (e.g. \"the database is reached through an "
                    "SSH tunnel\")")] = ""

    def __post_init__(self) -> None:
        _stripped(self, "allow_insecure_transport")


@dataclass(frozen=True)
class DeployConfig:
    """[deploy]: app_tables, the tables the app's own migrations may create when it starts on the new schema (in
    [migration] schema); none declared: the deploy may create nothing."""

    app_tables: Annotated[tuple[Annotated[str, Meta(pattern=r"\S")], ...],
                          Meta(description="a list of table names")] = ()
    # when the new app does not turn healthy (run/diagnosis.py): the app's own read-only queries, run as
    # [app_role]; the version the new release reports ("": what the deploy hook printed); redeploys before the
    # rollback (0 or 1)
    smoke_queries: Annotated[tuple[str, ...], Meta(description="a list of read-only SELECT statements")] = ()
    expected_version: Annotated[str, Meta(pattern=r"^([A-Za-z0-9][A-Za-z0-9._+-]{0,63})?$",
                                          description="a version or commit ('' for the deploy hook's)")] = ""
    retries: Annotated[int, Meta(ge=0, le=1, description="0 or 1")] = 0

    def __post_init__(self) -> None:
        if len(set(self.app_tables)) != len(self.app_tables):
            raise ValueError("app_tables names a table twice")
        for number, query in enumerate(self.smoke_queries, 1):
            if not SMOKE_QUERY.match(query) or ";" in query.strip().rstrip(";"):
                raise ValueError(f"smoke_queries item {number} is not one SELECT statement")


SMOKE_QUERY = re.compile(r"\s*(SELECT|WITH)\b", re.IGNORECASE)  # one read-only query (run read-only anyway)


@dataclass(frozen=True)
class MigrationSection:
    """[migration]: the migration's SQL file (and the one undoing it), relative to the description's folder
    (GATE_MIGRATION_FILE stands in for `file`); the timeouts its session runs with; how a cut-over rolls back."""

    file: Annotated[str | None, Meta(description="the migration's SQL file")] = None
    rollback_file: Annotated[str | None, Meta(description="the SQL file undoing the migration")] = None
    lock_timeout: Annotated[str, Meta(description="a PostgreSQL duration such as '10s'")] = "10s"
    statement_timeout: Annotated[str, Meta(description="a PostgreSQL duration ('0': none)")] = "0"
    rollback_method: Annotated[Literal["restore", "sql"], Meta(description="'restore' or 'sql'")] = "restore"
    schema: _Field = "public"

    def __post_init__(self) -> None:
        if self.rollback_method == "sql" and not self.rollback_file:
            raise ValueError("rollback_method 'sql' needs rollback_file")


@dataclass(frozen=True)
class SandboxSection:
    """[sandbox]: the embedded sandbox the suites bring up when DATABASE_URL is not set: its synthetic practice
    (patients, seed), the therapist it logs in as, and what brings it up (module:attribute of a class implementing
    migration_gate.run.provider.SandboxProvider; GATE_SANDBOX_PROVIDER overrides it)."""

    patients: Annotated[int, Meta(ge=0, description="a whole number >= 0")] = 300
    seed: Annotated[int, Meta(description="a whole number")] = 1
    username: _Field = "demo_therapist1"
    password: Annotated[str, Meta(description="a string")] = "demo-password-1"
    provider: Annotated[str, Meta(pattern=":", description="module:attribute")] = DEFAULT_SANDBOX_PROVIDER


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
    # [hooks] rehearsal_max_age_hours: the pre-flight refuses a last `cutover --rehearse-hooks` older than this
    hook_rehearsal_max_age_hours: float = 72.0
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
    # [[escalation]]: who is told next when a red watch round is not acknowledged in time (watch.rounds)
    escalation: tuple[EscalationStep, ...] = ()
    deploy: DeployConfig = field(default_factory=DeployConfig)  # [deploy]: smoke queries, version, retries

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
