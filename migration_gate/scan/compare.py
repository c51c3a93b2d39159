"""Comparing a table in one database with its counterpart in another, inside PostgreSQL.

Both sides are cut into the same buckets: an integer key by key range (floor(key / CHUNK), so negative keys have
buckets of their own), any other key, or a composite one, by the md5 of its text into as many buckets as give
about CHUNK rows each. Each side's server computes, per bucket, counts and order-independent aggregates of its
row hashes; only buckets whose digests differ (or that hold a duplicated key) are drilled into, by fetching
per-row, per-column md5s of that bucket. Values never leave the servers, row order never matters, and a table is
never loaded into memory. The settings that change how values render as text are pinned on both sides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from migration_gate.core.errors import MigrationGateError
from migration_gate.db import connection as db
from migration_gate.scan import ranges

CHUNK = 10_000
RANGED = ranges.RANGED_KEYS  # key types bucketed by key range
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
    among: tuple | None = None  # only rows with these keys (a partial table's rows that have a legacy source)

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,) if isinstance(self.key, str) else tuple(self.key)

    @property
    def relation(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    def bound(self) -> sql.Composable:
        bounds: list[sql.Composable] = [sql.SQL("true")]
        if (self.max_key is not None or self.among is not None) and len(self.keys) != 1:
            raise ValueError(f"{self.schema}.{self.table}: max_key and among need a single key column")
        if self.max_key is not None:
            bounds.append(sql.SQL("{} <= {}").format(sql.Identifier(self.keys[0]), sql.Literal(self.max_key)))
        if self.among is not None:
            bounds.append(sql.SQL("{} = ANY({})").format(sql.Identifier(self.keys[0]), sql.Literal(list(self.among))))
        return sql.SQL(" AND ").join(bounds)


@dataclass
class Differences:
    missing: list[Any] = field(default_factory=list)  # keys only on the left (legacy) side
    extra: list[Any] = field(default_factory=list)  # keys only on the right (new) side
    columns: dict[str, list[Any]] = field(default_factory=dict)  # right-side column -> keys that differ
    duplicated: list[Any] = field(default_factory=list)  # keys present more than once on either side
    unexplained: list[Any] = field(default_factory=list)  # buckets whose digests differ but whose rows do not
    buckets_compared: int = 0
    buckets_drilled: int = 0
    left_rows: int = 0  # rows read on the left side (from its bucket digests)
    right_rows: int = 0  # rows read on the right side
    matched: int = 0  # rows found under the same key on both sides: in buckets whose digests agree, or drilled

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


@dataclass(frozen=True)
class Bucketing:
    """How both sides are cut into buckets: by key range (`buckets` None) or by key hash into `buckets` buckets.
    Recorded with a side's digests, so the other side is cut exactly the same way later."""

    chunk: int = CHUNK
    buckets: int | None = None
    # how a row's text becomes the 2 x 64 bits aggregated: "md5" (compare's, portable across servers), or
    # "hashtextextended" (PostgreSQL's own, about twice as fast: for digests both taken on one server)
    row_hash: str = "md5"

    @property
    def ranged(self) -> bool:
        return self.buckets is None

    @property
    def fast(self) -> bool:
        return self.row_hash == "hashtextextended"


class BucketingMismatch(MigrationGateError, ValueError):
    """A side cannot be cut the way the recorded digests were (its key type changed kind): compare in full."""


def plan(side: Side, chunk: int = CHUNK, row_hash: str = "md5") -> Bucketing:
    """The bucketing one side alone implies (at backup time the other side does not exist yet): by key range for
    a single integer key, else by hash into buckets of about `chunk` rows."""
    types = _key_types(side)
    if len(types) == 1 and types[0] in RANGED:
        return Bucketing(chunk, row_hash=row_hash)
    return Bucketing(chunk, _count(side) // chunk + 1, row_hash)


def _view(side: Side, kinds: list[str], bucketing: Bucketing, as_text: bool) -> _View:
    keys = [sql.Identifier(k) for k in side.keys]
    canonical = [_canonical(k, t) for k, t in zip(keys, kinds, strict=True)]
    if as_text:
        keys = canonical = [sql.SQL("{}::text").format(c) for c in canonical]
    # a field renders alike whether cast to text or not (record_out quotes the output text): the key text and
    # hash buckets do not depend on as_text, so digests recorded for one side alone still pair with the other
    text = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(canonical))
    if bucketing.ranged:  # floor division: div() and mod() truncate toward zero
        bucket = sql.SQL("div({k}, {n}) - (mod({k}, {n}) < 0)::int").format(k=keys[0], n=sql.Literal(bucketing.chunk))
    else:
        bucket = sql.SQL("('x' || substr(md5({}), 1, 15))::bit(60)::bigint % {}").format(
            text, sql.Literal(bucketing.buckets))
    return _View(side, keys, text, bucket, bucketing.chunk if bucketing.ranged else None)


