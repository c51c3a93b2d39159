"""How big a table is, read one way for every caller (lint's thresholds, the forecast, the checksums' work order,
the scans' worker count).

The rule: rows are pg_class.reltuples; where the statistics say nothing (reltuples 0 or -1: never analyzed, or
analyzed while empty) they are counted, unless the table is at least ``count_below`` bytes (then None: unknown,
never "small"). Bytes are exact (pg_total_relation_size; ``data_bytes`` without indexes, pg_table_size), read
under the session's lock_timeout: when a lock is not free (or statement_timeout cuts the read) they are the
catalog's pages instead (heap and TOAST relpages, as of the last VACUUM or ANALYZE) and the size says
``estimated``. ``catalog_bytes`` gives that page rule for every table at once, taking no lock at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

# Heap and TOAST pages from pg_class alone (no lock): the catalog's idea of a table's size.
_PAGES = sql.SQL("(greatest(c.relpages, 0) + coalesce(greatest(t.relpages, 0), 0))::bigint "
                 "* current_setting('block_size')::bigint")
_TABLES = sql.SQL("FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "LEFT JOIN pg_class t ON t.oid = c.reltoastrelid WHERE c.relkind IN ('r', 'p', 'm')")


@dataclass(frozen=True)
class TableSize:
    rows: int | None  # None: statistics say nothing and the table is too large to count
    bytes: int  # with indexes and TOAST
    data_bytes: int  # heap and TOAST, no indexes
    estimated: bool = False  # bytes from catalog pages: a lock was not free


def table_size(conn: psycopg.Connection, schema: str, table: str, *,
               count_below: int | None = None) -> TableSize | None:
    """The one size reader (module docstring); None: no such table. count_below None: count at any size."""
    row = conn.execute(sql.SQL("SELECT c.oid, c.reltuples::bigint, {pages} {tables} "
                               "AND n.nspname = %s AND c.relname = %s").format(pages=_PAGES, tables=_TABLES),
                       (schema, table)).fetchone()
    if row is None:
        return None
    oid, reltuples, pages = row
    try:
        with conn.transaction():  # a savepoint inside the caller's transaction; a lock error leaves it usable
            total, data, heap = conn.execute("SELECT pg_total_relation_size(%s), pg_table_size(%s), "
                                             "pg_relation_size(%s)", (oid, oid, oid)).fetchone()
            rows: int | None = int(reltuples)
            if reltuples <= 0:  # the statistics say nothing
                rows = None if count_below is not None and heap >= count_below else conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()[0]
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
        return TableSize(max(int(reltuples), 0), int(pages), int(pages), estimated=True)
    return TableSize(rows, int(total), int(data))


def catalog_bytes(conn: psycopg.Connection) -> dict[str, int]:
    """"schema.table" -> its catalog pages in bytes (heap and TOAST), for every table: no lock, never waits."""
    return {f"{schema}.{name}": int(size) for schema, name, size in conn.execute(
        sql.SQL("SELECT n.nspname, c.relname, {pages} {tables}").format(pages=_PAGES, tables=_TABLES))}
