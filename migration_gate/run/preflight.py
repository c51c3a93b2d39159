"""Every input a cut-over will need, checked before the window opens: a missing one refuses before maintenance
is switched on, with the list of what is missing, instead of ending in rolling back a good migration.

Each input is one line in the plan (`cutover --dry-run` prints them all); each problem is one line naming the
input and what to do. Nothing here changes the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from migration_gate.app import logsource
from migration_gate.app.client import http_client
from migration_gate.app.hooks import CutoverTarget, ShellHooks, command_problems, hook_problems
from migration_gate.backup.inputs import backup_inputs
from migration_gate.checks import api as app
from migration_gate.checks import encryption, environment
from migration_gate.config import GateConfig
from migration_gate.core.phi import PhiCodec
from migration_gate.core.redact import describe_target, redact_text
from migration_gate.core.result import CheckFailed, Result, error_text
from migration_gate.db import connection as db
from migration_gate.db.binaries import BinariesNotFound, find_binaries
from migration_gate.db.catalog import quote, user_schemas
from migration_gate.run import attest, hookrehearsal, notify
from migration_gate.run.runstate import schema_state

KEY_SAMPLE = 20  # rows per table the key must decrypt: enough to catch a wrong key, cheap on a large table
PEOPLE = "people"  # the checklist's human items: an input --force may override
HOOKS_REHEARSAL = "hooks rehearsal"  # the last `cutover --rehearse-hooks`: the other one (recorded in the run)
FORCEABLE = (PEOPLE, HOOKS_REHEARSAL)


@dataclass
class Input:
    """One input of the cut-over: what was found, and what is missing (empty when it is ready)."""

    name: str
    found: str = ""
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing


def _from_result(name: str, result: Result) -> Input:
    return Input(name, "; ".join(result.notes) or f"{result.checked} checked", list(result.problems))


def _database(conn: psycopg.Connection, gate: GateConfig) -> list[Input]:
    found = [_from_result("database", environment.server_reachable(conn))]
    where = schema_state(conn, gate)
    found.append(Input("schema", f"the database is on the {where} schema",
                       [] if where == "legacy" else [f"schema: the database is {where}, not legacy: nothing to "
                                                     "migrate (resume or roll back the run that migrated it)"]))
    role, createdb = conn.execute("SELECT current_user, rolcreatedb OR rolsuper FROM pg_roles "
                                  "WHERE rolname = current_user").fetchone()
    privileges = Input("role privileges", f"role {quote(role)}")
    if not createdb:
        privileges.missing.append(f"role {quote(role)} lacks CREATEDB: the pre-checks' scratch copy and the integrity "
                                  "baseline are databases it creates")
    schemas = list(user_schemas(conn))
    foreign = conn.execute(
        "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm') AND n.nspname = ANY(%s)"
        " AND NOT pg_has_role(current_user, c.relowner, 'USAGE') AND NOT EXISTS (SELECT 1 FROM pg_depend d"
        " WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')"  # an extension's own
        " ORDER BY 1, 2", (schemas,)).fetchall()
    foreign += conn.execute(
        "SELECT nspname, NULL, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = ANY(%s)"
        " AND nspname <> 'public' AND NOT pg_has_role(current_user, nspowner, 'USAGE')", (schemas,)).fetchall()
    if foreign:
        first = ", ".join(f"{quote(s, t) if t else quote(s)} (owner {quote(o)})" for s, t, o in foreign[:3])
        privileges.missing.append(f"role {quote(role)} does not own {len(foreign)} objects a restore recreates "
                                  f"(first: {first}): a rollback by restore would fail")
    found.append(privileges)
    return found


def _key(conn: psycopg.Connection, gate: GateConfig, key: str) -> Input:
    try:
        codec = PhiCodec(key)
    except ValueError as exc:
        return Input("key", missing=[f"key: {exc}"])
    columns = gate.legacy_phi_columns()
    if not columns:
        return Input("key", "no legacy PHI column is described")
    result = encryption.decrypts(conn, codec, columns, sample=KEY_SAMPLE, schema=gate.schema,
                                 check="the key decrypts the data")
    item = _from_result("key", result)
    item.missing = [f"key: {p}" for p in item.missing]
    item.found = f"decrypts {result.checked} sampled values of {len(columns)} PHI columns"
    return item


def _api(target: CutoverTarget) -> list[Input]:
    health = Input("API", target.api_base_url)
    login = Input("login", "the fixture user")
    try:
        with http_client(target.api_base_url, timeout=15, headers=target.api_headers) as client:
            result = app.health(client, expect_hipaa=False)
            health.missing = [f"API: {p}" for p in result.problems]
            try:
                app.login(client, target.api_username, target.api_password)
            except CheckFailed as exc:
                login.missing.append(f"login: {exc}")
    except httpx.HTTPError as exc:  # an unusable base URL, say
        health.missing.append(f"API: {target.api_base_url} cannot be asked ({exc.__class__.__name__})")
    return [health, login]


def _log_source(gate: GateConfig, target: CutoverTarget) -> Input:
    """The source POST-11 reads ([logs]: a file or a [hooks] command) answers now: else the post-checks would go
    red after the deploy and roll back a good migration."""
    source = logsource.configured(gate.logs, gate.hooks, target.app_log_file, gate.hook_pass_env)
    try:
        return Input("log source", logsource.probe(source))
    except logsource.LogsUnseen as exc:
        return Input("log source", missing=[f"log source: {exc}: the post-migration log check (POST-11) would go "
                                            "red after the deploy"])


def _tools_and_folders(conn: psycopg.Connection, reports: Path) -> list[Input]:
    try:
        binaries = find_binaries()
    except BinariesNotFound as exc:
        return [Input("pg_dump", missing=[f"pg_dump: {exc}"]),
                _from_result("reports folder", environment.backup_folder_ready(reports, conn))]
    return [_from_result("pg_dump", environment.pg_dump_compatible(conn, binaries)),
            _from_result("reports folder", environment.backup_folder_ready(reports, conn))]


def _people(gate: GateConfig, target: CutoverTarget, reports: Path, run_dir: Path | None) -> Input:
    """The [[people]] items required before the cut-over, attested in the run or pending for it."""
    entries = attest.collected(run_dir, reports, describe_target(target.dsn))
    required = [i for i in gate.people if i.required_before_cutover]
    return Input(PEOPLE, f"{len(required) - len(attest.missing_required(gate, entries))} of {len(required)} "
                         "required items attested (scripts/attest --list)", attest.missing_lines(gate, entries))


LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")


def on_this_host(host: str | None) -> bool:
    """A loopback address, localhost or a unix socket (a path, libpq's default when no host is given)."""
    hosts = [h.strip() for h in (host or "").split(",")]  # libpq takes a list of hosts
    return all(not h or h.startswith(("/", "@")) or h.lower() in LOCAL_HOSTS for h in hosts)


def _transport(gate: GateConfig, target: CutoverTarget, conn: psycopg.Connection | None) -> Input:
    """Off this host, the database only with sslmode=verify-full (what the session actually used: DSN, PGSSLMODE,
    service file) and the API only over https; or [security] allow_insecure_transport says why not."""
    found = Input("transport")
    if conn is not None:
        used = {o.keyword.decode(): (o.val or b"").decode() for o in conn.pgconn.info}
        host = used.get("host") or used.get("hostaddr") or ""
        if not on_this_host(host) and used.get("sslmode") != "verify-full":
            found.missing.append(f"transport: the database on {host} is reached with sslmode="
                                 f"{used.get('sslmode') or 'prefer'}, not verify-full: set sslmode=verify-full (and "
                                 "sslrootcert) in DATABASE_URL or PGSSLMODE, or say why not in [security] "
                                 "allow_insecure_transport")
    api = httpx.URL(target.api_base_url) if target.api_base_url else None
    if api is not None and api.scheme != "https" and not on_this_host(api.host):
        found.missing.append(f"transport: API_BASE_URL {api.scheme}://{api.host} is not https: the app's API off "
                             "this host only over https, or say why not in [security] allow_insecure_transport")
    if gate.insecure_transport:
        found.found = f"TLS not required ([security] allow_insecure_transport: {gate.insecure_transport})"
        found.missing = []
    else:
        found.found = "verified TLS off this host (sslmode=verify-full, https)"
    return found


def _notify(target: CutoverTarget) -> Input:
    """Status updates are optional: said when absent, never refused."""
    if notify.configured(target.hooks):
        return Input("notify", "status updates through the notify hook")
    return Input("notify", "not configured ([hooks] notify): no status updates will be sent (optional)")


def _hooks_rehearsal(gate: GateConfig, target: CutoverTarget, reports: Path) -> Input:
    """The hooks were rehearsed on staging (scripts/cutover --rehearse-hooks), green, with these commands and
    recently enough ([hooks] rehearsal_max_age_hours): else the window would be their first real call. Hooks that
    are code (a sandbox's) are not the team's commands: nothing to rehearse."""
    if not isinstance(target.hooks, ShellHooks):
        return Input(HOOKS_REHEARSAL, "the hooks are code, not [hooks] commands: not rehearsed")
    found, problems = hookrehearsal.problems(gate, reports)
    return Input(HOOKS_REHEARSAL, found, problems)


def _alert(gate: GateConfig, target: CutoverTarget) -> Input:
    """A red watch round must reach a person: [hooks] alert configured (code hooks: an alert of their own), or
    [watch] no_alert_because says why not; refused otherwise, never silently absent. The [[escalation]] steps are
    said (optional)."""
    if isinstance(target.hooks, ShellHooks):
        problems = command_problems(target.hooks.commands, ("alert",), "your pager's or chat's")
    else:
        problems = [] if callable(getattr(target.hooks, "alert", None)) else ["hook alert: the hooks have no alert"]
    chain = (f"; then [[escalation]]: {', '.join(f'{s.name} after {s.after_minutes:g} min' for s in gate.escalation)}"
             if gate.escalation else "; no [[escalation]]: nobody is told next when a red round is not acknowledged")
    if not problems:
        return Input("alert", "a red watch round calls the alert hook" + chain)
    if gate.watch.no_alert_because:
        return Input("alert", f"no alert hook ([watch] no_alert_because: {gate.watch.no_alert_because})" + chain)
    return Input("alert", missing=[f"alert: {problems[0].removeprefix('hook alert: ')}: a red watch round would tell "
                                   "nobody; configure [hooks] alert, or say why not in [watch] no_alert_because"])


def check_inputs(gate: GateConfig, target: CutoverTarget, reports: Path, run_dir: Path | None = None) -> list[Input]:
    """Every input, in the order the phases need them. Never raises for a missing input: it is listed. `run_dir`:
    the run the cut-over would continue, whose attestations count with the pending ones."""
    inputs: list[Input] = []
    transport = None
    try:
        with db.connect(target.dsn, connect_timeout=10, autocommit=True) as conn:
            inputs += _database(conn, gate)
            inputs.append(_key(conn, gate, target.key))
            inputs += _tools_and_folders(conn, reports)
            transport = _transport(gate, target, conn)
    except psycopg.Error as exc:
        inputs.append(Input("database", missing=[redact_text(f"database: unreachable ({error_text(exc)})")]))
    inputs.append(transport or _transport(gate, target, None))
    inputs += _api(target)
    inputs.append(Input("hooks", "maintenance on/off, deploy new/legacy schema", hook_problems(target.hooks)))
    inputs.append(_hooks_rehearsal(gate, target, reports))
    inputs.append(Input("backup", f"encrypt {gate.backup.encrypt}; store_backup and fetch_backup hooks",
                        backup_inputs(gate, hooks=target.hooks)))
    inputs.append(_log_source(gate, target))
    inputs += [_people(gate, target, reports, run_dir), _notify(target), _alert(gate, target)]
    return inputs


def missing(inputs: list[Input]) -> list[str]:
    return [line for item in inputs for line in item.missing]