def _one_view(side: Side, bucketing: Bucketing) -> _View:
    """One side cut as recorded digests were cut (BucketingMismatch when its key cannot be)."""
    kinds = _key_types(side)
    if bucketing.ranged and not (len(kinds) == 1 and kinds[0] in RANGED):
        raise BucketingMismatch(f"{side.schema}.{side.table}: key is no longer an integer")
    return _view(side, kinds, bucketing, as_text=False)


def _views(left: Side, right: Side, chunk: int, bucketing: Bucketing | None = None) -> tuple[_View, _View]:
    """Range buckets when both keys are single integer columns; else hash buckets, through text if types differ.
    With `bucketing` (recorded with digests), cut the same way or raise BucketingMismatch."""
    if len(left.keys) != len(right.keys):
        raise ValueError("both sides must have the same number of key columns")
    types = _key_types(left), _key_types(right)
    ranged = len(types[0]) == 1 and types[0][0] in RANGED and types[1][0] in RANGED
    as_text = not ranged and types[0] != types[1]
    if bucketing is None:
        bucketing = Bucketing(chunk, None if ranged else max(_count(left), _count(right)) // chunk + 1)
    elif bucketing.ranged != ranged:
        raise BucketingMismatch(f"{right.schema}.{right.table}: keys no longer bucket as recorded")
    return (_view(left, types[0], bucketing, as_text), _view(right, types[1], bucketing, as_text))


@contextmanager
def _pinned(*conns: psycopg.Connection) -> Iterator[None]:
    """Pin the rendering settings in a transaction (or savepoint) that is rolled back: nothing leaks to the caller."""
    with ExitStack() as stack:
        for conn in conns:
            stack.enter_context(conn.transaction(force_rollback=True))
            conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
                sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v)) for k, v in PINNED.items())))
        yield


Digest = tuple[int, int, int, int]  # rows, surplus key occurrences, sum and bit_xor of 64-bit row-hash slices
RowHash = Callable[[sql.Composable], sql.Composable]  # the key's text -> the row's text that is hashed, per row
MD5_AGGREGATES = sql.SQL("sum(('x' || substr({h}, 1, 16))::bit(64)::bigint::numeric), "
                         "bit_xor(('x' || substr({h}, 17, 16))::bit(64)::bigint)")
FAST_AGGREGATES = sql.SQL("sum(hashtextextended({h}, 0)::numeric), bit_xor(hashtextextended({h}, 1))")


def columns_hash(columns: Sequence[str]) -> RowHash:
    """The row text compare hashes: the key's text and these columns, as one record's text."""
    def row(text: sql.Composable) -> sql.Composable:
        # a row's text is made of its fields' texts: rows hash alike exactly when their drilled per-column md5s agree
        return sql.SQL("ROW({})::text").format(sql.SQL(", ").join([text, *map(sql.Identifier, columns)]))
    return row


def _digest_sets(view: _View, hashes: Mapping[str, RowHash], where: sql.Composable | None = None,
                 fast: frozenset[str] = frozenset()) -> dict[str, dict[int | None, Digest]]:
    """Per bucket and per row hash, in one scan of the side: the digests of each set of columns (those named in
    `fast` by hashtextextended, the others by md5, which Python can fold alike: `fold`)."""
    names = list(hashes)
    inner = sql.SQL(", ").join(sql.SQL("{} AS {}").format(
        hashes[n](view.text) if n in fast else sql.SQL("md5({})").format(hashes[n](view.text)),
        sql.Identifier(f"h{i}")) for i, n in enumerate(names))
    aggregates = sql.SQL(", ").join((FAST_AGGREGATES if n in fast else MD5_AGGREGATES).format(
        h=sql.Identifier(f"h{i}")) for i, n in enumerate(names))
    query = sql.SQL(
        "SELECT b, count(*), count(k) - count(DISTINCT k), {aggregates} "
        "FROM (SELECT {b} AS b, {k} AS k, {inner} FROM {t} WHERE {bound} AND {where}) r GROUP BY b").format(
        aggregates=aggregates, b=view.bucket, k=view.identity, inner=inner, t=view.side.relation,
        bound=view.side.bound(), where=where or sql.SQL("true"))
    found: dict[str, dict[int | None, Digest]] = {n: {} for n in names}
    for row in view.side.conn.execute(query):
        bucket = None if row[0] is None else int(row[0])
        for i, name in enumerate(names):
            found[name][bucket] = (row[1], row[2], int(row[3 + 2 * i]), int(row[4 + 2 * i]))
    return found


def _digests(view: _View, fast: bool = False) -> dict[int | None, Digest]:
    return _digest_sets(view, {"": columns_hash(view.side.columns)}, fast=frozenset({""} if fast else ()))[""]


