"""Reading the migration description: the TOML chain (extends), unknown sections, and each section checked into
its model (config/model.py) by its msgspec declaration (`_section`, `_entries`); what a declaration cannot say
(a file that exists, a [hooks] command a section names, ids_from listed before, a table named twice, [budgets] and
[hooks] themselves) is checked here by hand. Every problem is one ConfigError line naming the section and the key."""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from migration_gate.config.environment import REHEARSAL_KIND_ENV, variable
from migration_gate.config.errors import ConfigError
from migration_gate.config.model import (
    ENV_NAME,
    AnswersConfig,
    AnswersSection,
    ApiRoute,
    ApiRules,
    ApiSection,
    AppRole,
    AppRoleSection,
    AppServerConfig,
    AppServerSection,
    BackupConfig,
    DeployConfig,
    EscalationStep,
    ForeignKey,
    ForeignKeyEntry,
    GateConfig,
    LintConfig,
    LogsConfig,
    LogsSection,
    MigrationSection,
    NotApplicable,
    NotifyConfig,
    PeopleItem,
    PerformanceConfig,
    PrecheckConfig,
    PreconditionsSection,
    Probe,
    RehearsalConfig,
    RehearsalSection,
    SandboxSection,
    SearchHash,
    SecurityConfig,
    TableObjects,
    TableSection,
    Tenancy,
    TenancySection,
    Visibility,
    VisibilitySides,
    Waiver,
    WatchConfig,
    WatchSection,
)
from migration_gate.core.paths import ROOT

T = TypeVar("T")


def _section(spec: object, model: type[T], where: str) -> T:
    """A section declared in model.py, checked by msgspec against its declaration (absent: the defaults). Every
    problem is one line naming the section and the key: "<where>: unknown key <key>", "<where>: <key> must be
    <the field's description>" or "<where>: needs <key>"; never a value from the file (it may hold a secret)."""
    if spec is None:
        spec = {}
    _no_unknown_keys(spec, model, where, "")
    try:
        return msgspec.convert(spec, model)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {_problem(str(exc), model)}") from None


def _entries(spec: object, model: type[T], where: str, section: str) -> tuple[T, ...]:
    """An array of tables ([[people]], [[waivers]]...), each entry by its declaration: "<where> item <n>: ..."."""
    if spec is None:
        return ()
    if not isinstance(spec, list) or not all(isinstance(item, dict) for item in spec):
        raise ConfigError(f"{where}: must be an array of tables ([[{section}]])")
    return tuple(_section(item, model, f"{where} item {number}") for number, item in enumerate(spec, 1))


def _twice(names: list[str]) -> str | None:
    """The first name an array of tables gives twice (each entry is for one thing), None when each is once."""
    return next((name for name in names if names.count(name) > 1), None)


def _no_unknown_keys(spec: object, model: type, where: str, prefix: str) -> None:
    """A misspelt key is refused, never ignored (msgspec ignores a dataclass's unknown fields), in nested tables,
    arrays of tables and tables of tables too."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') + ' ' if prefix else ''}must be a table")
    hints = _hints(model)
    unknown = sorted(set(spec) - set(hints))
    if unknown:
        raise ConfigError(f"{where}: unknown key {prefix}{unknown[0]} (known: {', '.join(hints)})")
    for key, value in spec.items():
        _tables_in(value, hints[key], where, f"{prefix}{key}")


@functools.cache
def _hints(model: type) -> dict[str, Any]:
    """A declaration's fields and their types (evaluated once: a description reads hundreds of tables)."""
    return typing.get_type_hints(model)


def _tables_in(value: object, hint: Any, where: str, at: str) -> None:
    """Into the tables a value of this declared type holds (a value of the wrong type is msgspec's to refuse)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        _no_unknown_keys(value, hint, where, f"{at}.")
    elif origin in (tuple, list) and isinstance(value, list):
        for number, item in enumerate(value):
            _tables_in(item, args[0], where, f"{at}[{number}]")
    elif origin is dict and isinstance(value, dict):
        for key, item in value.items():
            _tables_in(item, args[1], where, f"{at}.{key}")
    elif origin in (typing.Union, types.UnionType):
        inner = next((a for a in args if dataclasses.is_dataclass(a)), None)
        if inner is not None and isinstance(value, dict):
            _no_unknown_keys(value, inner, where, f"{at}.")


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field holds (itself, or the items of its tuple), None for anything else."""
    if dataclasses.is_dataclass(hint):
        return hint
    args = typing.get_args(hint)
    return next((a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)), None)


