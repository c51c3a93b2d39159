"""Writes since a point in the database's history: what a rollback to the backup would discard.

Right after the migration commits, the gate marks the database: the first transaction id not yet assigned, and
each table's rows and highest integer key. PostgreSQL stamps every row version with the transaction that wrote it
(xmin; freezing keeps the raw value since 9.4), so one scan per table counts exactly the rows inserted or updated
after the mark, with no trigger, extension or privilege beyond SELECT on the target. Deleted rows are the
difference, rows then + inserted - rows now: exact where the key is an integer (an insert is a key above the
mark's highest), unknown otherwise.

The gate's own writes (the audit rows its PHI reads cause, the probe patient the post-checks create) are counted
apart by the columns that attribute a row to its login: before go-live nobody else may write. Only names and
counts leave this module (keys for the carried rows of a SQL rollback, never values).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate.config import GateConfig
from migration_gate.db import catalog
from migration_gate.db import connection as db
from migration_gate.db import snapshot as snapshots
from migration_gate.db.checksums import key_checksum

INTEGER_TYPES = ("smallint", "integer", "bigint")
XID_SPACE = 1 << 32
SHOWN = 8  # tables named in one line; the rest are counted


@dataclass(frozen=True)
class TableMark:
    rows: int
    key: str | None = None  # the single-column integer primary key, when the table has one
    max_key: int | None = None


@dataclass(frozen=True)
class WriteMark:
    """Where the database stood right after the migration committed."""

    xid: int  # 32-bit: every row version written after the mark has an xmin at or after this id
    taken_at: str
    tables: dict[str, TableMark]  # "schema.table"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> WriteMark:
        return cls(xid=int(data["xid"]), taken_at=str(data["taken_at"]),
                   tables={name: TableMark(**mark) for name, mark in data["tables"].items()})


@dataclass(frozen=True)
class TableWrites:
    table: str  # "schema.table"
    written: int  # rows inserted or updated since the mark
    inserted: int | None  # of them, new keys (integer keys only)
    deleted: int | None  # rows gone since the mark (integer keys only)
    own: int = 0  # inserted rows attributed to the gate's own login (it never updates or deletes)
    created: bool = False  # the table did not exist at the mark: all its rows are new

    @property
    def others(self) -> int:
        """Changes nobody but the gate's login made: written by others, plus every deletion (the gate deletes
        nothing)."""
        return self.written - self.own + (self.deleted or 0)

    def line(self) -> str:
        if self.created:
            return f"{self.table}: created since the migration, {self.written} rows"
        if self.inserted is None:
            parts = [f"{self.written} inserted or updated"]
        else:
            parts = [f"{self.inserted} inserted", f"{self.written - self.inserted} updated", f"{self.deleted} deleted"]
        own = f" ({self.own} by the gate's own login)" if self.own else ""
        return f"{self.table}: {', '.join(parts)}{own}"


@dataclass
class WritesSince:
    """The changes since a mark, per table (only tables that changed are listed)."""

    mark_taken_at: str
    counted_at: str
    tables: list[TableWrites] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # tables of the mark that no longer exist

    @property
    def others(self) -> int:
        return sum(t.others for t in self.tables)

    @property
    def own(self) -> int:
        return sum(t.own for t in self.tables)

    def of(self, table: str) -> TableWrites | None:
        return next((t for t in self.tables if t.table == table), None)

    def summary(self, who: str = "all") -> str:
        """One line: the tables with changes (by others only, with who="others"), at most SHOWN named."""
        rows = [t for t in self.tables if who == "all" or t.others]
        shown = "; ".join(t.line() for t in rows[:SHOWN])
        more = f"; and {len(rows) - SHOWN} more tables" if len(rows) > SHOWN else ""
        dropped = "".join(f"; {name}: dropped since the migration" for name in self.dropped)
        return (shown + more + dropped) or "no rows written since the migration"

    def to_json(self) -> dict:
        return asdict(self) | {"others": self.others, "own": self.own}


def _integer_key(table: catalog.Table) -> str | None:
    primary = next((c for c in table.constraints.values() if c.kind == "p"), None)
    if primary is None or len(primary.columns) != 1:
        return None
    column = table.columns.get(primary.columns[0])
    return column.name if column is not None and column.type in INTEGER_TYPES else None


def take_mark(dsn: str) -> WriteMark:
    """The mark: the next transaction id, and every user table's rows and highest integer key."""
    with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        xid = int(conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()[0]) % XID_SPACE
        tables = {}
        for name, table in sorted(catalog.inspect(conn).tables.items()):
            key = _integer_key(table)
            relation = sql.Identifier(table.schema, table.name)
            if key:
                rows, max_key = conn.execute(sql.SQL("SELECT count(*), max({}) FROM {}").format(
                    sql.Identifier(key), relation)).fetchone()
            else:
                rows, max_key = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(relation)).fetchone()[0], None
            tables[name] = TableMark(rows=rows, key=key, max_key=max_key)
    return WriteMark(xid=xid, taken_at=datetime.now(UTC).isoformat(timespec="seconds"), tables=tables)


