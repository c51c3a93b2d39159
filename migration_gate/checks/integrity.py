"""The new schema against the legacy data as it was at backup time.

Given a baseline_digests.Baseline, each check first compares the new side with the digests recorded in the
backup's snapshot (counts, per-bucket digests, PHI ciphertext and salted plaintext digests): equal, it is green
without touching the legacy data; different, the backup is restored (once) and only the differing buckets are
drilled into, so the message names tables, keys and columns as before. Given a connection (a restored copy),
counts and row correspondence run inside PostgreSQL on both sides (migration_gate.scan.compare); PHI is compared
after decryption in one streaming pass per table that walks both sides in key order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import psycopg
from psycopg import sql

from migration_gate.backup.digests import Baseline, MappingDigests, grouped_counts, groupings, plain_row_hash, salt
from migration_gate.checks import catalog_of, missing
from migration_gate.config import TableMap
from migration_gate.core.phi import CiphertextFormatError, DecryptionError, PhiCodec
from migration_gate.core.result import Result, first_ids
from migration_gate.db.catalog import Catalog
from migration_gate.scan import compare as engine
from migration_gate.scan.compare import BucketingMismatch, Differences, Side, compare, compare_recorded
from migration_gate.scan.ranges import binary_order

BATCH = 2_000
RECORDED = "compared with the digests recorded in the backup's snapshot"
Legacy = psycopg.Connection | Baseline  # a restored copy, or the recorded digests with one on demand


def _count(side: Side) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(side.schema, side.table), side.bound())
    return side.conn.execute(query).fetchone()[0]


def _grouped(side: Side, column: str) -> dict:
    query = sql.SQL("SELECT {c}, count(*) FROM {t} WHERE {bound} GROUP BY 1").format(
        c=sql.Identifier(column), t=sql.Identifier(side.schema, side.table), bound=side.bound())
    return dict(side.conn.execute(query).fetchall())


def present(result: Result, baseline: psycopg.Connection | Catalog | Baseline, target: psycopg.Connection | Catalog,
            mapping: TableMap, schema: str, old_columns: Sequence[str] = (), new_columns: Sequence[str] = ()) -> bool:
    """Both tables and the columns about to be compared exist; each one missing is a finding, not a crash."""
    if isinstance(baseline, Baseline):
        baseline = baseline.catalog()
    gone = missing(result, catalog_of(baseline, schema), schema, mapping.legacy, [mapping.source_key, *old_columns])
    gone |= missing(result, catalog_of(target, schema), schema, mapping.new, [mapping.key, *new_columns])
    return not gone


def sides(baseline: psycopg.Connection, target: psycopg.Connection, mapping: TableMap,
          old_columns: Sequence[str] = (), new_columns: Sequence[str] = (), schema: str = "public"
          ) -> tuple[Side, Side]:
    """The legacy and new side of a mapping; an append-only table is compared up to the baseline's last key."""
    left = Side(baseline, mapping.legacy, mapping.source_key, list(old_columns), schema=schema)
    limit = None
    if mapping.append_only:
        limit = baseline.execute(sql.SQL("SELECT coalesce(max({}), 0) FROM {}").format(
            sql.Identifier(mapping.source_key), sql.Identifier(schema, mapping.legacy))).fetchone()[0]
    return left, Side(target, mapping.new, mapping.key, list(new_columns), max_key=limit, schema=schema)


def _counts_recorded(recorded: MappingDigests, target: psycopg.Connection, mapping: TableMap,
                     schema: str) -> Result | None:
    """Counts against the recorded ones: the result when all agree, else None (the restored copy decides)."""
    right = Side(target, mapping.new, mapping.key, [], max_key=recorded.max_key, schema=schema)
    groups = [] if mapping.partial else [(label, new) for label, _, new in groupings(mapping)]
    after, found = grouped_counts(right, groups)
    if (after < recorded.rows) if mapping.partial else (after != recorded.rows):
        return None
    if any(found[label] != recorded.groups.get(label) for label, _ in groups):
        return None
    result = Result(f"{mapping.legacy} -> {mapping.new}: row counts")
    result.checked = recorded.rows
    result.notes.append(RECORDED)
    return result


