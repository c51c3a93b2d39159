"""Comparing a table in one database with its counterpart in another, inside PostgreSQL.

Both sides are cut into the same buckets: an integer key by key range (floor(key / CHUNK), so negative keys have
buckets of their own), any other key, or a composite one, by the md5 of its text into as many buckets as give
about CHUNK rows each. Each side's server computes, per bucket, counts and order-independent aggregates of its
row hashes; only buckets whose digests differ (or that hold a duplicated key) are drilled into, by fetching
per-row, per-column md5s of that bucket. Values never leave the servers, row order never matters, and a table is
never loaded into memory. The settings that change how values render as text are pinned on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

CHUNK = 10_000
RANGED = frozenset({"smallint", "integer", "bigint", "numeric"})  # key types bucketed by key range
PINNED = {"DateStyle": "ISO, YMD", "TimeZone": "UTC", "IntervalStyle": "postgres", "extra_float_digits": "3",
          "bytea_output": "hex"}  # both sides render values as text the same way, whatever their defaults


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a table, its key column (or columns), and the columns in comparison order."""

    conn: psycopg.Connection
    table: str
    key: str | Sequence[str]
    columns: Sequence[str]
    max_key: int | None = None  # only rows up to this key (append-only tables: rows written later are not compared)
    schema: str = "public"

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,) if isinstance(self.key, str) else tuple(self.key)

    @property
    def relation(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    def bound(self) -> sql.Composable:
        if self.max_key is None:
            return sql.SQL("true")
        if len(self.keys) != 1:
            raise ValueError(f"{self.schema}.{self.table}: max_key needs a single key column")
        return sql.SQL("{} <= {}").format(sql.Identifier(self.keys[0]), sql.Literal(self.max_key))


@dataclass
class Differences:
    missing: list[Any] = field(default_factory=list)  # keys only on the left (legacy) side
    extra: list[Any] = field(default_factory=list)  # keys only on the right (new) side
    columns: dict[str, list[Any]] = field(default_factory=dict)  # right-side column -> keys that differ
    duplicated: list[Any] = field(default_factory=list)  # keys present more than once on either side
    unexplained: list[Any] = field(default_factory=list)  # buckets whose digests differ but whose rows do not
    buckets_compared: int = 0
    buckets_drilled: int = 0

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.duplicated or self.unexplained or any(self.columns.values()))


@dataclass(frozen=True)
class _View:
    """One side as both sides agreed to bucket and identify rows."""

    side: Side
    keys: list[sql.Composable]  # the key columns as fetched (as text on both sides when their types differ)
    text: sql.Composable  # the key as canonical text, part of every row hash
    bucket: sql.Composable
    chunk: int | None  # the key range of a bucket; None: buckets by hash

    @property
    def identity(self) -> sql.Composable:
        return self.keys[0] if len(self.keys) == 1 else sql.SQL("ROW({})").format(sql.SQL(", ").join(self.keys))

    def hashes(self) -> list[sql.Composable]:
        return [sql.SQL("md5(ROW({})::text)").format(sql.Identifier(c)) for c in self.side.columns]


def _key_types(side: Side) -> list[str]:
    query = sql.SQL(
        "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {} AND c.relname = {} AND a.attnum > 0 "
        "AND NOT a.attisdropped").format(sql.Literal(side.schema), sql.Literal(side.table))
    types = dict(side.conn.execute(query).fetchall())
    for key in side.keys:
        if key not in types:
            raise ValueError(f"{side.schema}.{side.table} has no key column {key}")
    return [types[k] for k in side.keys]


def _canonical(column: sql.Composable, type_: str) -> sql.Composable:
    """A numeric key without trailing zeros: 5.0 and 5 are one key (Python says so too when rows are drilled)."""
    if type_ != "numeric":
        return column
    return sql.SQL("CASE WHEN strpos({c}::text, '.') > 0 THEN rtrim(rtrim({c}::text, '0'), '.') "
                   "ELSE {c}::text END").format(c=column)


def _count(side: Side) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(side.relation, side.bound())
    return side.conn.execute(query).fetchone()[0]


def _views(left: Side, right: Side, chunk: int) -> tuple[_View, _View]:
    """Range buckets when both keys are single integer columns; else hash buckets, through text if types differ."""
    if len(left.keys) != len(right.keys):
        raise ValueError("both sides must have the same number of key columns")
    types = _key_types(left), _key_types(right)
    ranged = len(types[0]) == 1 and types[0][0] in RANGED and types[1][0] in RANGED
    as_text = not ranged and types[0] != types[1]
    buckets = 1 if ranged else max(_count(left), _count(right)) // chunk + 1
    views = []
    for side, kinds in zip((left, right), types, strict=True):
        keys = [sql.Identifier(k) for k in side.keys]
        canonical = [_canonical(k, t) for k, t in zip(keys, kinds, strict=True)]
        if as_text:
            keys = canonical = [sql.SQL("{}::text").format(c) for c in canonical]
        text = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(canonical))
        if ranged:  # floor division: div() and mod() truncate toward zero
            bucket = sql.SQL("div({k}, {n}) - (mod({k}, {n}) < 0)::int").format(k=keys[0], n=sql.Literal(chunk))
        else:
            bucket = sql.SQL("('x' || substr(md5({}), 1, 15))::bit(60)::bigint % {}").format(
                text, sql.Literal(buckets))
        views.append(_View(side, keys, text, bucket, chunk if ranged else None))
    return views[0], views[1]


