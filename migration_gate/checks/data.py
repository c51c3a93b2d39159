"""Preconditions on the legacy data: what the migration needs to be true before it runs."""

from __future__ import annotations

import psycopg
from psycopg import sql

from migration_gate.checks import catalog_of, key_of, missing
from migration_gate.config import MoneyColumns, UniqueKey
from migration_gate.core.result import Result, first_ids

# What numeric(10,2) accepts without rounding or overflow, read from the value's text form.
MONEY_PATTERN = r"^-?[0-9]{1,8}(\.[0-9]{1,2})?$"


def duplicates(conn: psycopg.Connection, keys: tuple[UniqueKey, ...], schema: str = "public") -> Result:
    """No two rows share a natural key (GROUP BY ... HAVING count(*) > 1)."""
    result = Result("no duplicates on natural keys")
    catalog = catalog_of(conn, schema)
    for key in keys:
        result.checked += 1
        if missing(result, catalog, schema, key.table, key.columns):
            continue
        groups: list = []
        with result.guard(key.table, *key.columns):
            cols = sql.SQL(", ").join(map(sql.Identifier, key.columns))
            query = sql.SQL("SELECT array_agg({i} ORDER BY {i}) FROM {t} GROUP BY {cols} HAVING count(*) > 1").format(
                i=sql.Identifier(key_of(catalog, schema, key.table)), t=sql.Identifier(schema, key.table), cols=cols)
            groups = [r[0] for r in conn.execute(query)]
        if groups:
            ids = [i for g in groups for i in g]
            result.add(f"{key.table}({', '.join(key.columns)}): {len(groups)} duplicated keys over {len(ids)} rows "
                       f"({first_ids(ids)})")
    return result


def money_fits(conn: psycopg.Connection, money: tuple[MoneyColumns, ...], schema: str = "public") -> Result:
    """Every money value converts to numeric(10,2) unchanged (nothing like '$150', '1,200.50' or '')."""
    result = Result("money values fit numeric(10,2)")
    catalog = catalog_of(conn, schema)
    for spec in money:
        if missing(result, catalog, schema, spec.table, spec.columns):
            continue
        for column in spec.columns:
            c = sql.Identifier(column)
            ids: list = []
            with result.guard(spec.table, column):
                query = sql.SQL("SELECT {i} FROM {t} WHERE {c} IS NOT NULL AND btrim({c}::text) !~ {p} "
                                "ORDER BY 1").format(i=sql.Identifier(key_of(catalog, schema, spec.table)),
                                                     t=sql.Identifier(schema, spec.table), c=c,
                                                     p=sql.Literal(MONEY_PATTERN))
                ids = [r[0] for r in conn.execute(query)]
            result.checked += 1
            if ids:
                result.add(f"{spec.table}.{column}: {len(ids)} values would not survive numeric(10,2) "
                           f"({first_ids(ids)})")
    return result


def blank_strings(conn: psycopg.Connection, table: str, column: str, schema: str = "public") -> Result:
    """Blank-but-not-NULL values that an encrypting step would turn into NULL (lossy on rollback)."""
    result = Result(f"{table}.{column} holds no blank strings")
    catalog = catalog_of(conn, schema)
    if missing(result, catalog, schema, table, [column]):
        return result
    query = sql.SQL("SELECT {i} FROM {t} WHERE {c} IS NOT NULL AND btrim({c}) = '' ORDER BY 1").format(
        i=sql.Identifier(key_of(catalog, schema, table)), t=sql.Identifier(schema, table), c=sql.Identifier(column))
    ids = [r[0] for r in conn.execute(query)]
    if ids:
        result.add(f"{table}.{column}: {len(ids)} blank strings ({first_ids(ids)})")
    return result
