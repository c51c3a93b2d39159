"""What the database's catalog says about a set of tables: columns, constraints, indexes, sequences.

Used to compare schemas (before vs after a rollback; found vs expected after a migration). Everything is
returned sorted by name, so physical column order never matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Column:
    table: str
    name: str
    type: str
    not_null: bool
    default: str | None


@dataclass(frozen=True)
class Constraint:
    table: str
    name: str
    kind: str  # p, u, f, c
    definition: str


@dataclass(frozen=True)
class Index:
    table: str
    name: str
    definition: str


@dataclass(frozen=True)
class SchemaFingerprint:
    columns: tuple[Column, ...]
    constraints: tuple[Constraint, ...]
    indexes: tuple[Index, ...]

    def differences(self, other: SchemaFingerprint) -> list[str]:
        """Human-readable lines naming what differs (names only, never data)."""
        lines = []
        for label, mine, theirs in (("column", self.columns, other.columns),
                                    ("constraint", self.constraints, other.constraints),
                                    ("index", self.indexes, other.indexes)):
            for item in sorted(set(mine) - set(theirs), key=str):
                lines.append(f"{label} only before: {item}")
            for item in sorted(set(theirs) - set(mine), key=str):
                lines.append(f"{label} only after: {item}")
        return lines


def existing_tables(conn: psycopg.Connection, schema: str = "public") -> set[str]:
    cur = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    return {name for (name,) in cur}


def fingerprint(conn: psycopg.Connection, tables: list[str], schema: str = "public") -> SchemaFingerprint:
    columns = conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "       pg_get_expr(d.adbin, d.adrelid) "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY 1, 2", (schema, tables)).fetchall()
    constraints = conn.execute(
        "SELECT c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid) "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) ORDER BY 1, 2", (schema, tables)).fetchall()
    indexes = conn.execute(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = ANY(%s) "
        "ORDER BY 1, 2", (schema, tables)).fetchall()
    return SchemaFingerprint(
        columns=tuple(Column(*row) for row in columns),
        constraints=tuple(Constraint(*row) for row in constraints),
        indexes=tuple(Index(*row) for row in indexes),
    )
