"""Key ranges of a table and chunk sizes from a time budget: how one scan is split over several connections and
processes, and how much each fetch takes, so that no worker holds a table and every chunk takes about as long
whatever a row costs.

A table with a numeric key (RANGED_KEYS) is cut into ranges of equal key width between its smallest and largest
key; the first and the last range are open, so rows written outside [min, max] after the split are still in some
range. Any other key is one range: the whole table. Buckets is the one key-range split: the PHI scan's buckets start
at the smallest key (buckets()); scan/compare's parallel sessions take whole compare buckets, so theirs start on a
multiple of the compare bucket's width (Buckets.aligned()).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from migration_gate.config.environment import variable
from migration_gate.core.errors import MigrationGateError
from migration_gate.db import sizes
from migration_gate.db.catalog import Catalog

# What a key cut by key range is, for every split (the PHI scan's and scan/compare's): one column of a type whose
# values order as numbers (a numeric key too: 5.0 and 5 are one key, and its ranges hold fractions).
RANGED_KEYS = frozenset({"smallint", "integer", "bigint", "numeric"})
WORKERS_ENV = "GATE_WORKERS"
CHUNK_SECONDS = 0.5  # the time budget of one fetch
FIRST_CHUNK = 2_000  # rows of the first fetch, before anything is measured
PARALLEL_FROM_BYTES = 8 * 1024 * 1024  # smaller tables are read in the checking process itself
MOST_VALUES = 100_000  # never more values than this in memory at once per process, however fast they go


class WorkersError(MigrationGateError, ValueError):
    """GATE_WORKERS is not a positive integer."""


@dataclass(frozen=True)
class KeyRange:
    """Keys from `low` (inclusive) to `high` (exclusive); None is open on that side."""

    low: int | None = None
    high: int | None = None

    def condition(self, key: str) -> sql.Composable:
        parts = []
        if self.low is not None:
            parts.append(sql.SQL("{k} >= {v}").format(k=sql.Identifier(key), v=sql.Literal(self.low)))
        if self.high is not None:
            parts.append(sql.SQL("{k} < {v}").format(k=sql.Identifier(key), v=sql.Literal(self.high)))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    def __str__(self) -> str:
        return f"[{'' if self.low is None else self.low}, {'' if self.high is None else self.high})"


@dataclass(frozen=True)
class Buckets:
    """`count` ranges of `width` keys from `low` (the first and the last open): a table's split, recorded so that
    another table with the same keys (the migrated one) can be split the same way."""

    low: int = 0
    width: int = 1
    count: int = 1

    @classmethod
    def aligned(cls, low: float, high: float, unit: int, most: int) -> Buckets:
        """At most `most` ranges of whole units of `unit` keys (floor division: unit k holds keys from k * unit)
        covering [low, high], each the same number of units: another split's buckets are never cut in two."""
        first, last = math.floor(low) // unit, math.floor(high) // unit
        per = -(-(last - first + 1) // max(1, most))
        return cls(first * unit, per * unit, -(-(last - first + 1) // per))

    def ranges(self) -> list[KeyRange]:
        if self.count <= 1:
            return [KeyRange()]
        edges = [self.low + i * self.width for i in range(1, self.count)]
        return [KeyRange(None if i == 0 else edges[i - 1], edges[i] if i < len(edges) else None)
                for i in range(self.count)]

    def index(self, key: str) -> sql.Composable:
        """SQL for the bucket number of a row (0 .. count-1), the same as ranges()."""
        if self.count <= 1:
            return sql.SQL("0")
        return sql.SQL("least(greatest(floor(({k}::numeric - {low}) / {w}), 0), {last})::int").format(
            k=sql.Identifier(key), low=sql.Literal(self.low), w=sql.Literal(self.width),
            last=sql.Literal(self.count - 1))

    def to_json(self) -> dict:
        return {"low": self.low, "width": self.width, "count": self.count}

    @classmethod
    def from_json(cls, data: dict) -> Buckets:
        return cls(int(data["low"]), int(data["width"]), int(data["count"]))


def binary_order(conn: psycopg.Connection, schema: str, table: str, keys: Iterable[str]) -> sql.Composable:
    """An ORDER BY list of these key columns in a binary order: each collatable one COLLATE "C" (byte order, which
    for UTF-8 is Python's str order), whatever the database's or the column's collation. Two sides read in key
    order and merged in Python agree on the order only so (en-US puts `lc-1` before `LC-1`, C after)."""
    keys = list(keys)
    found = dict(conn.execute(
        "SELECT a.attname, a.attcollation <> 0 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
        "AND a.attname = ANY(%s) AND NOT a.attisdropped", (schema, table, keys)).fetchall())
    return sql.SQL(", ").join(
        sql.SQL('{} COLLATE "C"').format(sql.Identifier(k)) if found.get(k) else sql.Identifier(k) for k in keys)


def worker_count(requested: int | None = None) -> int:
    """How many processes: `requested`, else GATE_WORKERS, else the machine's cores."""
    if requested is not None:
        return max(1, int(requested))
    text = (variable(WORKERS_ENV) or "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise WorkersError(f"{WORKERS_ENV} must be a positive integer, got {len(text)} characters")
        return int(text)
    return os.cpu_count() or 1


def workers_for(conn: psycopg.Connection, schema: str, tables: Iterable[str], requested: int | None = None) -> int:
    """worker_count(), but one (this process) when nobody asked for more and the tables are smaller than
    PARALLEL_FROM_BYTES: starting a pool costs more than such tables take to read."""
    if requested is not None or (variable(WORKERS_ENV) or "").strip():
        return worker_count(requested)
    found = (sizes.table_size(conn, schema, table, count_below=0) for table in tables)  # bytes only: no count
    size = sum(f.data_bytes for f in found if f is not None)
    return 1 if size < PARALLEL_FROM_BYTES else worker_count()


def integer_key(catalog: Catalog, schema: str, table: str, key: str) -> bool:
    found = catalog.table(table, schema)
    column = found.columns.get(key) if found else None
    return column is not None and column.type in RANGED_KEYS


def buckets(conn: psycopg.Connection, schema: str, table: str, key: str, integer: bool, rows_per_bucket: int,
            most: int = 1024, scope: sql.Composable | None = None) -> Buckets:
    """Equal-width buckets of about `rows_per_bucket` keys over the table's key span (one bucket for a key that is
    not an integer, or an empty table)."""
    if not integer:
        return Buckets()
    where = scope if scope is not None else sql.SQL("true")
    low, high = conn.execute(sql.SQL("SELECT min({k}), max({k}) FROM {t} WHERE {w}").format(
        k=sql.Identifier(key), t=sql.Identifier(schema, table), w=where)).fetchone()
    if low is None:
        return Buckets()
    span = int(high) - int(low) + 1
    count = max(1, min(most, math.ceil(span / max(1, rows_per_bucket))))
    return Buckets(int(low), math.ceil(span / count), count)


class ChunkSizer:
    """Rows per fetch from the rate measured so far, so that one fetch (and its work) takes about `budget` seconds."""

    def __init__(self, budget: float = CHUNK_SECONDS, first: int = FIRST_CHUNK, columns: int = 1) -> None:
        self.budget, self.most = budget, max(100, MOST_VALUES // max(1, columns))
        self.size = min(first, self.most)
        self._started = time.perf_counter()

    def start(self) -> int:
        self._started = time.perf_counter()
        return self.size

    def done(self, rows: int) -> None:
        """The last chunk held `rows` rows: size the next one from its rate."""
        seconds = time.perf_counter() - self._started
        if rows >= self.size and seconds > 0:
            self.size = max(100, min(self.most, int(rows / seconds * self.budget)))