def bucket_digests(side: Side, chunk: int = CHUNK, bucketing: Bucketing | None = None) -> dict[int | None, Digest]:
    """Per bucket: rows, surplus key occurrences, and two order-independent aggregates of the row hashes."""
    with _pinned(side.conn):
        if bucketing:
            return _digests(_one_view(side, bucketing), bucketing.fast)
        return _digests(_views(side, side, chunk)[0])


def workers() -> int:
    """Connections one table's digests are split over: the PHI checks' worker count (the machine's cores,
    GATE_WORKERS overrides), at most 8."""
    return min(ranges.worker_count(), 8)


def _clone(conn: psycopg.Connection) -> psycopg.Connection:
    """Another session to the same database as conn, with its credentials."""
    extra = {"password": conn.info.password} if conn.info.password else {}
    return db.connect(conn.info.dsn, autocommit=True, **extra)


def _splits(side: Side, bucketing: Bucketing, count: int) -> list[sql.Composable]:
    """Up to `count` key ranges of whole buckets covering the side (the first and last open-ended)."""
    key = sql.Identifier(side.keys[0])
    low, high = side.conn.execute(sql.SQL("SELECT min({k}), max({k}) FROM {t} WHERE {bound}").format(
        k=key, t=side.relation, bound=side.bound())).fetchone()
    if low is None:
        return [sql.SQL("true")]
    split = ranges.Buckets.aligned(low, high, bucketing.chunk, count)
    return [span.condition(side.keys[0]) for span in split.ranges()]


def digest_sets(side: Side, bucketing: Bucketing, hashes: Mapping[str, RowHash], parallel: int = 1,
                md5: frozenset[str] = frozenset()) -> dict[str, dict[int | None, Digest]]:
    """Several sets of bucket digests of one side in one scan (what the backup records for each check); the sets
    named in `md5` always by md5 (Python folds the other side's: `fold`), the rest as the bucketing says. With
    `parallel` > 1 and integer keys, whole buckets are split by key range over that many more sessions (each
    sees its own snapshot: for a side nobody writes meanwhile, the new tables inside the window)."""
    fast = frozenset(n for n in hashes if n not in md5) if bucketing.fast else frozenset()
    with _pinned(side.conn):
        view = _one_view(side, bucketing)
        splits = _splits(side, bucketing, parallel) if parallel > 1 and bucketing.ranged else []
        if len(splits) <= 1:
            return _digest_sets(view, hashes, fast=fast)

    def part(where: sql.Composable) -> dict[str, dict[int | None, Digest]]:
        with _clone(side.conn) as conn, _pinned(conn):
            return _digest_sets(_one_view(dataclasses.replace(side, conn=conn), bucketing), hashes, where, fast)
    found: dict[str, dict[int | None, Digest]] = {n: {} for n in hashes}
    with ThreadPoolExecutor(len(splits), thread_name_prefix="gate-digests") as pool:
        for result in pool.map(part, splits):
            for name, digests in result.items():
                found[name].update(digests)  # whole buckets per range: no bucket is in two
    return found


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


def key_order(key: Any) -> tuple:
    """Sorts keys (and buckets) that may be NULL, and composite keys that may hold NULLs."""
    return tuple((v is None, v) for v in (key if isinstance(key, tuple) else (key,)))


def _drill(left: _View, right: _View, bucket: int | None, diff: Differences) -> bool:
    """Record the differences in one bucket; False if there are none."""
    a, twice_a = _row_hashes(left, bucket)
    b, twice_b = _row_hashes(right, bucket)
    diff.matched += len(a.keys() & b.keys())
    found = (sorted(a.keys() - b.keys(), key=key_order), sorted(b.keys() - a.keys(), key=key_order),
             sorted(twice_a | twice_b, key=key_order))
    diff.missing.extend(found[0])
    diff.extra.extend(found[1])
    diff.duplicated.extend(found[2])
    changed = False
    for key in sorted(a.keys() & b.keys(), key=key_order):
        for i, column in enumerate(right.side.columns):
            if a[key][i] != b[key][i]:
                diff.columns[column].append(key)
                changed = True
    return changed or any(found)


def compare(left: Side, right: Side, chunk: int = CHUNK, bucketing: Bucketing | None = None,
            buckets: Sequence[int | None] | None = None) -> Differences:
    """Which keys are missing or extra, and which columns differ for which keys (left[i] pairs right[i]).
    bucketing: cut as recorded digests were; buckets: drill only these (known to differ), computing no digests."""
    if len(left.columns) != len(right.columns):
        raise ValueError("both sides must compare the same number of columns")
    diff = Differences(columns={c: [] for c in right.columns})
    with _pinned(left.conn, right.conn):
        views = _views(left, right, chunk, bucketing)
        if buckets is None:
            ours, theirs = _digests(views[0]), _digests(views[1])
            buckets = differing(ours, theirs)
            _tally(diff, ours, theirs, buckets)
        for bucket in buckets:
            diff.buckets_drilled += 1
            if not _drill(*views, bucket, diff):
                diff.unexplained.append(bucket)
    return diff


