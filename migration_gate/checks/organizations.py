"""Tenancy, as the description's [tenancy] states it: one active primary owner per organization, no duplicate
memberships, owners with every right, the organizations derived per user, and every row in its owner's (or its
parent row's) organization. Every table and column name comes from the description."""

from __future__ import annotations

import psycopg
from psycopg import sql

from migration_gate.checks import catalog_of, key_of, missing
from migration_gate.config import Tenancy
from migration_gate.core.result import Result, first_ids


def _ids(conn: psycopg.Connection, query: sql.Composable) -> list:
    return [r[0] for r in conn.execute(query)]


def _names(t: Tenancy, schema: str) -> dict[str, sql.Composable]:
    i = sql.Identifier
    return {"orgs": i(schema, t.organizations), "members": i(schema, t.memberships), "users": i(schema, t.users),
            "m_org": i(t.membership_organization), "m_user": i(t.membership_user), "primary": i(t.primary_owner),
            "active": i(t.active), "role": i(t.role_column), "owner_role": sql.Literal(t.owner_role)}


def _present(result: Result, conn: psycopg.Connection, t: Tenancy, schema: str) -> bool:
    catalog = catalog_of(conn, schema)
    gone = missing(result, catalog, schema, t.organizations)
    gone |= missing(result, catalog, schema, t.users)
    gone |= missing(result, catalog, schema, t.memberships, [t.membership_organization, t.membership_user,
                                                             t.primary_owner, t.active, t.role_column, *t.owner_flags])
    return not gone


def one_primary_owner(conn: psycopg.Connection, t: Tenancy, schema: str = "public") -> Result:
    result = Result("one active primary owner per organization")
    if not _present(result, conn, t, schema):
        return result
    with result.guard(t.organizations):
        n = _names(t, schema)
        key = sql.Identifier(key_of(catalog_of(conn, schema), schema, t.organizations))
        counts = conn.execute(sql.SQL(
            "SELECT o.{key}, count(*) FILTER (WHERE m.{primary} AND m.{active} AND m.{role} = {owner_role}) "
            "FROM {orgs} o LEFT JOIN {members} m ON m.{m_org} = o.{key} GROUP BY o.{key} ORDER BY 1").format(
            key=key, **n)).fetchall()
        result.checked = len(counts)
        none = [i for i, c in counts if c == 0]
        many = [i for i, c in counts if c > 1]
        if none:
            result.add(f"{t.organizations}: {len(none)} without an active primary {t.owner_role} ({first_ids(none)})")
        if many:
            result.add(f"{t.organizations}: {len(many)} with more than one primary owner ({first_ids(many)})")
    return result


def no_duplicate_memberships(conn: psycopg.Connection, t: Tenancy, schema: str = "public") -> Result:
    result = Result("no duplicate memberships")
    if not _present(result, conn, t, schema):
        return result
    with result.guard(t.memberships):
        n = _names(t, schema)
        key = sql.Identifier(key_of(catalog_of(conn, schema), schema, t.memberships))
        ids = _ids(conn, sql.SQL("SELECT unnest(array_agg({key} ORDER BY {key})) FROM {members} "
                                 "GROUP BY {m_org}, {m_user} HAVING count(*) > 1").format(key=key, **n))
        if ids:
            result.add(f"{t.memberships}: {len(ids)} rows repeat an (organization, user) pair ({first_ids(ids)})")
    return result


def owners_have_full_rights(conn: psycopg.Connection, t: Tenancy, schema: str = "public") -> Result:
    """Every user who owns rows has exactly one active primary owner membership with every owner flag."""
    result = Result("owners own their organization with full rights")
    if not _present(result, conn, t, schema):
        return result
    n = _names(t, schema)
    catalog = catalog_of(conn, schema)
    user_key = sql.Identifier(key_of(catalog, schema, t.users))
    flags = sql.SQL(" AND ").join(sql.SQL("coalesce(m.{}, false)").format(sql.Identifier(f)) for f in t.owner_flags)
    for row in (r for r in t.rows if r.owner):
        if missing(result, catalog, schema, row.table, [row.owner]):
            continue
        with result.guard(row.table, row.owner):
            rows = conn.execute(sql.SQL(
                "SELECT u.{uk}, count(m.*) FILTER (WHERE m.{active} AND m.{role} = {owner_role} AND m.{primary} "
                "AND {flags}) FROM {users} u LEFT JOIN {members} m ON m.{m_user} = u.{uk} "
                "WHERE EXISTS (SELECT 1 FROM {tbl} r WHERE r.{owner} = u.{uk}) GROUP BY u.{uk} ORDER BY 1").format(
                uk=user_key, flags=flags or sql.SQL("true"), tbl=sql.Identifier(schema, row.table),
                owner=sql.Identifier(row.owner), **n)).fetchall()
            result.checked += len(rows)
            bad = [i for i, c in rows if c != 1]
            if bad:
                result.add(f"{t.users}: {len(bad)} owners of {row.table} rows lack exactly one active, primary "
                           f"{t.owner_role} membership with every permission ({first_ids(bad)})")
    return result


