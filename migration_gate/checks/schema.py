"""The schema as the app needs it: tables, columns and types, foreign keys, index coverage, sequences."""

from __future__ import annotations

import psycopg
from psycopg import sql

from migration_gate.checks import Result, first_ids
from migration_gate.config import ForeignKey

_DELETE_NAMES = {"r": "RESTRICT", "c": "CASCADE", "a": "NO ACTION", "n": "SET NULL", "d": "SET DEFAULT"}


def _columns(conn: psycopg.Connection, tables: list[str]) -> dict[str, dict[str, str]]:
    rows = conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) || "
        "       CASE WHEN a.attnotnull THEN ' not null' ELSE '' END "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname = ANY(%s) "
        "AND a.attnum > 0 AND NOT a.attisdropped", (tables,)).fetchall()
    found: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        found.setdefault(table, {})[column] = kind
    return found


def matches(conn: psycopg.Connection, expected: dict[str, dict[str, str]], only: list[str] | None = None,
            check: str = "schema") -> Result:
    """Every expected table with exactly its columns and types ("not null" included); no leftovers."""
    result = Result(check)
    tables = only or list(expected)
    found = _columns(conn, tables)
    for table in tables:
        if table not in found:
            result.add(f"table {table} is missing")
            continue
        want, have = expected[table], found[table]
        for column in sorted(set(want) - set(have)):
            result.add(f"{table}.{column} is missing (expected {want[column]})")
        for column in sorted(set(have) - set(want)):
            result.add(f"{table}.{column} is a leftover column the new schema does not have")
        for column in sorted(set(want) & set(have)):
            if want[column] != have[column]:
                result.add(f"{table}.{column} is {have[column]}, expected {want[column]}")
        result.checked += len(want)
    return result


def absent_tables(conn: psycopg.Connection, tables: list[str], check: str) -> Result:
    result = Result(check)
    for table in tables:
        if conn.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone()[0] is not None:
            result.add(f"table {table} still exists")
    return result


def foreign_keys(conn: psycopg.Connection, expected: tuple[ForeignKey, ...]) -> Result:
    """Each column references exactly the expected table, with the expected ON DELETE."""
    result = Result("foreign keys")
    for fk in expected:
        rows = conn.execute(
            "SELECT confrelid::regclass::text, confdeltype::text, convalidated FROM pg_constraint k "
            "JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey) "
            "WHERE k.contype = 'f' AND k.conrelid = to_regclass(%s) AND a.attname = %s",
            (f"public.{fk.table}", fk.column)).fetchall()
        result.checked += 1
        if not rows:
            result.add(f"{fk.label}: no foreign key")
            continue
        targets = {r[0] for r in rows}
        if targets != {fk.references}:
            result.add(f"{fk.table}.{fk.column} references {', '.join(sorted(targets))}, expected {fk.references} "
                       "only")
        for target, deltype, valid in rows:
            if target == fk.references and deltype != fk.on_delete:
                result.add(f"{fk.label}: ON DELETE {_DELETE_NAMES[deltype]}, expected {_DELETE_NAMES[fk.on_delete]}")
            if not valid:
                result.add(f"{fk.label}: constraint is NOT VALID (existing rows never checked)")
    return result


def index_coverage(conn: psycopg.Connection, expected: tuple[ForeignKey, ...]) -> Result:
    """Some valid index leads with each foreign-key column (coverage, not names)."""
    result = Result("foreign-key index coverage")
    for fk in expected:
        covered = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass(%s) AND a.attname = %s AND i.indisvalid)",
            (f"public.{fk.table}", fk.column)).fetchone()[0]
        result.checked += 1
        if not covered:
            result.add(f"{fk.table}.{fk.column}: no index leads with this foreign-key column")
    return result


def sequences(conn: psycopg.Connection, tables: list[str], key: str = "id") -> Result:
    """id defaults to nextval of a sequence owned by the column, and the next value is past max(id)."""
    result = Result("sequences")
    for table in tables:
        seq = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (f"public.{table}", key)).fetchone()[0]
        default = conn.execute(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid "
            "AND a.attnum = d.adnum WHERE d.adrelid = to_regclass(%s) AND a.attname = %s",
            (f"public.{table}", key)).fetchone()
        result.checked += 1
        if seq is None:
            result.add(f"{table}.{key}: no sequence owned by the column")
            continue
        if not default or not default[0].startswith("nextval("):
            result.add(f"{table}.{key}: no nextval default (inserts would fail with a NULL id)")
        last, called = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
            sql.Identifier(*seq.split(".")))).fetchone()
        next_value = last + 1 if called else last
        high = conn.execute(sql.SQL("SELECT coalesce(max({}), 0) FROM {}").format(
            sql.Identifier(key), sql.Identifier(table))).fetchone()[0]
        if next_value <= high:
            result.add(f"{table}.{key}: sequence would hand out {next_value}, not past max(id) {high}")
    return result


def orphans(conn: psycopg.Connection, fks: tuple[ForeignKey, ...], key: str = "id") -> Result:
    """Rows whose foreign-key value matches no row of the referenced table (NOT NULL checked elsewhere)."""
    result = Result("orphans")
    for fk in fks:
        query = sql.SQL(
            "SELECT t.{key} FROM {tbl} t WHERE t.{col} IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM {ref} r WHERE r.{key} = t.{col}) ORDER BY 1").format(
            key=sql.Identifier(key), tbl=sql.Identifier(fk.table), col=sql.Identifier(fk.column),
            ref=sql.Identifier(fk.references))
        ids = [r[0] for r in conn.execute(query)]
        result.checked += 1
        if ids:
            result.add(f"{fk.label}: {len(ids)} orphan rows ({first_ids(ids)})")
    return result


def not_null(conn: psycopg.Connection, table: str, column: str, key: str = "id") -> Result:
    result = Result(f"{table}.{column} set on every row")
    ids = [r[0] for r in conn.execute(sql.SQL("SELECT {k} FROM {t} WHERE {c} IS NULL ORDER BY 1").format(
        k=sql.Identifier(key), t=sql.Identifier(table), c=sql.Identifier(column)))]
    if ids:
        result.add(f"{table}.{column}: {len(ids)} rows NULL ({first_ids(ids)})")
    return result
