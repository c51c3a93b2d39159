"""Every connection the gate opens, one way: its own sessions (connect) and its client tools' (client_env).

Both see the same connection settings: the DSN, and libpq's environment (service file, passfile, sslmode,
sslrootcert...), so pg_dump, pg_restore and psql verify the server exactly as the gate's own sessions do. Both
pin search_path to pg_catalog, pg_temp: a function or table in a schema the target's search_path names (public)
can never stand in for a built-in the gate calls or a catalog it reads; the gate names its own tables with their
schema. Sessions that run the user's SQL (migration.run_file, the app role's) keep the target's search_path.
"""

from __future__ import annotations

from typing import Any

import psycopg

from migration_gate.config.environment import variable, variables

SEARCH_PATH = "pg_catalog, pg_temp"
PIN = r"-c search_path=pg_catalog,\ pg_temp"  # libpq options: a space inside a value is backslash-escaped

# libpq's environment variables (PostgreSQL's "Environment Variables" of libpq): what the gate's own sessions
# read, so what its client tools get too. Other PG* (PGDATA, PGLOCALEDIR...) are not the connection's.
LIBPQ_VARIABLES = frozenset({
    "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGREQUIREAUTH",
    "PGCHANNELBINDING", "PGSERVICE", "PGSERVICEFILE", "PGSYSCONFDIR", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE",
    "PGREQUIRESSL", "PGSSLCOMPRESSION", "PGSSLCERT", "PGSSLKEY", "PGSSLCERTMODE", "PGSSLROOTCERT", "PGSSLCRL",
    "PGSSLCRLDIR", "PGSSLSNI", "PGSSLNEGOTIATION", "PGREQUIREPEER", "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION", "PGGSSENCMODE", "PGKRBSRVNAME", "PGGSSLIB", "PGGSSDELEGATION", "PGCONNECT_TIMEOUT",
    "PGCLIENTENCODING", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS", "PGDATESTYLE", "PGTZ", "PGGEQO",
})


def pinned_options(options: str | None) -> str:
    """libpq `options` with search_path pinned last (it wins over a search_path the options set before)."""
    options = (options or "").strip()
    if options.endswith(PIN):
        return options
    return f"{options} {PIN}".strip()


def _options_of(info: dict[str, Any], given: str | None = None) -> str | None:
    """The options a session would start with: given, else the DSN's, else PGOPTIONS (libpq's own order)."""
    if given is not None:
        return given
    if info.get("options"):
        return str(info["options"])
    return variable("PGOPTIONS")


def connect(dsn: str, *, pin: bool = True, **kwargs: Any) -> psycopg.Connection:
    """psycopg.connect with search_path pinned to pg_catalog, pg_temp (merged with the DSN's own options).
    pin=False only for sessions that run the user's SQL, which may rely on the target's search_path."""
    if pin:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        kwargs["options"] = pinned_options(_options_of(info, kwargs.get("options")))
    return psycopg.connect(dsn, **kwargs)


def client_env(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN for a client tool's command line (no password) and its environment: this process's, with libpq's
    connection variables kept (sslmode, sslrootcert, service file, passfile... as the gate's sessions see them),
    other PG* dropped, the DSN's password in PGPASSWORD, and search_path pinned as in connect()."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    env = {k: v for k, v in variables().items() if not k.startswith("PG") or k in LIBPQ_VARIABLES}
    password = info.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    if info.get("options"):  # the DSN's options stay in the DSN (they override PGOPTIONS there)
        info["options"] = pinned_options(str(info["options"]))
    else:
        env["PGOPTIONS"] = pinned_options(variable("PGOPTIONS"))
    return psycopg.conninfo.make_conninfo(**info), env


APPLICATION_PREFIX = "migration-gate"  # every gate session named for its phase starts with this


def application_name(phase: str) -> str:
    """What the gate's sessions of a phase are called in pg_stat_activity (a DBA, or a lock watch, sees them)."""
    return f"{APPLICATION_PREFIX} {phase}"


def _option_value(value: str) -> str:
    """A value inside libpq's options string: backslash and space escaped."""
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def session_dsn(dsn: str, settings: dict[str, str], name: str) -> str:
    """dsn whose every session starts with these settings (libpq's options: psycopg, pg_dump, pg_restore alike)
    and this application_name; options the dsn already had are kept."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    options = [str(info.get("options") or "").strip()]
    options += [f"-c {key}={_option_value(value)}" for key, value in settings.items()]
    return psycopg.conninfo.make_conninfo(**{**info, "options": " ".join(o for o in options if o),
                                             "application_name": name})