def _description(hint: Any) -> str | None:
    return next((m.description for m in getattr(hint, "__metadata__", ()) if getattr(m, "description", None)), None)


def _problem(message: str, model: type) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.workers`" as the declaration words it: "workers must be a number of
    at least 1" (the description of the deepest field on the path that has one, nested tables included);
    "Object missing required field `reason`" as "needs reason (<its description>)"; a check of the model's own
    (__post_init__) says its line itself, after the path of the nested table it is about."""
    text, _, path = message.partition(" - at `$")
    path = path.rstrip("`")
    missing = re.fullmatch(r"Object missing required field `(\w+)`", text)
    if missing:
        path += f".{missing.group(1)}"
    shown, described, here, owner = "", None, "", model
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", path):
        here += f"[{index}]" if index else (f".{key}" if here else key)
        if not key:
            continue
        hint = typing.get_type_hints(owner, include_extras=True).get(key) if owner is not None else None
        if hint is None:
            break
        if _description(hint):
            shown, described = here, _description(hint)
        owner = _dataclass_in(typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint)
    if missing:
        parent, _, key = here.rpartition(".")
        return (f"{parent}: " if parent else "") + f"needs {key}" + (f" ({described})" if shown == here else "")
    if described and text.startswith(("Expected", "Invalid")):
        return f"{shown} must be {described}"
    return f"{here}: {text}" if here else text


def load_probe(spec: object, where: str) -> Probe:
    """[api.probe] by its declaration: routes start with /, field names are non-empty strings, read holds {id}."""
    return _section(spec, Probe, where)


def load_app_role(spec: object, where: str) -> AppRole | None:
    """[app_role] by its declaration: name, privileges, sequences, and per-table privileges in [app_role.tables]."""
    return None if spec is None else _section(spec, AppRoleSection, where).role()


def _need_dict(spec: dict, key: str, where: str) -> dict:
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{key}' must be a table")
    return value


def load_logs(spec: object, hooks: dict[str, str], base: Path, where: str) -> LogsConfig:
    """[logs] by its declaration (a source we know, a format we read, regexes that compile), and a command source's
    hook among [hooks]."""
    logs = _section(spec, LogsSection, where)
    if logs.source == "command" and not hooks.get(logs.hook):
        raise ConfigError(f"{where}: source \"command\" needs the command [hooks] {logs.hook}")
    return logs.config(base)


def load_backup(spec: object, where: str) -> BackupConfig:
    """[backup] by its declaration: unknown keys, wrong types and an unknown mode are one line each."""
    return _section(spec, BackupConfig, where)


def load_precheck(spec: object, where: str) -> PrecheckConfig:
    """[precheck] by its declaration: both timeouts PostgreSQL durations above zero (0 would mean wait forever)."""
    return _section(spec, PrecheckConfig, where)


def load_lint(spec: object, where: str) -> LintConfig:
    """[lint] by its declaration: known kinds only, thresholds whole numbers >= 0, every allow with line, kind and
    reason."""
    return _section(spec, LintConfig, where)


def load_performance(spec: object, where: str) -> PerformanceConfig:
    """[performance] by its declaration: counts at least 1, factor at least 1, allowance and duration not
    negative."""
    return _section(spec, PerformanceConfig, where)


def load_answers(spec: object, where: str) -> AnswersConfig:
    """[answers] by its declaration: logins name environment variables, requests are well-formed (ids_from a
    request listed before), counts positive."""
    logins = spec.get("logins", []) if isinstance(spec, dict) else []
    if any(isinstance(login, dict) and "password" in login for login in logins):
        raise ConfigError(f"{where}: a login names the environment variable of its password (password_env); the "
                          "password itself never goes in this file")
    answers = _section(spec, AnswersSection, where)
    for number, request in enumerate(answers.requests):
        if request.ids_from is not None and request.ids_from not in {r.path for r in answers.requests[:number]}:
            raise ConfigError(f"{where}: request {request.path}: ids_from {request.ids_from} is not a request "
                              "listed before it")
    return answers.config()


def load_people(spec: object, where: str) -> tuple[PeopleItem, ...]:
    """[[people]] by its declaration, each id once and at most one decision_maker."""
    items = _entries(spec, PeopleItem, where, "people")
    if (twice := _twice([i.id for i in items])) is not None:
        raise ConfigError(f"{where}: item id {twice} appears twice")
    if sum(i.decision_maker for i in items) > 1:
        raise ConfigError(f"{where}: only one item may be the decision_maker")
    return items


