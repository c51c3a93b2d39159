"""The checks behind the phase suites. Each returns a Result; a test asserts it passed.

A Result's problems name tables, columns, counts and the first row ids: never values, so a failure message can
go into any report. Tests call ``result.expect()``, which raises CheckFailed with those lines. A configured
table or column the database lacks is a problem naming it, never a crash; an error inside one part of a check
is reported as that part's problem (its class and the identifiers involved) and the other parts still run.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from migration_gate.core.result import FIRST_IDS, LOG, WAIVER, CheckFailed, Result, error_text, first_ids
from migration_gate.db.catalog import Catalog, inspect, quote

# the result vocabulary, handed on for callers that write `checks.Result` (it lives in core.result)
__all__ = ["FIRST_IDS", "LOG", "WAIVER", "CheckFailed", "Result", "error_text", "first_ids", "catalog_of", "missing",
           "key_of"]


def catalog_of(source: psycopg.Connection | Catalog, schema: str) -> Catalog:
    """Checks take an inspected Catalog; given a connection, they inspect it once themselves."""
    return source if isinstance(source, Catalog) else inspect(source, [schema])


def missing(result: Result, catalog: Catalog, schema: str, table: str, columns: Iterable[str] = ()) -> bool:
    """Add a problem for a configured table or column the live catalog lacks; True when anything is missing."""
    found = catalog.table(table, schema)
    if found is None:
        result.add(f"table {quote(schema, table)} is missing")
        return True
    absent = [c for c in columns if c not in found.columns]
    for column in absent:
        result.add(f"column {quote(schema, table, column)} is missing")
    return bool(absent)


def key_of(catalog: Catalog, schema: str, table: str) -> str:
    """The table's single-column primary key (the column rows are named by in messages)."""
    found = catalog.table(table, schema)
    pk = next((c.columns for c in found.constraints.values() if c.kind == "p"), ()) if found else ()
    if len(pk) != 1:
        raise LookupError(f"{quote(schema, table)} has no single-column primary key to name rows by")
    return pk[0]