def _since(mark: WriteMark) -> sql.Composed:
    return written_since(mark.xid)


def written_since(xid: int) -> sql.Composed:
    """True for a row version written by transaction `xid` or a later one (age counts back from the newest
    transaction): the scope of a check that only looks at what changed since a mark (the watch's rounds)."""
    return sql.SQL("age(xmin) <= age({}::xid)").format(sql.Literal(str(xid)))


def oldest_running_xid(conn: psycopg.Connection) -> int:
    """The oldest transaction still running (32-bit): every row a later check must see is written by it or a later
    one, even a transaction that began before this call and commits after (the next xid would miss those)."""
    return int(conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()[0]) % XID_SPACE


def count_since(dsn: str, mark: WriteMark, attribution: dict[str, str] | None = None,
                own_id: object | None = None) -> WritesSince:
    """Rows inserted, updated and deleted since the mark, per table; rows whose attribution column (qualified
    table -> column) holds the gate's login id are its own."""
    attribution = attribution or {}
    found_tables: list[TableWrites] = []
    with db.connect(dsn, autocommit=True, connect_timeout=10) as conn, snapshots.session(conn):
        now = catalog.inspect(conn).tables
        for name, table in sorted(now.items()):
            then = mark.tables.get(name)
            relation = sql.Identifier(table.schema, table.name)
            if then is None:
                rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(relation)).fetchone()[0]
                found_tables.append(TableWrites(name, rows, rows, 0, created=True))
                continue
            since = _since(mark)
            new_key = (sql.SQL("{} AND {} > {}").format(since, sql.Identifier(then.key), sql.Literal(
                then.max_key if then.max_key is not None else -2**63))
                if then.key and then.key in table.columns else None)
            inserted = (sql.SQL("count(*) FILTER (WHERE {})").format(new_key) if new_key is not None
                        else sql.SQL("NULL::bigint"))
            # the gate inserts (audit rows, a probe row) and never updates: only new rows can be its own
            column = attribution.get(name)
            own = (sql.SQL("count(*) FILTER (WHERE {} AND {}::text = {})").format(
                new_key if new_key is not None else since, sql.Identifier(column), sql.Literal(str(own_id)))
                if column and own_id is not None and column in table.columns else sql.SQL("0::bigint"))
            rows, written, new, mine = conn.execute(sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE {}), {}, {} FROM {}").format(
                since, inserted, own, relation)).fetchone()
            deleted = then.rows + new - rows if new is not None else None
            if written or deleted or rows != then.rows:
                found_tables.append(TableWrites(name, written, new, deleted, own=mine))
        dropped = sorted(set(mark.tables) - set(now))
    return WritesSince(mark.taken_at, datetime.now(UTC).isoformat(timespec="seconds"), found_tables, dropped)


def attribution(gate: GateConfig, dsn: str, username: str | None) -> tuple[dict[str, str], object | None]:
    """Which column names a row's author, per table, and the gate's login id: the users table's key, the audit
    table's user, the owner column of each visibility rule on the new side ([api] in the description)."""
    api = gate.api
    columns: dict[str, str] = {}
    if api.audit:
        columns[f"{api.audit.schema}.{api.audit.table}"] = api.audit.user
    for sides in api.visibility.values():
        rule = sides.get("new")
        if rule:
            columns.setdefault(f"{api.schema}.{rule.table}", rule.owner)
    if api.users is None or not username:
        return columns, None
    users = api.users
    columns.setdefault(f"{users.schema}.{users.table}", users.key)
    with db.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
            sql.Identifier(users.key), sql.Identifier(users.schema, users.table), sql.Identifier(users.username)),
            (username,)).fetchone()
    return columns, (row[0] if row else None)