def load_waivers(spec: object, where: str) -> tuple[Waiver, ...]:
    """[[waivers]] by their declaration (a known criterion, one finding, exact or a pattern, a reason, who decided
    and an expiry date each); the same finding waived twice for one criterion is refused (which one would it be?)."""
    found = _entries(spec, Waiver, where, "waivers")
    if (twice := _twice([w.label for w in found])) is not None:
        raise ConfigError(f"{where}: {twice} is waived twice")
    return found


def load_not_applicable(spec: object, where: str) -> tuple[NotApplicable, ...]:
    """[[not_applicable]] by its declaration, as [[waivers]] are: a known criterion, a reason and who decided, each
    criterion once."""
    found = _entries(spec, NotApplicable, where, "not_applicable")
    if (twice := _twice([n.criterion for n in found])) is not None:
        raise ConfigError(f"{where}: {twice} is declared not applicable twice")
    return found


def load_notify(spec: object, where: str) -> NotifyConfig:
    """[notify] by its declaration: both positive numbers."""
    return _section(spec if isinstance(spec, dict) else None, NotifyConfig, where)


def load_security(spec: object, where: str) -> str:
    """[security] allow_insecure_transport by its declaration: the operator's one-line reason; "" when absent."""
    return _section(spec, SecurityConfig, where).allow_insecure_transport


def load_app_server(spec: object, base: Path, where: str) -> AppServerConfig | None:
    """One app of [rehearsal] ([rehearsal.app_new] alone: where names it) by its declaration, and a folder that
    exists."""
    if spec is None:
        return None
    return _app_server(_section(spec, AppServerSection, where), base, where)


def _app_server(app: AppServerSection, base: Path, where: str) -> AppServerConfig:
    found = app.config(base)
    if not found.cwd.is_dir():
        raise ConfigError(f"{where}: cwd {found.cwd} is not a folder")
    return found


def load_rehearsal(spec: object, where: str, base: Path = ROOT) -> RehearsalConfig:
    """[rehearsal] by its declaration (GATE_REHEARSAL_KIND overrides kind): one line per problem."""
    kind = variable(REHEARSAL_KIND_ENV)
    if kind and isinstance(spec, dict | None):
        spec = {**(spec or {}), "kind": kind}
    rehearsal = _section(spec, RehearsalSection, where)
    for name in ("app_new", "app_legacy"):
        if getattr(rehearsal, name) is not None:
            _app_server(getattr(rehearsal, name), base, f"{where}: {name}")
    return rehearsal.config(base)


def load_app_tables(spec: object, where: str) -> tuple[str, ...]:
    """[deploy] app_tables by its declaration: table names, each once (none declared: the deploy creates nothing)."""
    return _section(spec, DeployConfig, where).app_tables


def load_watch(spec: object, where: str) -> WatchConfig:
    """[watch] by its declaration: a schedule whose segments end later and later, thresholds that make sense."""
    return _section(spec, WatchSection, where).config()


def load_escalation(spec: object, where: str) -> tuple[EscalationStep, ...]:
    """[[escalation]] by its declaration, its steps in rising after_minutes (each later than the one before)."""
    steps = _entries(spec, EscalationStep, where, "escalation")
    for number, (before, step) in enumerate(zip(steps, steps[1:], strict=False), 2):
        if step.after_minutes <= before.after_minutes:
            raise ConfigError(f"{where} item {number}: after_minutes must be later than the step before it "
                              f"({before.after_minutes:g})")
    return steps


def _need(data: dict, key: str, kind: type, where: str):
    if key not in data:
        raise ConfigError(f"{where}: '{key}' is missing")
    value = data[key]
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: '{key}' must be {_KIND_NAMES.get(kind, 'a ' + kind.__name__)}")
    return value


_KIND_NAMES = {int: "an integer", float: "a float", str: "a string", dict: "a table", list: "a list",
               bool: "true or false"}


