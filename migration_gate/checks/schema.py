"""The schema as the description says it must be: tables, columns (type, nullability, default), what else each
table carries, foreign keys, index coverage, sequences. Read from one inspected Catalog."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

from migration_gate.checks import catalog_of, key_of, missing
from migration_gate.config import ForeignKey, TableObjects
from migration_gate.core.result import Result, first_ids
from migration_gate.db.catalog import ON_DELETE_NAMES, Catalog, quote


def matches(source: psycopg.Connection | Catalog, expected: dict[str, dict[str, str]],
            objects: dict[str, TableObjects] | None = None, only: list[str] | None = None,
            check: str = "schema", schema: str = "public", label: str = "the description") -> Result:
    """Every expected table with exactly its columns and specs; no column, constraint, index, trigger or policy
    the description does not list."""
    catalog = catalog_of(source, schema)
    result = Result(check)
    for name in only or list(expected):
        table = catalog.table(name, schema)
        if table is None:
            result.add(f"table {quote(schema, name)} is missing")
            continue
        want, have = expected[name], {c: col.spec for c, col in table.columns.items()}
        for column in sorted(set(want) - set(have)):
            result.add(f"{quote(schema, name, column)} is missing (expected {want[column]})")
        for column in sorted(set(have) - set(want)):
            result.add(f"{quote(schema, name, column)} is in the database but not in {label}")
        for column in sorted(set(want) & set(have)):
            if want[column] != have[column]:
                result.add(f"{quote(schema, name, column)} is {have[column]}, expected {want[column]}")
        result.checked += len(want)
        if objects is not None:
            _objects(result, quote(schema, name), objects.get(name, TableObjects()), table.objects(), label)
    return result


def _objects(result: Result, where: str, want: TableObjects, have: dict, label: str) -> None:
    expected = {"unique": {tuple(u) for u in want.unique}, "checks": set(want.checks),
                "indexes": {tuple(i) for i in want.indexes}, "triggers": set(want.triggers),
                "policies": set(want.policies)}
    for kind, wanted in expected.items():
        found = {tuple(v) if isinstance(v, list) else v for v in have[kind]}
        for item in sorted(wanted - found, key=str):
            result.add(f"{where}: {kind[:-1] if kind != 'indexes' else 'index'} {_show(item)} is missing")
        for item in sorted(found - wanted, key=str):
            result.add(f"{where}: {kind[:-1] if kind != 'indexes' else 'index'} {_show(item)} is in the database "
                       f"but not in {label}")
    if want.row_level_security != have["row_level_security"]:
        result.add(f"{where}: row-level security is {'on' if have['row_level_security'] else 'off'}, expected "
                   f"{'on' if want.row_level_security else 'off'}")


def _show(item: object) -> str:
    return "(" + ", ".join(item) + ")" if isinstance(item, tuple) else str(item)


def only_described_tables(source: psycopg.Connection | Catalog, described: list[str], app_tables: list[str],
                           schema: str = "public") -> Result:
    """After the deploy: every table of the app's schema is one the migration's new schema describes or one
    [deploy] app_tables declares the app's own migrations may create; anything else is red, by name."""
    catalog = catalog_of(source, schema)
    result = Result("no table the description does not name", unit="tables")
    present = catalog.names(schema)
    result.checked = len(present)
    for name in sorted(present - set(described) - set(app_tables)):
        result.add(f"table {quote(schema, name)} is in the database but neither in [new_schema] nor in [deploy] "
                   "app_tables (what created it?)")
    created = sorted(present & set(app_tables))
    result.notes.append(f"the deploy's own tables: {len(created)} of the {len(app_tables)} declared exist"
                        + (f" ({', '.join(created)})" if created else ""))
    return result


def only_declared_objects(source: psycopg.Connection | Catalog, declared: dict[str, str] | None,
                          app_tables: Iterable[str] = (), schema: str = "public",
                          label: str = "[new_catalog]") -> Result:
    """Every object of the schema besides the tables' columns, indexes, unique and CHECK constraints (a view,
    function, type, rule, extension, foreign key, sequence, the schema itself...) is declared with exactly its
    owner, grants and properties; anything else is red, named by kind and identity. Objects of the tables the
    app's deploy may create ([deploy] app_tables) are the deploy's."""
    catalog = catalog_of(source, schema)
    result = Result(f"no object {label} does not declare", unit="objects")
    if declared is None:
        result.add(f"{label} is not in the description: the objects of schema {quote(schema)} were not "
                   "compared (scripts/describe-schema --catalog writes it)")
        return result
    deploy = {f"{schema}.{t}" for t in app_tables}
    found = {k: o for k, o in catalog.objects.items() if o.schema == schema and o.table not in deploy}
    result.checked = len(found)
    for key in sorted(set(declared) - set(found)):
        result.add(f"{key} is missing (expected in {label})")
    for key in sorted(set(found) - set(declared)):
        spec = found[key].spec
        result.add(f"{key} is in the database but not in {label}" + (f" ({spec})" if spec else ""))
    for key in sorted(set(declared) & set(found)):
        if declared[key] != found[key].spec:
            result.add(f"{key} is {found[key].spec or 'all defaults'}, expected {declared[key] or 'all defaults'}")
    return result


def absent_tables(source: psycopg.Connection | Catalog, tables: list[str], check: str,
                  schema: str = "public") -> Result:
    catalog = catalog_of(source, schema)
    result = Result(check)
    for table in tables:
        result.checked += 1
        if catalog.table(table, schema) is not None:
            result.add(f"table {quote(schema, table)} still exists")
    return result


