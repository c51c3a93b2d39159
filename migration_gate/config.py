"""Configuration: the environment (where the target is, the key, the fixture user) plus one TOML file that
describes the migration (table and column mappings, the expected schema, endpoints, budgets).

Everything is validated here, once, so a bad configuration stops a run with one clear line instead of a
traceback per test. Secrets never come from the TOML file.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from migration_gate.phi import PhiKeyError, parse_key

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "migration.toml"
ON_DELETE = {"restrict": "r", "cascade": "c", "no action": "a", "set null": "n", "set default": "d"}


class ConfigError(ValueError):
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


@dataclass(frozen=True)
class TableMap:
    """One legacy table and the new table it becomes."""

    new: str
    legacy: str
    key: str
    columns: dict[str, str]  # legacy -> new, non-PHI
    phi: dict[str, str]  # legacy -> new, ciphertext
    hashes: dict[str, str]  # legacy -> new, search hashes
    owner: tuple[str, str] | None = None  # (legacy, new) therapist column
    soft_delete: str | None = None
    append_only: bool = False  # rows added after the backup are expected (audit logs); only older rows compared


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
class UniqueKey:
    table: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class MoneyColumns:
    table: str
    columns: tuple[str, ...]


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
    endpoints: tuple[Endpoint, ...]
    audited: dict[str, str]
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

    def table(self, new: str) -> TableMap:
        for mapping in self.tables:
            if mapping.new == new:
                return mapping
        raise KeyError(new)

    def legacy_phi_columns(self) -> list[tuple[str, str]]:
        return [(t.legacy, c) for t in self.tables for c in t.phi]

    def new_encrypted_columns(self) -> list[tuple[str, str]]:
        """Every *_encrypted column of the expected new schema (not only the mapped ones)."""
        return [(t, c) for t, cols in self.new_schema.items() for c in cols if c.endswith("_encrypted")]


@dataclass(frozen=True)
class Environment:
    """Where the target is. database_url None means: bring up the embedded sandbox."""

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

    @property
    def embedded(self) -> bool:
        return self.database_url is None


def _need(data: dict, key: str, kind: type, where: str):
    if key not in data:
        raise ConfigError(f"{where}: '{key}' is missing")
    value = data[key]
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' must be a {kind.__name__}")
    return value


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


def load_config(path: Path | None = None) -> GateConfig:
    """Read and validate the migration description (default: migration.toml at the project root)."""
    path = Path(path or os.environ.get("GATE_CONFIG") or DEFAULT_CONFIG)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc.__class__.__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    base = path.parent
    where = path.name
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
    for new, spec in _need(data, "tables", dict, where).items():
        spot = f"{where} [tables.{new}]"
        owner = spec.get("owner")
        tables.append(TableMap(
            new=new, legacy=_need(spec, "legacy", str, spot), key=_need(spec, "key", str, spot),
            columns=dict(spec.get("columns", {})), phi=dict(spec.get("phi", {})),
            hashes=dict(spec.get("hashes", {})),
            owner=(_need(owner, "legacy", str, spot + " owner"), _need(owner, "new", str, spot + " owner"))
            if owner else None,
            soft_delete=spec.get("soft_delete"), append_only=bool(spec.get("append_only", False))))
    pre = data.get("preconditions", {})
    config = GateConfig(
        path=path, migration_file=migration_file, rollback_file=rollback_file,
        lock_timeout=str(mig.get("lock_timeout", "10s")), statement_timeout=str(mig.get("statement_timeout", "0")),
        downtime_minutes=_need(budgets, "downtime_minutes", float, f"{where} [budgets]"),
        phase_minutes={k: float(v) for k, v in budgets.get("phase_minutes", {}).items()},
        api_p95_ms=_need(budgets, "api_p95_ms", float, f"{where} [budgets]"),
        api_latency_samples=int(budgets.get("api_latency_samples", 20)),
        sandbox_patients=int(sandbox.get("patients", 300)), sandbox_seed=int(sandbox.get("seed", 1)),
        sandbox_username=str(sandbox.get("username", "demo_therapist1")),
        sandbox_password=str(sandbox.get("password", "demo-password-1")),
        endpoints=tuple(Endpoint(_need(e, "path", str, f"{where} [api]"), _need(e, "shape", str, f"{where} [api]"),
                                 e.get("count_table")) for e in api.get("endpoints", [])),
        audited=dict(api.get("audited", {})),
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
        hooks={k: str(v) for k, v in data.get("hooks", {}).items()},
    )
    if config.rollback_method not in ("restore", "sql"):
        raise ConfigError(f"{where} [migration]: rollback_method must be 'restore' or 'sql'")
    if config.rollback_method == "sql" and config.rollback_file is None:
        raise ConfigError(f"{where} [migration]: rollback_method 'sql' needs rollback_file")
    for mapping in config.tables:
        if mapping.new not in config.new_schema:
            raise ConfigError(f"{where} [tables.{mapping.new}]: table is not in [new_schema]")
        if mapping.legacy not in config.legacy_schema:
            raise ConfigError(f"{where} [tables.{mapping.new}]: legacy table {mapping.legacy} is not in "
                              "[legacy_schema]")
        for legacy_col, new_col in [*mapping.columns.items(), *mapping.phi.items(), *mapping.hashes.items()]:
            if new_col not in config.new_schema[mapping.new]:
                raise ConfigError(f"{where} [tables.{mapping.new}]: column {new_col} is not in "
                                  f"[new_schema.{mapping.new}]")
            if legacy_col not in config.legacy_schema[mapping.legacy]:
                raise ConfigError(f"{where} [tables.{mapping.new}]: column {legacy_col} is not in "
                                  f"[legacy_schema.{mapping.legacy}]")
    return config


def load_environment(env: dict[str, str] | None = None) -> Environment:
    """Read the target from the environment; the key, when given, must be well-formed."""
    env = dict(os.environ if env is None else env)
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
                                 ("allow_writes", env.get("GATE_ALLOW_WRITES"))) if v},
    )