def _minutes(value: object, where: str) -> float:
    """A budget in minutes: a number above zero (the forecast and the timeline compare against it)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        shown = "missing" if value is None else f"{value!r}"[:40]
        raise ConfigError(f"{where} must be a number of minutes above zero (found {shown})")
    return float(value)


def _foreign_keys(data: object, where: str) -> tuple[ForeignKey, ...]:
    """[new_foreign_keys] / [legacy_foreign_keys]: <table> = [{ column, references, on_delete }, ...], each entry
    by its declaration."""
    if not isinstance(data, dict) or not all(isinstance(items, list) for items in data.values()):
        raise ConfigError(f"{where}: each table's foreign keys must be a list of {{ column, references, on_delete }}")
    return tuple(_section(item, ForeignKeyEntry, f"{where}.{table}[{i}]").key(table)
                 for table, items in data.items() for i, item in enumerate(items))


def _declared_objects(data: dict, section: str, where: str) -> dict[str, str] | None:
    """[<side>_catalog]: "<kind> <identity>" = "<spec>" (scripts/describe-schema writes it); None when absent."""
    if section not in data:
        return None
    spec = data[section]
    if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
        raise ConfigError(f"{where} [{section}]: each entry must be \"<kind> <identity>\" = \"<properties>\" "
                          "(a string, \"\" for none)")
    return dict(spec)


def _api(spec: object, tenancy: Tenancy | None, schema: str, where: str) -> ApiRules:
    """[api] by its declaration. Each route and each visibility rule is checked on its own first, so a problem
    names it ("routes[1]", "visibility.patients"); users and audit take the [migration] schema unless they name
    one; a count_table needs its visibility rule, an organization rule needs [tenancy]."""
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a table")
    routes = spec.get("routes", [])
    if isinstance(routes, list):
        for i, item in enumerate(routes):
            _section({"path": item} if isinstance(item, str) else item, ApiRoute, f"{where} routes[{i}]")
    visibility: dict[str, dict[str, Visibility]] = {}
    for name, sides in (spec.get("visibility") or {}).items():
        rule = _section(sides, VisibilitySides, f"{where} visibility.{name}")
        visibility[name] = {side: getattr(rule, side) for side in ("new", "legacy") if getattr(rule, side)}
        if any(v.organization for v in visibility[name].values()) and tenancy is None:
            raise ConfigError(f"{where} visibility.{name}: an organization rule needs [tenancy] (its memberships)")
    api = _section(spec, ApiSection, where)
    for endpoint in api.endpoints:
        if endpoint.count_table and endpoint.count_table not in visibility:
            raise ConfigError(f"{where}: count_table {endpoint.count_table} of {endpoint.path} has no "
                              f"[api.visibility.{endpoint.count_table}] rule")
    users, audit = (dataclasses.replace(table, schema=schema) if table and "schema" not in spec[key] else table
                    for key, table in (("users", api.users), ("audit", api.audit)))
    return ApiRules(
        endpoints=api.endpoints, audited=dict(api.audited), users=users, audit=audit, visibility=visibility,
        rights=api.membership_rights, memberships=tenancy, schema=schema, probe=api.probe,
        debug_routes=tuple(dict.fromkeys(api.debug_routes)), user_routes=tuple(dict.fromkeys(api.user_routes)),
        routes=tuple(ApiRoute(r) if isinstance(r, str) else r for r in api.routes))


# What a description may hold: a misspelt section or key is refused, never silently ignored.
SECTIONS = ("migration", "hooks", "budgets", "sandbox", "api", "app_role", "tables", "new_tables", "dropped_tables",
            "tenancy", "search_hashes", "preconditions", "new_foreign_keys", "legacy_foreign_keys", "legacy_schema",
            "legacy_objects", "new_schema", "new_objects", "legacy_catalog", "new_catalog", "backup", "logs",
            "precheck", "performance", "people",
            "notify", "watch", "lint", "rehearsal", "answers", "waivers",
            "not_applicable", "deploy", "security", "escalation")


# The fixed sections still checked by hand (the declared ones refuse unknown keys themselves, _section).
KEYS = {"budgets": ("downtime_minutes", "api_p95_ms", "api_latency_samples", "deploy_wait_seconds", "phase_minutes")}


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
        if name not in HOOK_SETTINGS and not isinstance(value, str):
            raise ConfigError(f"{where} [hooks]: {name} must be a shell command (a string)")


# The [hooks] keys that are settings, not commands.
HOOK_SETTINGS = ("timeout_seconds", "pass_env", "rehearsal_max_age_hours")


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


def _hook_rehearsal_age(data: dict, where: str) -> float:
    value = data.get("hooks", {}).get("rehearsal_max_age_hours", 72)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where} [hooks]: rehearsal_max_age_hours must be a positive number of hours")
    return float(value)


def _hook_timeout(data: dict, where: str) -> float:
    value = data.get("hooks", {}).get("timeout_seconds", 600)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where} [hooks]: timeout_seconds must be a positive number of seconds")
    return float(value)


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
    if "migration" not in data:
        raise ConfigError(f"{where}: [migration] is missing")
    mig = _section(data["migration"], MigrationSection, f"{where} [migration]")
    # GATE_MIGRATION_FILE: rehearse another migration file with the same description (scripts/rehearse --migration)
    override = variable("GATE_MIGRATION_FILE")
    if not (override or mig.file):
        raise ConfigError(f"{where} [migration]: needs file (the migration's SQL file)")
    migration_file = Path(override or base / mig.file).resolve()
    if not migration_file.is_file():
        raise ConfigError(f"{where} [migration]: migration file {migration_file} not found")
    rollback_file = (base / mig.rollback_file).resolve() if mig.rollback_file else None
    if rollback_file and not rollback_file.is_file():
        raise ConfigError(f"{where} [migration]: rollback file {rollback_file} not found")
    budgets = _need(data, "budgets", dict, where)
    sandbox = _section(data.get("sandbox"), SandboxSection, f"{where} [sandbox]")
    api = data.get("api", {})
    tables = [_section(spec, TableSection, f"{where} [tables.{name}]").mapping(name)
              for name, spec in _need(data, "tables", dict, where).items()]
    pre = _section(data.get("preconditions"), PreconditionsSection, f"{where} [preconditions]")
    tenancy = _section(data["tenancy"], TenancySection, f"{where} [tenancy]").tenancy() if "tenancy" in data else None
    config = GateConfig(
        path=path, migration_file=migration_file, rollback_file=rollback_file,
        lock_timeout=mig.lock_timeout, statement_timeout=mig.statement_timeout,
        downtime_minutes=_need(budgets, "downtime_minutes", float, f"{where} [budgets]"),
        phase_minutes={str(k): _minutes(v, f"{where} [budgets.phase_minutes] {k}")
                       for k, v in _need_dict(budgets, "phase_minutes", f"{where} [budgets]").items()},
        api_p95_ms=_need(budgets, "api_p95_ms", float, f"{where} [budgets]"),
        api_latency_samples=_need({"api_latency_samples": 20} | budgets, "api_latency_samples", int,
                                  f"{where} [budgets]"),
        deploy_wait_seconds=_need({"deploy_wait_seconds": 300.0} | budgets, "deploy_wait_seconds", float,
                                  f"{where} [budgets]"),
        sandbox_provider=variable("GATE_SANDBOX_PROVIDER") or sandbox.provider,
        sandbox_patients=sandbox.patients, sandbox_seed=sandbox.seed, sandbox_username=sandbox.username,
        sandbox_password=sandbox.password,
        api=_api(api, tenancy, mig.schema, f"{where} [api]"),
        tables=tuple(tables),
        search_hashes=_entries(data.get("search_hashes"), SearchHash, f"{where} [[search_hashes]]", "search_hashes"),
        unique_keys=pre.unique, money=pre.money,
        new_schema={t: dict(c) for t, c in _need(data, "new_schema", dict, where).items()},
        legacy_schema={t: dict(c) for t, c in _need(data, "legacy_schema", dict, where).items()},
        new_foreign_keys=_foreign_keys(data.get("new_foreign_keys", {}), f"{where} [new_foreign_keys]"),
        legacy_foreign_keys=_foreign_keys(data.get("legacy_foreign_keys", {}), f"{where} [legacy_foreign_keys]"),
        rollback_method=mig.rollback_method,
        hooks={k: str(v) for k, v in data.get("hooks", {}).items() if k not in HOOK_SETTINGS},
        hook_timeout_seconds=_hook_timeout(data, where),
        hook_rehearsal_max_age_hours=_hook_rehearsal_age(data, where),
        hook_pass_env=_hook_pass_env(data, where),
        schema=mig.schema,
        new_objects={t: _section(o, TableObjects, f"{where} [new_objects.{t}]")
                     for t, o in data.get("new_objects", {}).items()},
        legacy_objects={t: _section(o, TableObjects, f"{where} [legacy_objects.{t}]")
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
        deploy=_section(data.get("deploy"), DeployConfig, f"{where} [deploy]"),
        insecure_transport=load_security(data.get("security"), f"{where} [security]"),
        escalation=load_escalation(data.get("escalation"), f"{where} [[escalation]]"),
    )
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