def foreign_keys(source: psycopg.Connection | Catalog, expected: tuple[ForeignKey, ...],
                 schema: str = "public") -> Result:
    """Each column references exactly the expected table, with the expected ON DELETE."""
    catalog = catalog_of(source, schema)
    result = Result("foreign keys")
    for fk in expected:
        result.checked += 1
        if missing(result, catalog, schema, fk.table, [fk.column]):
            continue
        found = catalog.table(fk.table, schema).foreign_keys(fk.column)
        if not found:
            result.add(f"{fk.label}: no foreign key")
            continue
        target = f"{schema}.{fk.references}"
        targets = {c.references for c in found}
        if targets != {target}:
            result.add(f"{fk.table}.{fk.column} references {', '.join(sorted(t or '?' for t in targets))}, "
                       f"expected {target} only")
        for constraint in found:
            if constraint.references == target and constraint.on_delete != fk.on_delete:
                result.add(f"{fk.label}: ON DELETE {ON_DELETE_NAMES[constraint.on_delete]}, expected "
                           f"{ON_DELETE_NAMES[fk.on_delete]}")
            if not constraint.validated:
                result.add(f"{fk.label}: constraint is NOT VALID (existing rows never checked)")
    return result


def index_coverage(source: psycopg.Connection | Catalog, expected: tuple[ForeignKey, ...],
                   schema: str = "public") -> Result:
    """Some valid index leads with each foreign-key column (coverage, not names)."""
    catalog = catalog_of(source, schema)
    result = Result("foreign-key index coverage")
    for fk in expected:
        result.checked += 1
        if not missing(result, catalog, schema, fk.table, [fk.column]) and \
                not catalog.table(fk.table, schema).covered(fk.column):
            result.add(f"{fk.table}.{fk.column}: no index leads with this foreign-key column")
    return result


INTEGER_TYPES = ("smallint", "integer", "bigint")


def sequences(conn: psycopg.Connection, tables: list[str], schema: str = "public",
              catalog: Catalog | None = None) -> Result:
    """Every column fed by a sequence (serial default or identity) has a sequence owned by it, and the next
    value is past the column's max. An integer key without either is a finding: inserts would need explicit ids
    (a text or UUID key is the app's to choose, and has no sequence by design)."""
    catalog = catalog or catalog_of(conn, schema)
    result = Result("sequences")
    for name in tables:
        if missing(result, catalog, schema, name):
            continue
        table = catalog.table(name, schema)
        fed = [c for c in table.columns.values() if c.identity or (c.default or "").startswith("nextval(")]
        with result.guard(name):
            key = key_of(catalog, schema, name)
            if key not in {c.name for c in fed} and table.columns[key].type in INTEGER_TYPES:
                result.add(f"{quote(schema, name, key)}: no nextval default or identity (inserts would fail with "
                           "a NULL id)")
        for column in fed:
            result.checked += 1
            with result.guard(name, column.name):
                seq = catalog.owned_sequence(schema, name, column.name)
                if seq is None:
                    result.add(f"{quote(schema, name, column.name)}: no sequence owned by the column")
                    continue
                last, called = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
                    sql.Identifier(seq.schema, seq.name))).fetchone()
                next_value = last + seq.increment if called else last
                high = conn.execute(sql.SQL("SELECT max({}) FROM {}").format(
                    sql.Identifier(column.name), sql.Identifier(schema, name))).fetchone()[0]
                if high is not None and next_value <= high:
                    result.add(f"{quote(schema, name, column.name)}: sequence would hand out {next_value}, not past "
                               f"max {high}")
    return result


def orphans(conn: psycopg.Connection, fks: tuple[ForeignKey, ...], schema: str = "public",
            catalog: Catalog | None = None) -> Result:
    """Rows whose foreign-key value matches no row of the referenced table (NOT NULL checked elsewhere)."""
    catalog = catalog or catalog_of(conn, schema)
    result = Result("orphans")
    for fk in fks:
        result.checked += 1
        if missing(result, catalog, schema, fk.table, [fk.column]) or missing(result, catalog, schema, fk.references):
            continue
        with result.guard(fk.table, fk.column):
            key, ref_key = key_of(catalog, schema, fk.table), key_of(catalog, schema, fk.references)
            query = sql.SQL(
                "SELECT t.{key} FROM {tbl} t WHERE t.{col} IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM {ref} r WHERE r.{ref_key} = t.{col}) ORDER BY 1").format(
                key=sql.Identifier(key), tbl=sql.Identifier(schema, fk.table), col=sql.Identifier(fk.column),
                ref=sql.Identifier(schema, fk.references), ref_key=sql.Identifier(ref_key))
            ids = [r[0] for r in conn.execute(query)]
            if ids:
                result.add(f"{fk.label}: {len(ids)} orphan rows ({first_ids(ids)})")
    return result


def not_null(conn: psycopg.Connection, table: str, column: str, schema: str = "public",
             catalog: Catalog | None = None) -> Result:
    catalog = catalog or catalog_of(conn, schema)
    result = Result(f"{table}.{column} set on every row")
    if missing(result, catalog, schema, table, [column]):
        return result
    with result.guard(table, column):
        key = key_of(catalog, schema, table)
        ids = [r[0] for r in conn.execute(sql.SQL("SELECT {k} FROM {t} WHERE {c} IS NULL ORDER BY 1").format(
            k=sql.Identifier(key), t=sql.Identifier(schema, table), c=sql.Identifier(column)))]
        if ids:
            result.add(f"{table}.{column}: {len(ids)} rows NULL ({first_ids(ids)})")
    return result
