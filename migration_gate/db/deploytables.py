"""The tables the app's deploy created after the migration, in a rollback.

The app's own migrations run at its start on the new schema ([deploy] app_tables declares what they may create):
they add tables with foreign keys to the migration's tables (organizations, patients, ...). The rollback SQL drops
or renames those tables, so it would fail on the first dependency; a restore empties the schema and drops them
with their rows. Here, in the SQL rollback's own transaction and before its file: each such table is locked and
counted; an empty one is dropped (tables referencing others first), one with rows is kept and detached (its
foreign keys to every table the rollback drops or renames, and to the empty tables dropped, are dropped first).
The steps are returned in the order they ran, for the run's record. Only names and counts leave this module.

A deploy's table is one of [migration] schema that neither the new nor the legacy schema describes and that did
not exist at the mark taken right after the migration (without a mark: one [deploy] app_tables declares).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql

from migration_gate.config import GateConfig
from migration_gate.db.catalog import Catalog, inspect


@dataclass
class DeployTable:
    table: str  # "schema.table"
    rows: int
    declared: bool  # [deploy] app_tables names it
    detach: list[str] = field(default_factory=list)  # "constraint -> schema.table" of the foreign keys to drop

    @property
    def kept(self) -> bool:
        return self.rows > 0

    def line(self, method: str = "sql") -> str:
        """What a rollback by `method` does with it, one PHI-free line."""
        rows = f"{self.rows} row{'s' if self.rows != 1 else ''}"
        undeclared = "" if self.declared else " (not declared in [deploy] app_tables)"
        if method == "restore":
            return f"{self.table}: {rows}, dropped by the restore{undeclared}"
        if not self.kept:
            return f"{self.table}: empty, dropped{undeclared}"
        targets = sorted({d.split(" -> ", 1)[1] for d in self.detach})
        detached = f", detached from {', '.join(targets)}" if targets else ""
        return f"{self.table}: {rows}, kept{detached} (the legacy release does not read it){undeclared}"


def to_json(tables: list[DeployTable]) -> list[dict]:
    return [asdict(t) for t in tables]


def from_json(data: list[dict] | None) -> list[DeployTable]:
    return [DeployTable(**t) for t in data or []]


def summary(tables: list[DeployTable], method: str = "sql") -> str:
    return "; ".join(t.line(method) for t in tables)


def names(catalog: Catalog, gate: GateConfig, marked: set[str] | None) -> list[str]:
    """The deploy's tables now: in the app's schema, described by neither side, created after the mark."""
    schema = gate.schema
    found = catalog.names(schema) - set(gate.new_schema) - set(gate.legacy_schema)
    if marked is None:
        return sorted(found & set(gate.app_tables))
    return sorted(n for n in found if f"{schema}.{n}" not in marked)


def survey(conn: psycopg.Connection, gate: GateConfig, marked: set[str] | None,
           catalog: Catalog | None = None) -> list[DeployTable]:
    """Each deploy table with its rows and the foreign keys a SQL rollback would drop to keep it."""
    schema = gate.schema
    catalog = catalog or inspect(conn, [schema])
    tables = names(catalog, gate, marked)
    counted = {name: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
                                  ).fetchone()[0] for name in tables}
    gone = {f"{schema}.{t}" for t in gate.removed_tables()} | {f"{schema}.{t}" for t in tables if not counted[t]}
    found = []
    for name in tables:
        detach = [f"{c.name} -> {c.references}" for c in sorted(catalog.table(name, schema).foreign_keys(),
                                                                 key=lambda c: c.name)
                  if c.references in gone and c.references != f"{schema}.{name}"] if counted[name] else []
        found.append(DeployTable(f"{schema}.{name}", counted[name], name in gate.app_tables, detach))
    return found


def _drop_order(catalog: Catalog, empty: list[DeployTable]) -> list[DeployTable]:
    """Tables that reference others of the set first, so each DROP meets no dependent."""
    left = {t.table: t for t in empty}
    order: list[DeployTable] = []
    while left:
        referenced = {c.references for name in left for c in catalog.tables[name].foreign_keys()
                      if c.references in left and c.references != name}
        ready = sorted(n for n in left if n not in referenced) or sorted(left)  # a cycle: the rest as they come
        order.append(left.pop(ready[0]))
    return order


def detach_and_drop(conn: psycopg.Connection, gate: GateConfig, marked: set[str] | None
                    ) -> tuple[list[DeployTable], list[str]]:
    """In the rollback's transaction, before its file: lock the deploy's tables, count them, drop the empty ones
    and detach the others from what the rollback drops. Returns the tables and the steps in the order run."""
    schema = gate.schema
    catalog = inspect(conn, [schema])
    tables = names(catalog, gate, marked)
    if not tables:
        return [], []
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
        sql.SQL(", ").join(sql.Identifier(schema, t) for t in tables)))  # nobody writes one while it is counted
    found = survey(conn, gate, marked, catalog)
    steps = []
    for table in found:
        for detach in table.detach:
            constraint = detach.split(" -> ", 1)[0]
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(*table.table.split(".", 1)), sql.Identifier(constraint)))
            steps.append(f"{table.table}: foreign key {detach} dropped ({table.rows} rows kept)")
    for table in _drop_order(catalog, [t for t in found if not t.kept]):
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(*table.table.split(".", 1))))
        steps.append(f"{table.table}: dropped (empty)")
    return found, steps