def counts(baseline: Legacy, target: psycopg.Connection, mapping: TableMap, schema: str = "public") -> Result:
    """Exact row counts, soft-deleted rows included: in total, per owner, per deleted flag and per value of each
    count_by column of the description."""
    result = Result(f"{mapping.legacy} -> {mapping.new}: row counts")
    groups = groupings(mapping)
    if not present(result, baseline, target, mapping, schema, [g[1] for g in groups], [g[2] for g in groups]):
        return result
    if isinstance(baseline, Baseline):
        recorded = baseline.of(mapping)
        agreed = _counts_recorded(recorded, target, mapping, schema) if recorded else None
        if agreed is not None:
            return agreed
        baseline = baseline.connection()
    left, right = sides(baseline, target, mapping, schema=schema)
    before, after = _count(left), _count(right)
    result.checked = before
    if mapping.partial:
        if after < before:
            result.add(f"{mapping.new}: {after} rows, fewer than the {before} legacy {mapping.legacy} rows it maps")
        return result
    if before != after:
        result.add(f"{mapping.new}: {after} rows, legacy {mapping.legacy} had {before}")
    for label, legacy_column, new_column in groups:
        old, new = _grouped(left, legacy_column), _grouped(right, new_column)
        differing = sorted((k for k in set(old) | set(new) if old.get(k, 0) != new.get(k, 0)), key=str)
        if differing:
            what = first_ids(differing) if label == "owner" else f"{len(differing)} values"
            result.add(f"{mapping.new}: counts per {label} differ for {len(differing)} groups ({what})")
    return result


def _differences(result: Result, baseline: Legacy, target: psycopg.Connection, mapping: TableMap, name: str,
                 pairs: list[tuple[str, str]], schema: str) -> Differences:
    """The mapping's differences over these column pairs: against the recorded digests when there are some for
    exactly these pairs (the restored copy only for the buckets that differ), else against the restored copy."""
    old, new = [o for o, _ in pairs], [n for _, n in pairs]
    if isinstance(baseline, Baseline):
        recorded = baseline.of(mapping)
        buckets = recorded.buckets(name, pairs) if recorded else None
        if buckets is not None:
            among = tuple(recorded.among) if recorded.among is not None else None
            right = Side(target, mapping.new, mapping.key, new, max_key=recorded.max_key, schema=schema, among=among)
            try:
                diff = compare_recorded(buckets, recorded.cut(), right, lambda: Side(
                    baseline.connection(), mapping.legacy, mapping.source_key, old, schema=schema),
                    baseline.new_side(target, mapping, schema, name))
            except BucketingMismatch:
                pass
            else:
                result.notes.append(RECORDED + (f"; {diff.buckets_drilled} key ranges differed and were compared "
                                                "with the restored backup" if diff.buckets_drilled else ""))
                return diff
        baseline = baseline.connection()
    return compare(*sides(baseline, target, mapping, old, new, schema=schema))


def rows_correspond(baseline: Legacy, target: psycopg.Connection, mapping: TableMap,
                    schema: str = "public") -> Result:
    """Every legacy row maps to exactly one new row, and no new row lacks a legacy source."""
    result = Result(f"{mapping.legacy} -> {mapping.new}: one new row per legacy row")
    if not present(result, baseline, target, mapping, schema):
        return result
    diff = _differences(result, baseline, target, mapping, "rows", [], schema)
    result.checked = diff.buckets_compared
    _tally(result, mapping, diff)
    if diff.missing:
        result.add(f"{mapping.new}: {len(diff.missing)} legacy rows have no new row ({first_ids(diff.missing)})")
    _unexplained(result, mapping, diff)
    if diff.extra and not mapping.partial:
        result.add(f"{mapping.new}: {len(diff.extra)} new rows have no legacy source ({first_ids(diff.extra)})")
    if diff.duplicated:
        result.add(f"{mapping.new}: {len(diff.duplicated)} keys appear more than once ({first_ids(diff.duplicated)})")
    return result


def _tally(result: Result, mapping: TableMap, diff: Differences) -> None:
    result.tally(mapping.new, diff.left_rows, diff.right_rows, diff.matched, new_may_exceed=mapping.partial)


def _unexplained(result: Result, mapping: TableMap, diff) -> None:
    buckets = diff.unexplained
    if buckets:
        result.add(f"{mapping.new}: digests differ in {len(buckets)} key ranges, rows not found (buckets "
                   f"{', '.join(str(b) for b in buckets[:5])})")


def columns_equal(baseline: Legacy, target: psycopg.Connection, mapping: TableMap,
                  only: list[str] | None = None, check: str | None = None, schema: str = "public") -> Result:
    """Every mapped non-PHI column equal after the mapping (money, dates, flags, statuses, names, links)."""
    pairs = [(old, new) for old, new in mapping.columns.items() if only is None or new in only]
    result = Result(check or f"{mapping.legacy} -> {mapping.new}: non-PHI columns equal")
    if not present(result, baseline, target, mapping, schema, [o for o, _ in pairs], [n for _, n in pairs]):
        return result
    name = "columns" if only is None else "relationships"
    diff = _differences(result, baseline, target, mapping, name, pairs, schema)
    result.checked = _count(Side(target, mapping.new, mapping.key, [], schema=schema)) * len(pairs)
    _tally(result, mapping, diff)
    _unexplained(result, mapping, diff)
    for column, keys in diff.columns.items():
        if keys:
            result.add(f"{mapping.new}.{column}: {len(keys)} rows differ from the legacy value ({first_ids(keys)})")
    return result


