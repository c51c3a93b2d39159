"""The sandbox's roles, as on a hosted database: the gate and the migration run as the owner role (the cluster's
``OWNER_ROLE``), the reference API as the app's own role with only the privileges ``[app_role]`` gives it.

Before cut-over the legacy tables carry those grants (whoever set the app up gave them; here the sandbox does,
from the configuration). The migration grants them on the tables it creates, as a real deploy must; renamed
tables keep theirs. The post-check POST-18 holds the new tables to the configuration.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from migration_gate.config import AppRole
from migration_gate.db import catalog
from migration_gate.db.embedded import EmbeddedPostgres, password_for


def create_app_role(cluster: EmbeddedPostgres, app_role: AppRole) -> str:
    """The app's LOGIN NOSUPERUSER role (needs the cluster's superuser, as creating a role on a host does).

    The owner role is made a member of it: an owner that administers the app's role sees its sessions in
    pg_stat_activity, which PRE-10 needs (without that, or pg_read_all_stats, PRE-10 is red, not blind)."""
    cluster.create_role(app_role.name)
    cluster.create_role(cluster.owner, createdb=True, member_of=(app_role.name,))
    return app_role.name


def as_role(dsn: str, role: str) -> str:
    """The same connection string for another role, with that role's password when the DSN is one of our
    embedded clusters (each role has its own), else without one."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["user"] = role
    info.pop("password", None)
    password = password_for(int(info["port"]), role) if str(info.get("port", "")).isdigit() else None
    if password:
        info["password"] = password
    return psycopg.conninfo.make_conninfo(**info)


def grant_app_role(dsn: str, app_role: AppRole, tables: list[str], schema: str = "public") -> None:
    """Give the app's role the configured privileges on these tables (those that exist) and their sequences,
    as the owner; what it had on them before is revoked first, so it ends with exactly the configuration."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        found = catalog.inspect(conn, [schema])
        role = sql.Identifier(app_role.name)
        for name in tables:
            table = found.table(name, schema)
            if table is None:
                continue
            target = sql.Identifier(schema, name)
            conn.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(target, role))
            privileges = sorted(app_role.table_privileges(name))
            if privileges:
                conn.execute(sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    sql.SQL(", ").join(map(sql.SQL, privileges)), target, role))
            for column in table.columns.values():
                sequence = found.owned_sequence(schema, name, column.name)
                if sequence is None or not (column.default or "").startswith("nextval("):
                    continue
                seq = sql.Identifier(sequence.schema, sequence.name)
                conn.execute(sql.SQL("REVOKE ALL ON SEQUENCE {} FROM {}").format(seq, role))
                if app_role.sequences:
                    conn.execute(sql.SQL("GRANT {} ON SEQUENCE {} TO {}").format(
                        sql.SQL(", ").join(map(sql.SQL, sorted(app_role.sequences))), seq, role))