def derived_per_user(conn: psycopg.Connection, t: Tenancy, schema: str = "public") -> Result:
    """One organization per user, of the described type, named after the owner's first profile (else the user
    name) with the described suffix."""
    result = Result("one organization per user, named after its owner")
    if not t.one_per_user or not _present(result, conn, t, schema):
        return result
    n = _names(t, schema)
    catalog = catalog_of(conn, schema)
    with result.guard(t.organizations):
        org_key = sql.Identifier(key_of(catalog, schema, t.organizations))
        user_key = sql.Identifier(key_of(catalog, schema, t.users))
        users, orgs = conn.execute(sql.SQL("SELECT (SELECT count(*) FROM {users}), (SELECT count(*) FROM {orgs})")
                                   .format(**n)).fetchone()
        result.checked = orgs
        if users != orgs:
            result.add(f"{t.organizations}: {orgs} rows for {users} users")
        if t.organization_type:
            column, value = t.organization_type
            if not missing(result, catalog, schema, t.organizations, [column]):
                wrong = _ids(conn, sql.SQL("SELECT {k} FROM {orgs} WHERE {c} IS DISTINCT FROM {v} ORDER BY 1").format(
                    k=org_key, c=sql.Identifier(column), v=sql.Literal(value), **n))
                if wrong:
                    result.add(f"{t.organizations}: {len(wrong)} not of type {value} ({first_ids(wrong)})")
    named = t.organization_name
    if not named:
        return result
    with result.guard(t.organizations, "name"):
        profiles = named["profiles"]
        if missing(result, catalog, schema, profiles, [named["profile_user"], named["profile_name"]]):
            return result
        profile_key = sql.Identifier(key_of(catalog, schema, profiles))
        misnamed = _ids(conn, sql.SQL(
            "SELECT o.{ok} FROM {orgs} o JOIN {members} m ON m.{m_org} = o.{ok} AND m.{primary} "
            "JOIN {users} u ON u.{uk} = m.{m_user} "
            "LEFT JOIN LATERAL (SELECT p.{pname} AS name FROM {profiles} p WHERE p.{puser} = u.{uk} "
            "ORDER BY p.{pk} LIMIT 1) p ON true "
            "WHERE o.{oname} IS DISTINCT FROM coalesce(nullif(btrim(p.name), ''), u.{uname}) || {suffix} ORDER BY 1"
        ).format(ok=org_key, oname=sql.Identifier(named.get("column", "name")), uk=user_key, pk=profile_key,
                 profiles=sql.Identifier(schema, profiles),
                 pname=sql.Identifier(named["profile_name"]), puser=sql.Identifier(named["profile_user"]),
                 uname=sql.Identifier(named["user_name"]), suffix=sql.Literal(named.get("suffix", "")), **n))
        if misnamed:
            result.add(f"{t.organizations}: {len(misnamed)} not named after their owner ({first_ids(misnamed)})")
    return result


def rows_in_their_organization(conn: psycopg.Connection, t: Tenancy, schema: str = "public") -> Result:
    """A row with an owner is in its owner's organization; a row with a parent is in its parent's."""
    result = Result("every row belongs to its owner's organization")
    if not _present(result, conn, t, schema):
        return result
    n = _names(t, schema)
    catalog = catalog_of(conn, schema)
    for row in t.rows:
        result.checked += 1
        if missing(result, catalog, schema, row.table, [row.column, row.owner or row.through]):
            continue
        with result.guard(row.table, row.column):
            key = sql.Identifier(key_of(catalog, schema, row.table))
            if row.owner:
                query = sql.SQL(
                    "SELECT r.{k} FROM {tbl} r LEFT JOIN {members} m ON m.{m_user} = r.{owner} AND m.{primary} "
                    "WHERE m.{m_org} IS DISTINCT FROM r.{col} ORDER BY 1").format(
                    k=key, tbl=sql.Identifier(schema, row.table), owner=sql.Identifier(row.owner),
                    col=sql.Identifier(row.column), **n)
            else:
                parent_key = sql.Identifier(key_of(catalog, schema, row.parent))
                query = sql.SQL(
                    "SELECT r.{k} FROM {tbl} r LEFT JOIN {parent} p ON p.{pk} = r.{through} "
                    "WHERE p.{col} IS DISTINCT FROM r.{col} ORDER BY 1").format(
                    k=key, tbl=sql.Identifier(schema, row.table), parent=sql.Identifier(schema, row.parent),
                    pk=parent_key, through=sql.Identifier(row.through), col=sql.Identifier(row.column))
            ids = _ids(conn, query)
            if ids:
                result.add(f"{row.table}: {len(ids)} rows whose {row.column} is not their owner's organization "
                           f"({first_ids(ids)})")
    return result