def _ordered(conn: psycopg.Connection, schema: str, table: str, key: str, columns: list[str], name: str,
             where: sql.Composable | None = None):
    """The rows in a binary key order (ranges.binary_order): the order Python's comparison of the keys agrees with,
    whatever the two databases' collations."""
    query = sql.SQL("SELECT {k}, {cols} FROM {t} WHERE {w} ORDER BY {order}").format(
        k=sql.Identifier(key), cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        t=sql.Identifier(schema, table), w=where or sql.SQL("true"),
        order=binary_order(conn, schema, table, [key]))
    cur = conn.cursor(name=name)
    cur.itersize = BATCH
    cur.execute(query)
    return cur


class _Counted:
    """A cursor read row by row, counting what it read (a comparison says how much it read on each side)."""

    def __init__(self, cursor: psycopg.ServerCursor) -> None:
        self.cursor, self.read = cursor, 0

    def next(self) -> tuple | None:
        row = next(self.cursor, None)
        self.read += row is not None
        return row

    def rest(self) -> int:
        """Read the rows left (read, never compared: the merge ended on the other side) and close; all rows read."""
        self.read += sum(1 for _ in self.cursor)
        self.cursor.close()
        return self.read


def _plain(codec: PhiCodec, value: str | None) -> str | None | Exception:
    try:
        return codec.decrypt(value)
    except (CiphertextFormatError, DecryptionError) as exc:
        return exc


def _plain_digests(right: Side, recorded: MappingDigests, codec: PhiCodec) -> dict:
    """The new side's salted plaintext digests, decrypted here and folded as the backup folded the legacy's."""
    salted = salt(codec)

    def rows():
        for bucket, text, identity, *values in engine.keyed_rows(right, recorded.cut(), "gate_phi_plain"):
            plain = [_plain(codec, v) for v in values]
            if any(isinstance(p, Exception) for p in plain):  # never equal to a digest: drilled, and named there
                yield bucket, identity, "f" * 32
            else:
                yield bucket, identity, plain_row_hash(salted, text, plain)
    with right.conn.transaction():
        return engine.fold(rows())


def _phi_recorded(baseline: Baseline, target: psycopg.Connection, mapping: TableMap, codec: PhiCodec,
                  schema: str) -> tuple[MappingDigests, list, int, tuple[int, int, int]] | None:
    """(recorded, buckets that differ, values compared, (legacy rows, new rows, rows matched outside the buckets
    that differ)) against the digests recorded in the backup's snapshot: identical ciphertexts decrypt identically,
    and a plaintext encrypted on the way is compared by its salted digest. None when there are no digests for
    exactly these columns (the restored copy decides everything)."""
    recorded = baseline.of(mapping)
    if recorded is None:
        return None
    sets = _phi_sets(mapping)
    among = tuple(recorded.among) if recorded.among is not None else None
    differing: set = set()
    checked = 0
    rows: dict[int | None, int] = {}
    totals = (0, 0)
    for name, pairs in sets.items():
        buckets = recorded.buckets(name, pairs)
        if buckets is None:
            return None
        right = Side(target, mapping.new, mapping.key, [n for _, n in pairs], max_key=recorded.max_key,
                     schema=schema, among=among)
        try:
            theirs = (baseline.new_side(target, mapping, schema, name) if name == "phi"
                      else _plain_digests(right, recorded, codec))
        except BucketingMismatch:
            return None
        differing.update(engine.differing(buckets, theirs))
        checked += sum(d[0] for d in theirs.values()) * len(pairs)
        rows = {b: d[0] for b, d in buckets.items()}
        totals = (sum(rows.values()), sum(d[0] for d in theirs.values()))
    matched = sum(n for b, n in rows.items() if b not in differing)  # equal digests: the same rows on both sides
    return recorded, sorted(differing, key=engine.key_order), checked, (*totals, matched)


def _phi_sets(mapping: TableMap) -> dict[str, list[tuple[str, str]]]:
    """INT-04's recorded digest sets (as baseline_digests.column_sets names them): ciphertexts, and plaintexts."""
    sets = {"phi": list(mapping.phi.items()), "plain": list(mapping.encrypt.items())}
    return {k: v for k, v in sets.items() if v}