@contextmanager
def _pinned(*conns: psycopg.Connection) -> Iterator[None]:
    """Pin the rendering settings in a transaction (or savepoint) that is rolled back: nothing leaks to the caller."""
    with ExitStack() as stack:
        for conn in conns:
            stack.enter_context(conn.transaction(force_rollback=True))
            conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
                sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v)) for k, v in PINNED.items())))
        yield


def _digests(view: _View) -> dict[int | None, tuple[int, int, int, int]]:
    # a row's text is made of its fields' texts: rows hash alike exactly when their drilled per-column md5s agree
    row = sql.SQL(", ").join([view.text, *map(sql.Identifier, view.side.columns)])
    query = sql.SQL(
        "SELECT b, count(*), count(k) - count(DISTINCT k), sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), "
        "bit_xor(('x' || substr(h, 17, 16))::bit(64)::bigint) "
        "FROM (SELECT {b} AS b, {k} AS k, md5(ROW({row})::text) AS h FROM {t} WHERE {bound}) r GROUP BY b").format(
        b=view.bucket, k=view.identity, row=row, t=view.side.relation, bound=view.side.bound())
    return {None if b is None else int(b): (n, d, s, x) for b, n, d, s, x in view.side.conn.execute(query)}


def bucket_digests(side: Side, chunk: int = CHUNK) -> dict[int | None, tuple[int, int, int, int]]:
    """Per bucket: rows, surplus key occurrences, and two order-independent aggregates of the row hashes."""
    with _pinned(side.conn):
        return _digests(_views(side, side, chunk)[0])


def _row_hashes(view: _View, bucket: int | None) -> tuple[dict[Any, tuple[str, ...]], set[Any]]:
    """Per-column md5s of one bucket's rows by key, and the keys seen more than once."""
    if bucket is not None and view.chunk:  # a key range, so an index on the key serves it
        where = sql.SQL("{k} >= {lo} AND {k} < {hi}").format(
            k=view.keys[0], lo=sql.Literal(bucket * view.chunk), hi=sql.Literal((bucket + 1) * view.chunk))
    else:
        where = sql.SQL("{} IS NOT DISTINCT FROM {}").format(view.bucket, sql.Literal(bucket))
    query = sql.SQL("SELECT {} FROM {} WHERE {} AND {}").format(
        sql.SQL(", ").join([*view.keys, *view.hashes()]), view.side.relation, where, view.side.bound())
    n = len(view.keys)
    rows: dict[Any, tuple[str, ...]] = {}
    duplicated = set()
    for row in view.side.conn.execute(query):
        key = row[0] if n == 1 else tuple(row[:n])
        if key in rows:
            duplicated.add(key)
        rows[key] = tuple(row[n:])
    return rows, duplicated


def _order(key: Any) -> tuple:
    """Sorts keys that may be NULL, and composite keys that may hold NULLs."""
    return tuple((v is None, v) for v in (key if isinstance(key, tuple) else (key,)))


def _drill(left: _View, right: _View, bucket: int | None, diff: Differences) -> bool:
    """Record the differences in one bucket; False if there are none."""
    a, twice_a = _row_hashes(left, bucket)
    b, twice_b = _row_hashes(right, bucket)
    found = (sorted(a.keys() - b.keys(), key=_order), sorted(b.keys() - a.keys(), key=_order),
             sorted(twice_a | twice_b, key=_order))
    diff.missing.extend(found[0])
    diff.extra.extend(found[1])
    diff.duplicated.extend(found[2])
    changed = False
    for key in sorted(a.keys() & b.keys(), key=_order):
        for i, column in enumerate(right.side.columns):
            if a[key][i] != b[key][i]:
                diff.columns[column].append(key)
                changed = True
    return changed or any(found)


def compare(left: Side, right: Side, chunk: int = CHUNK) -> Differences:
    """Which keys are missing or extra, and which columns differ for which keys (left[i] pairs right[i])."""
    if len(left.columns) != len(right.columns):
        raise ValueError("both sides must compare the same number of columns")
    diff = Differences(columns={c: [] for c in right.columns})
    with _pinned(left.conn, right.conn):
        views = _views(left, right, chunk)
        ours, theirs = _digests(views[0]), _digests(views[1])
        buckets = sorted(set(ours) | set(theirs), key=_order)
        diff.buckets_compared = len(buckets)
        for bucket in buckets:
            digest = ours.get(bucket)
            if digest == theirs.get(bucket) and not digest[1]:
                continue
            diff.buckets_drilled += 1
            if not _drill(*views, bucket, diff):
                diff.unexplained.append(bucket)
    return diff
