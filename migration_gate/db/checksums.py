"""Content checksums of tables, computed inside PostgreSQL.

A row's hash is md5 over its columns taken in name order, so column order never matters (a rollback that
re-adds a column at the end still matches). A table's checksum combines the row hashes with order-independent
aggregates (count, numeric sum and bit_xor of two 64-bit slices), so row order never matters and a duplicated
row does not cancel out. Only digests leave the server: never values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class Checksum:
    rows: int
    digest: str

    def __str__(self) -> str:
        return f"{self.rows} rows, {self.digest}"


def table_columns(conn: psycopg.Connection, table: str, schema: str = "public") -> list[str]:
    """The table's column names in name order (an empty list when the table does not exist)."""
    cur = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attname",
        (f"{sql.Identifier(schema).as_string(conn)}.{sql.Identifier(table).as_string(conn)}",))
    return [name for (name,) in cur]


def row_hash(columns: list[str], alias: str = "t") -> sql.Composed:
    """md5 of the row's columns in name order, rendered canonically (NULL distinct from '')."""
    fields = sql.SQL(", ").join(sql.Identifier(alias, c) for c in sorted(columns))
    return sql.SQL("md5(ROW({})::text)").format(fields)


def _aggregate(hash_expr: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "count(*), "
        "coalesce(sum(('x' || substr({h}, 1, 16))::bit(64)::bigint::numeric), 0), "
        "coalesce(bit_xor(('x' || substr({h}, 17, 16))::bit(64)::bigint), 0)"
    ).format(h=hash_expr)


def table_checksum(conn: psycopg.Connection, table: str, columns: list[str] | None = None,
                   schema: str = "public") -> Checksum:
    """One digest of a table's whole content; equal digests mean equal multisets of rows."""
    columns = columns or table_columns(conn, table, schema)
    if not columns:
        raise LookupError(f"table {schema}.{table} does not exist")
    query = sql.SQL("SELECT {agg}, {names} FROM {tbl} AS t").format(
        agg=_aggregate(row_hash(columns)),
        names=sql.Literal(",".join(sorted(columns))),
        tbl=sql.Identifier(schema, table))
    with conn.transaction():
        conn.execute("SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; "
                     "SET LOCAL extra_float_digits = 3; SET LOCAL TimeZone = 'UTC'")
        rows, total, xor, names = conn.execute(query).fetchone()
    digest = hashlib.sha256(f"{names}|{rows}|{total}|{xor}".encode()).hexdigest()[:32]
    return Checksum(rows=rows, digest=digest)


def database_checksums(conn: psycopg.Connection, tables: list[str], schema: str = "public") -> dict[str, Checksum]:
    return {table: table_checksum(conn, table, schema=schema) for table in tables}


def key_checksum(conn: psycopg.Connection, table: str, key: str, schema: str = "public") -> tuple[int, str]:
    """The rows and one digest of a table's key column alone, whatever the column is called: equal on two
    tables means the same multiset of keys (a rollback that carried every row back, by key)."""
    query = sql.SQL("SELECT {agg} FROM {tbl} AS t").format(
        agg=_aggregate(sql.SQL("md5({}::text)").format(sql.Identifier("t", key))), tbl=sql.Identifier(schema, table))
    rows, total, xor = conn.execute(query).fetchone()
    return rows, hashlib.sha256(f"{rows}|{total}|{xor}".encode()).hexdigest()[:32]