def phi_equal(baseline: Legacy, target: psycopg.Connection, mapping: TableMap, codec: PhiCodec,
              schema: str = "public") -> Result:
    """Every PHI value equal after decryption on both sides (re-encryption with new IVs is fine); a plaintext
    legacy column encrypted on the way equals the decrypted new value."""
    result = Result(f"{mapping.legacy} -> {mapping.new}: PHI equal after decryption")
    pairs = [*mapping.phi.items(), *mapping.encrypt.items()]
    if not pairs or not present(result, baseline, target, mapping, schema, [o for o, _ in pairs],
                                [n for _, n in pairs]):
        return result
    old_cols, new_cols = [o for o, _ in pairs], [n for _, n in pairs]
    where_old = where_new = sql.SQL("true")
    outside = None  # (legacy rows, new rows, rows matched) the recorded digests account for, outside any drill
    if isinstance(baseline, Baseline):
        found = _phi_recorded(baseline, target, mapping, codec, schema)
        if found is not None:
            recorded, buckets, checked, outside = found
            result.notes.append(RECORDED + (f"; {len(buckets)} key ranges differed and were decrypted and compared "
                                            "with the restored backup" if buckets else ""))
            if not buckets:
                result.checked = checked
                result.tally(mapping.new, *outside, new_may_exceed=mapping.partial)
                return result
            cut = recorded.cut()
            where_new = engine.bucket_filter(Side(target, mapping.new, mapping.key, [], schema=schema), cut, buckets)
            where_old = engine.bucket_filter(Side(baseline.connection(), mapping.legacy, mapping.source_key, [],
                                                  schema=schema), cut, buckets)
        baseline = baseline.connection()
    where_new = sql.SQL("({}) AND ({})").format(where_new, sides(baseline, target, mapping, schema=schema)[1].bound())
    plain_source = [o in mapping.encrypt for o in old_cols]
    matched = 0
    differing: dict[str, list[int]] = defaultdict(list)
    unreadable: dict[str, list[int]] = defaultdict(list)
    with baseline.transaction(), target.transaction():
        left = _Counted(_ordered(baseline, schema, mapping.legacy, mapping.source_key, old_cols, "gate_phi_left",
                                 where_old))
        right = _Counted(_ordered(target, schema, mapping.new, mapping.key, new_cols, "gate_phi_right", where_new))
        a, b = left.next(), right.next()
        while a is not None and b is not None:
            if a[0] < b[0]:
                a = left.next()  # missing rows are named by rows_correspond; counted short here
            elif a[0] > b[0]:
                b = right.next()
            else:
                matched += 1
                for i, column in enumerate(new_cols):
                    old, new = a[i + 1], b[i + 1]
                    if old == new:  # the same ciphertext (or both empty) decrypts the same
                        result.checked += old is not None
                        continue
                    result.checked += 1
                    p = (old if old and old.strip() else None) if plain_source[i] else _plain(codec, old)
                    q = _plain(codec, new)
                    if isinstance(q, Exception) or isinstance(p, Exception):
                        unreadable[column].append(a[0])
                    elif p != q:
                        differing[column].append(a[0])
                a, b = left.next(), right.next()
        read_left, read_right = left.rest(), right.rest()
    if outside is None:
        result.tally(mapping.new, read_left, read_right, matched, new_may_exceed=mapping.partial)
    else:  # the drilled buckets' rows are in the digests' totals already
        result.tally(mapping.new, outside[0], outside[1], outside[2] + matched, new_may_exceed=mapping.partial)
    for column, keys in differing.items():
        result.add(f"{mapping.new}.{column}: {len(keys)} values differ from the legacy value after decryption "
                   f"({first_ids(keys)})")
    for column, keys in unreadable.items():
        result.add(f"{mapping.new}.{column}: {len(keys)} values cannot be decrypted on one side ({first_ids(keys)})")
    return result


def new_column_rules(target: psycopg.Connection, mapping: TableMap, schema: str = "public") -> Result:
    """Each new column without a legacy source holds what its rule says on every migrated row: NULL ("null",
    "phi") or the rule's value. (Rules "tenancy", "search_hash" and "derived" have checks of their own.)"""
    result = Result(f"{mapping.new}: new columns hold what their rules say")
    rules = {c: r for c, r in mapping.new_columns.items() if r.kind in ("null", "phi", "value")}
    if not rules or missing(result, catalog_of(target, schema), schema, mapping.new, [mapping.key, *rules]):
        return result
    for column, rule in sorted(rules.items()):
        result.checked += 1
        with result.guard(mapping.new, column):
            expected = sql.SQL("NULL") if rule.kind != "value" else sql.Literal(rule.value)
            ids = [r[0] for r in target.execute(sql.SQL(
                "SELECT {k} FROM {t} WHERE {c} IS DISTINCT FROM {v} ORDER BY 1 LIMIT 1000").format(
                k=sql.Identifier(mapping.key), t=sql.Identifier(schema, mapping.new), c=sql.Identifier(column),
                v=expected))]
            if ids:
                want = "NULL" if rule.kind != "value" else "the rule's value"
                result.add(f"{mapping.new}.{column}: {len(ids)}{'+' if len(ids) == 1000 else ''} rows are not "
                           f"{want} ({first_ids(ids)})")
    return result
