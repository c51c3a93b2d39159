"""Writing a migration description's schema sections from a live database, so a team starts from what its
database really is ([legacy_schema], [legacy_objects] before the migration; [new_schema], [new_objects] from a
staging copy after it) and reviews the text instead of typing it."""

from __future__ import annotations

import json
from collections.abc import Iterable

from migration_gate.config.environment import variable
from migration_gate.core.status import Exit
from migration_gate.db import connection as db
from migration_gate.db.catalog import Catalog


def _toml(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string, list or bool is valid TOML


def schema_sections(catalog: Catalog, schema: str, tables: Iterable[str], prefix: str) -> str:
    """[<prefix>_schema.<table>] (column -> spec) and [<prefix>_objects.<table>] for each table, in TOML."""
    out: list[str] = []
    for name in sorted(tables):
        table = catalog.table(name, schema)
        if table is None:
            raise LookupError(f"table {schema}.{name} does not exist")
        out.append(f"[{prefix}_schema.{name}]")
        out += [f"{column} = {_toml(spec.spec)}" for column, spec in sorted(table.columns.items())]
        out.append("")
        out.append(f"[{prefix}_objects.{name}]")
        out += [f"{key} = {_toml(value)}" for key, value in table.objects().items()]
        out.append("")
    return "\n".join(out)


def catalog_section(catalog: Catalog, prefix: str, schema: str = "public") -> str:
    """[<prefix>_catalog]: every object of the schema the table sections do not declare by columns, with its
    owner, grants and properties ("" when all are defaults): what a reviewer reads before declaring it."""
    out = [f"[{prefix}_catalog]"]
    out += [f"{_toml(key)} = {_toml(obj.spec)}" for key, obj in sorted(catalog.objects.items())
            if obj.schema == schema]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """scripts/describe-schema: print the schema sections of a migration description from DATABASE_URL."""
    import argparse
    import sys

    import psycopg

    from migration_gate.core.redact import redact_text
    from migration_gate.db.catalog import inspect

    parser = argparse.ArgumentParser(
        prog="scripts/describe-schema",
        description="Print [<side>_schema.*] and [<side>_objects.*] sections for migration.toml from the database "
                    "in DATABASE_URL (read-only), to review and paste into the description.")
    parser.add_argument("side", choices=["legacy", "new"], help="which side of the migration the database is on")
    parser.add_argument("tables", nargs="*", help="the tables to describe")
    parser.add_argument("--catalog", action="store_true",
                        help="also print [<side>_catalog]: every other object of the schema (views, functions, "
                             "types, rules, extensions, sequences, foreign keys, the tables' owners, grants, options)")
    parser.add_argument("--schema", default="public", help="the schema the tables live in (default public)")
    args = parser.parse_args(argv)
    dsn = variable("DATABASE_URL")
    if not dsn:
        print("describe-schema: DATABASE_URL is not set", file=sys.stderr)
        return Exit.USAGE
    try:
        with db.connect(dsn, connect_timeout=10) as conn:
            found = inspect(conn, [args.schema])
            print(schema_sections(found, args.schema, args.tables, args.side))
            if args.catalog:
                print(catalog_section(found, args.side, args.schema))
    except (psycopg.Error, LookupError) as exc:
        print(redact_text(f"describe-schema: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}"),
              file=sys.stderr)
        return Exit.USAGE
    return Exit.GREEN


if __name__ == "__main__":
    raise SystemExit(main())
