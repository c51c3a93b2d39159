"""Comparing a table in one database with its counterpart in another, inside PostgreSQL.

Both sides are cut into key ranges (buckets of CHUNK keys). Each side's server computes, per bucket, a count
and order-independent aggregates of its row hashes; only buckets whose digests differ are drilled into, by
fetching per-row, per-column md5s of that key range. Values never leave the servers, row order never matters,
and a table is never loaded into memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

CHUNK = 10_000


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a table, its key column, and the columns in comparison order."""

    conn: psycopg.Connection
    table: str
    key: str
    columns: Sequence[str]
    max_key: int | None = None  # only rows up to this key (append-only tables: rows written later are not compared)

    def bound(self) -> sql.Composable:
        if self.max_key is None:
            return sql.SQL("true")
        return sql.SQL("{} <= {}").format(sql.Identifier(self.key), sql.Literal(self.max_key))


@dataclass
class Differences:
    missing: list[int] = field(default_factory=list)  # keys only on the left (legacy) side
    extra: list[int] = field(default_factory=list)  # keys only on the right (new) side
    columns: dict[str, list[int]] = field(default_factory=dict)  # right-side column -> keys that differ
    duplicated: list[int] = field(default_factory=list)  # keys present more than once on either side
    buckets_compared: int = 0
    buckets_drilled: int = 0

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.duplicated or any(self.columns.values()))


def _row_text(columns: Sequence[str], key: str) -> sql.Composed:
    return sql.SQL("md5(ROW({}, {})::text)").format(
        sql.Identifier(key), sql.SQL(", ").join(sql.Identifier(c) for c in columns) if columns else sql.SQL("0"))


def bucket_digests(side: Side, chunk: int = CHUNK) -> dict[int, tuple[int, int, int]]:
    h = _row_text(side.columns, side.key)
    query = sql.SQL(
        "SELECT div({k}, {n}) AS b, count(*), "
        "sum(('x' || substr({h}, 1, 16))::bit(64)::bigint::numeric), "
        "bit_xor(('x' || substr({h}, 17, 16))::bit(64)::bigint) FROM {t} WHERE {bound} GROUP BY b").format(
        k=sql.Identifier(side.key), n=sql.Literal(chunk), h=h, t=sql.Identifier(side.table), bound=side.bound())
    return {b: (n, s, x) for b, n, s, x in side.conn.execute(query)}


def _row_hashes(side: Side, bucket: int, chunk: int, duplicated: list[int]) -> dict[int, tuple[str, ...]]:
    per_column = sql.SQL(", ").join(sql.SQL("md5(ROW({})::text)").format(sql.Identifier(c)) for c in side.columns)
    query = sql.SQL("SELECT {k}{sep}{cols} FROM {t} WHERE {k} >= {lo} AND {k} < {hi} AND {bound}").format(
        k=sql.Identifier(side.key), sep=sql.SQL(", ") if side.columns else sql.SQL(""), cols=per_column,
        t=sql.Identifier(side.table), lo=sql.Literal(bucket * chunk), hi=sql.Literal((bucket + 1) * chunk),
        bound=side.bound())
    rows: dict[int, tuple[str, ...]] = {}
    for row in side.conn.execute(query):
        if row[0] in rows:
            duplicated.append(row[0])
        rows[row[0]] = tuple(row[1:])
    return rows


def compare(left: Side, right: Side, chunk: int = CHUNK) -> Differences:
    """Which keys are missing or extra, and which columns differ for which keys (left[i] pairs right[i])."""
    if len(left.columns) != len(right.columns):
        raise ValueError("both sides must compare the same number of columns")
    diff = Differences(columns={c: [] for c in right.columns})
    ours, theirs = bucket_digests(left, chunk), bucket_digests(right, chunk)
    buckets = sorted(set(ours) | set(theirs))
    diff.buckets_compared = len(buckets)
    for bucket in buckets:
        if ours.get(bucket) == theirs.get(bucket):
            continue
        diff.buckets_drilled += 1
        a = _row_hashes(left, bucket, chunk, diff.duplicated)
        b = _row_hashes(right, bucket, chunk, diff.duplicated)
        diff.missing.extend(sorted(set(a) - set(b)))
        diff.extra.extend(sorted(set(b) - set(a)))
        for key in sorted(set(a) & set(b)):
            for i, column in enumerate(right.columns):
                if a[key][i] != b[key][i]:
                    diff.columns[column].append(key)
    return diff