def _tally(diff: Differences, ours: Mapping[int | None, Digest], theirs: Mapping[int | None, Digest],
           drilled: Sequence[int | None]) -> None:
    """Rows read on each side, and the rows of the buckets whose digests agree as matched (the drilled buckets add
    theirs key by key in _drill)."""
    diff.buckets_compared = len(set(ours) | set(theirs))
    diff.left_rows = sum(d[0] for d in ours.values())
    diff.right_rows = sum(d[0] for d in theirs.values())
    skip = set(drilled)
    diff.matched += sum(d[0] for b, d in ours.items() if b not in skip)


def differing(ours: Mapping[int | None, Digest], theirs: Mapping[int | None, Digest]) -> list[int | None]:
    """Buckets whose digests differ, or that hold a duplicated key (equal digests cannot show it)."""
    return [b for b in sorted(set(ours) | set(theirs), key=key_order)
            if ours.get(b) != theirs.get(b) or ours[b][1]]


def compare_recorded(recorded: Mapping[int | None, Digest], bucketing: Bucketing, right: Side,
                     left: Callable[[], Side], theirs: Mapping[int | None, Digest] | None = None) -> Differences:
    """The right side against digests recorded for the left side in the backup's snapshot: equal buckets pass
    without touching the left side; only when some differ is `left` called (the backup restored) and only those
    buckets are drilled into. theirs: the right side's digests if already taken (digest_sets), else taken here.
    BucketingMismatch when the right side cannot be cut as recorded."""
    if theirs is None:
        with _pinned(right.conn):
            theirs = _digests(_one_view(right, bucketing), bucketing.fast)
    buckets = differing(recorded, theirs)
    diff = (compare(left(), right, bucketing.chunk, bucketing, buckets) if buckets
            else Differences(columns={c: [] for c in right.columns}))
    _tally(diff, recorded, theirs, buckets)
    return diff


def keyed_rows(side: Side, bucketing: Bucketing, name: str) -> Iterator[tuple]:
    """(bucket, key text, key, *columns) of every row in key order, streamed by a server-side cursor: for row hashes
    that only Python can compute (of decrypted values), folded into digests by `fold`. Call inside a transaction."""
    view = _one_view(side, bucketing)
    query = sql.SQL("SELECT {b}, {text}, {k}, {cols} FROM {t} WHERE {bound} ORDER BY {order}").format(
        b=view.bucket, text=view.text, k=view.identity,
        order=ranges.binary_order(side.conn, side.schema, side.table, side.keys),
        cols=sql.SQL(", ").join(map(sql.Identifier, side.columns)), t=side.relation, bound=side.bound())
    side.conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v)) for k, v in PINNED.items())))
    with side.conn.cursor(name=name) as cur:
        cur.itersize = 2_000
        cur.execute(query)
        yield from cur


def _signed(hex16: str) -> int:
    value = int(hex16, 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def fold(rows: Iterator[tuple[int | None, Any, str]]) -> dict[int | None, Digest]:
    """(bucket, key, md5 hex) rows in key order into the digests _digest_sets computes in SQL for the same hashes."""
    found: dict[int | None, list[int]] = {}
    last: dict[int | None, Any] = {}
    for bucket, key, h in rows:
        d = found.setdefault(bucket, [0, 0, 0, 0])
        d[0] += 1
        if key is not None and bucket in last and last[bucket] == key:
            d[1] += 1
        last[bucket] = key
        d[2] += _signed(h[:16])
        d[3] ^= _signed(h[16:32])
    return {b: (n, dup, s, x) for b, (n, dup, s, x) in found.items()}


def bucket_filter(side: Side, bucketing: Bucketing, buckets: Sequence[int | None]) -> sql.Composable:
    """The rows of these buckets on this side (key ranges when ranged, so an index on the key serves them)."""
    view = _one_view(side, bucketing)
    parts: list[sql.Composable] = []
    for bucket in buckets:
        if bucket is not None and view.chunk:
            parts.append(sql.SQL("({k} >= {lo} AND {k} < {hi})").format(
                k=view.keys[0], lo=sql.Literal(bucket * view.chunk), hi=sql.Literal((bucket + 1) * view.chunk)))
        else:
            parts.append(sql.SQL("({} IS NOT DISTINCT FROM {})").format(view.bucket, sql.Literal(bucket)))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(parts)) if parts else sql.SQL("false")