# -- what a SQL rollback must carry back --------------------------------------------------------------------

@dataclass
class CarriedTable:
    """One mapping's rows a SQL rollback must carry from the new table back into the legacy one."""

    legacy: str
    legacy_key: str
    new: str
    key: str
    rows: int  # in the new table before the rollback
    key_digest: str  # of the new table's keys before the rollback
    written: list = field(default_factory=list)  # keys of the rows inserted or updated since the migration
    deleted: int | None = 0  # rows deleted since the migration (None: not countable, the key is not an integer)


@dataclass
class Carried:
    schema: str
    tables: list[CarriedTable] = field(default_factory=list)

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> Carried:
        data = json.loads(path.read_text())
        return cls(schema=data["schema"], tables=[CarriedTable(**t) for t in data["tables"]])

    @property
    def changed(self) -> bool:
        """Rows were written or deleted since the migration (else the backup alone is the measure)."""
        return any(t.written or t.deleted for t in self.tables)

    def table(self, legacy: str) -> CarriedTable | None:
        return next((t for t in self.tables if t.legacy == legacy), None)


def _written_keys(conn: psycopg.Connection, schema: str, table: str, key: str, mark: WriteMark) -> Iterator:
    """The keys of the rows written since the mark, streamed (a server-side cursor), in key order."""
    with conn.cursor(name="gate_written_keys") as cur:
        cur.execute(sql.SQL("SELECT {k} FROM {t} WHERE {s} ORDER BY {k}").format(
            k=sql.Identifier(key), t=sql.Identifier(schema, table), s=_since(mark)))
        for (value,) in cur:
            yield value if isinstance(value, int) else str(value)  # JSON-safe: a UUID or text key as text


def what_to_carry(dsn: str, gate: GateConfig, mark: WriteMark, writes: WritesSince, digest: bool = True) -> Carried:
    """Before a SQL rollback: per mapping (legacy <- new, not partial), the new table's key set and the keys of
    the rows written since the migration, so that the rollback's result can be proven complete. digest=False: the
    keys of the rows to carry only (the plan's cost, and the rows its PHI checks read), no scan of whole tables."""
    schema = gate.schema
    carried = Carried(schema=schema)
    with db.connect(dsn, connect_timeout=10) as conn, snapshots.session(conn):
        present = catalog.inspect(conn, [schema]).names(schema)
        for mapping in gate.tables:
            if mapping.partial or mapping.new not in present:
                continue
            rows, digest_of = key_checksum(conn, mapping.new, mapping.key, schema) if digest else (0, "")
            changed = writes.of(f"{schema}.{mapping.new}")
            keys = list(_written_keys(conn, schema, mapping.new, mapping.key, mark)) if changed else []
            carried.tables.append(CarriedTable(
                legacy=mapping.legacy, legacy_key=mapping.source_key, new=mapping.new, key=mapping.key, rows=rows,
                key_digest=digest_of, written=keys, deleted=changed.deleted if changed else 0))
    return carried


def verify_carried(dsn: str, carried: Carried) -> list[str]:
    """After a SQL rollback: every legacy table holds exactly the keys its new table held (no row lost, none
    invented); one line per table that does not."""
    problems = []
    with db.connect(dsn, connect_timeout=10) as conn:
        for table in carried.tables:
            try:
                rows, digest = key_checksum(conn, table.legacy, table.legacy_key, carried.schema)
            except psycopg.errors.UndefinedTable:
                problems.append(f"{carried.schema}.{table.legacy}: missing after the rollback")
                conn.rollback()
                continue
            if (rows, digest) != (table.rows, table.key_digest):
                problems.append(f"{carried.schema}.{table.legacy}: {rows} rows after the rollback, {table.rows} in "
                                f"{table.new} before it (keys differ: rows lost or invented)")
    return problems
