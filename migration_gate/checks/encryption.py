"""PHI at rest: every stored value is v1 ciphertext that decrypts with the key, is not itself ciphertext,
has its own IV, and search hashes are hashes of the decrypted values.

Format checks run in SQL, one scan per table for all of them (v1 format, v2 prefixes, plaintext patterns, counts as
FILTER aggregates), shared by the checks that read it while the database has not changed; offending ids are
fetched only for a count that is not zero. Decryption splits each table by key range over worker processes
(migration_gate.scan.decryption, migration_gate.scan.ranges); only counts and row ids come back out. With the
pre-checks' record (migration_gate.scan.proven), ciphertext byte-identical to what was proven before the window is
neither decrypted nor format-checked again: only the key buckets whose digests differ are.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import pq, sql

from migration_gate.checks import catalog_of, key_of, missing
from migration_gate.config import SearchHash
from migration_gate.core.phi import V1_PATTERN, PhiCodec
from migration_gate.core.result import FIRST_IDS, Result, first_ids
from migration_gate.db.catalog import Catalog
from migration_gate.scan import decryption, proven, ranges
from migration_gate.scan.decryption import Outcome, Task

ROWS_PER_BUCKET = 10_000  # keys per bucket: the grain of the pre-checks' proof and of a worker's task
TASKS_PER_WORKER = 4  # ranges per worker process, so that uneven ranges even out
# What PHI looks like in the clear: an email, a US phone number, an SSN, an ISO or US date.
PLAINTEXT_PATTERNS = {
    "an email": r"[^\s@:]+@[^\s@]+\.[a-z]{2,}",
    "a phone number": r"^\+?1?[\s.(-]*\d{3}[\s.)-]*\d{3}[\s.-]*\d{4}$",
    "an SSN": r"^\d{3}-\d{2}-\d{4}$",
    "a date": r"^(\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4})$",
}


def by_table(columns: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for table, column in columns:
        grouped[table].append(column)
    return dict(grouped)


def _present(result: Result, catalog: Catalog, schema: str, columns: Iterable[tuple[str, str]]
             ) -> dict[str, tuple[str, list[str]]]:
    """The configured columns the database has, by table with its key; the others are findings."""
    found = {}
    for table, cols in by_table(columns).items():
        if missing(result, catalog, schema, table):
            continue
        have = [c for c in cols if not missing(result, catalog, schema, table, [c])]
        with result.guard(table):
            found[table] = (key_of(catalog, schema, table), have)
    return found


def _scoped(condition: sql.Composable, scope: sql.Composable | None) -> sql.Composable:
    """A check's row condition narrowed to `scope` (e.g. the rows written since a mark: the watch's rounds)."""
    return condition if scope is None else sql.SQL("({}) AND ({})").format(condition, scope)


@dataclass(frozen=True)
class Scan:
    """One table's format counts, per column: values, not v1, v2 among them, plaintext-looking per pattern."""

    values: dict[str, int]
    malformed: dict[str, int]
    v2: dict[str, int]
    plaintext: dict[tuple[str, str], int]


_CACHE: OrderedDict[tuple, tuple[str, object]] = OrderedDict()
_KEEP = 64


def _cached(conn: psycopg.Connection, key: tuple, compute: Callable[[], object], usable: bool = True) -> object:
    """compute(), or what it gave for the same key while the cluster's snapshot is unchanged: no transaction has
    committed since (any write takes one), and this connection has none open (so no write of its own is unseen)."""
    if not usable or conn.info.transaction_status != pq.TransactionStatus.IDLE:
        return compute()
    key = (conn.info.host, conn.info.port, conn.info.dbname, *key)
    snapshot = conn.execute("SELECT txid_current_snapshot()::text").fetchone()[0]
    cached = _CACHE.get(key)
    if cached and cached[0] == snapshot:
        return cached[1]
    found = compute()
    _CACHE[key] = (snapshot, found)
    _CACHE.move_to_end(key)
    while len(_CACHE) > _KEEP:
        _CACHE.popitem(last=False)
    return found


@dataclass(frozen=True)
class Differ:
    """A proven column's buckets whose ciphertexts differ from those proven before the window, and how many values
    the equal buckets hold (every one of them decrypted then: v1, not ciphertext again; or blank)."""

    buckets: ranges.Buckets
    indexes: tuple[int, ...]
    proven: int

    def condition(self, key: str) -> sql.Composable:
        if not self.indexes:
            return sql.SQL("false")
        return sql.SQL("{b} = ANY({i})").format(b=self.buckets.index(key), i=sql.Literal(list(self.indexes)))


def _bad(column: str) -> sql.Composable:
    """Not NULL, not blank, not v1: what the format check names."""
    return sql.SQL("{c} IS NOT NULL AND {c} !~ '^\\s*$' AND {c} !~ {p}").format(
        c=sql.Identifier(column), p=sql.Literal(V1_PATTERN))


def _maybe_plaintext(column: str, label: str) -> sql.Composable:
    """A cheap condition every value matching the label's pattern meets, so the pattern runs on few values: an email
    has an '@'; the other patterns are anchored at a digit, a sign or a space, which a value starting 'v1:' is not."""
    c = sql.Identifier(column)
    return sql.SQL("strpos({c}, '@') > 0" if label == "an email" else "{c} NOT LIKE 'v1:%'").format(c=c)


def _scan(conn: psycopg.Connection, schema: str, table: str, key: str, columns: list[str],
          scope: sql.Composable | None, only: dict[str, Differ] | None = None) -> Scan:
    """Every per-value format count of a table in one scan (which PostgreSQL may run in parallel), the v1 regex
    once per value, and only in the buckets `only` names for a column proven before the window. Without a scope,
    reused by the next check asking the same while nothing has committed (_cached)."""
    only = only or {}

    def compute() -> Scan:
        aggregates = []
        for column in columns:
            c = sql.Identifier(column)
            bad = _bad(column) if column not in only else sql.SQL("({}) AND {}").format(
                only[column].condition(key), _bad(column))
            aggregates += [sql.SQL("count({c})").format(c=c), sql.SQL("count(*) FILTER (WHERE {b})").format(b=bad),
                           sql.SQL("count(*) FILTER (WHERE {c} LIKE 'v2:%')").format(c=c)]
            aggregates += [sql.SQL("count(*) FILTER (WHERE {m} AND {c} ~* {p})").format(
                m=_maybe_plaintext(column, label), c=c, p=sql.Literal(p)) for label, p in PLAINTEXT_PATTERNS.items()]
        query = sql.SQL("SELECT {aggs} FROM {t} WHERE {w}").format(
            aggs=sql.SQL(", ").join(aggregates), t=sql.Identifier(schema, table),
            w=scope if scope is not None else sql.SQL("true"))
        row = conn.execute(query).fetchone()
        width = 3 + len(PLAINTEXT_PATTERNS)
        found = Scan({}, {}, {}, {})
        for i, column in enumerate(columns):
            counts = row[i * width:(i + 1) * width]
            found.values[column], found.malformed[column], found.v2[column] = counts[0], counts[1], counts[2]
            for label, count in zip(PLAINTEXT_PATTERNS, counts[3:], strict=True):
                found.plaintext[(column, label)] = count
        return found

    narrowed = tuple(sorted((c, d.indexes) for c, d in only.items()))
    return _cached(conn, ("scan", schema, table, tuple(columns), narrowed), compute, usable=scope is None)


def _differing(conn: psycopg.Connection, catalog: Catalog, schema: str, table: str, key: str, cols: list[str],
               proof: proven.Proven | None) -> dict[str, Differ]:
    """For each column the proof covers: its buckets whose digests differ from the recorded ones (one digest scan
    per table, shared by the checks while nothing has committed)."""
    found: dict[str, Differ] = {}
    if proof is None:
        return found
    integer = ranges.integer_key(catalog, schema, table, key)
    by_buckets: dict[ranges.Buckets, list[tuple[str, proven.ProvenColumn]]] = defaultdict(list)
    for column in cols:
        covered = proof.get(table, column)
        if covered is not None and (integer or covered.buckets.count == 1):  # any key: one bucket, the whole table
            by_buckets[covered.buckets].append((column, covered))
    for buckets, pairs in by_buckets.items():
        names = [c for c, _ in pairs]
        digests = _cached(conn, ("digests", schema, table, tuple(names), buckets), lambda b=buckets, n=names:
                          decryption.ciphertext_digests(conn, schema, table, key, n, b))
        for column, covered in pairs:
            differ, same = [], 0
            for index in range(buckets.count):
                now = digests.get((column, index), (0, 0, 0))
                if now == covered.digests.get(index):
                    same += covered.checked[index]
                elif now[0] or index in covered.digests:
                    differ.append(index)
            found[column] = Differ(buckets, tuple(differ), same)
    return found


def _first(conn: psycopg.Connection, schema: str, table: str, key: str, condition: sql.Composable,
           scope: sql.Composable | None = None) -> list:
    """The first ids (by key) of the rows meeting `condition`: one more than first_ids() shows, so it says '...'."""
    query = sql.SQL("SELECT {k} FROM {t} WHERE {c} ORDER BY 1 LIMIT {n}").format(
        k=sql.Identifier(key), t=sql.Identifier(schema, table), c=_scoped(condition, scope),
        n=sql.Literal(FIRST_IDS + 1))
    return [r[0] for r in conn.execute(query)]


def well_formed(conn: psycopg.Connection, columns: Iterable[tuple[str, str]], schema: str = "public",
                scope: sql.Composable | None = None, proof: proven.Proven | None = None) -> Result:
    """Every non-empty value matches ^v1:<32 hex>:<32 hex>:(hex pairs)+$ (no plaintext, v2 or truncation).
    With `scope` (a row condition), only the rows it selects: a watch round checks what was written since the last.
    With `proof`, the format is not re-read in buckets byte-identical to ciphertext proven before the window."""
    result = Result("PHI values are v1 ciphertext")
    catalog = catalog_of(conn, schema)
    skipped = 0
    for table, (key, cols) in _present(result, catalog, schema, columns).items():
        if not cols:
            continue
        with result.guard(table):
            only = _differing(conn, catalog, schema, table, key, cols, proof) if scope is None else {}
            skipped += sum(d.proven for d in only.values())
            found = _scan(conn, schema, table, key, cols, scope, only)
            for column in cols:
                result.checked += found.values[column]
                bad = found.malformed[column]
                if bad:
                    ids = _first(conn, schema, table, key, _bad(column), scope)
                    v2 = found.v2[column]
                    kind = f", {v2} of them v2:" if v2 else ""
                    result.add(f"{table}.{column}: {bad} values are not v1 ciphertext{kind} ({first_ids(ids)})")
    if proof is not None:
        result.notes.append(f"{skipped} values proven before the window by digest (their format not read again)"
                            + (f"; {proof.note}" if proof.note else ""))
    return result


def no_plaintext(conn: psycopg.Connection, columns: Iterable[tuple[str, str]], schema: str = "public",
                 proof: proven.Proven | None = None, scope: sql.Composable | None = None) -> Result:
    """No encrypted column holds something that looks like PHI in the clear. `proof`, `scope`: as well_formed's
    (the scan the two share)."""
    result = Result("no plaintext-looking PHI in encrypted columns", unit="columns")
    catalog = catalog_of(conn, schema)
    for table, (key, cols) in _present(result, catalog, schema, columns).items():
        if not cols:
            continue
        with result.guard(table):
            found = _scan(conn, schema, table, key, cols, scope,
                          _differing(conn, catalog, schema, table, key, cols, proof) if scope is None else {})
            for column in cols:
                for label, pattern in PLAINTEXT_PATTERNS.items():
                    count = found.plaintext[(column, label)]
                    if count:
                        ids = _first(conn, schema, table, key, sql.SQL("{c} ~* {p}").format(
                            c=sql.Identifier(column), p=sql.Literal(pattern)), scope)
                        result.add(f"{table}.{column}: {count} values look like {label} in the clear "
                                   f"({first_ids(ids)})")
                result.checked += 1
    return result


def unique_ivs(conn: psycopg.Connection, columns: Iterable[tuple[str, str]], schema: str = "public") -> Result:
    """No two stored values share an IV (GCM with a repeated IV leaks plaintext). One pass counts values and
    repeated IVs together; only when there are repeats does a second query name where."""
    result = Result("no two PHI values share an IV")
    present = _present(result, catalog_of(conn, schema), schema, columns)

    def union(detail: bool) -> sql.Composable:
        where = sql.SQL(", {tn} AS tbl, {cn} AS col, {k}::text AS id") if detail else sql.SQL("")
        return sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT substr({c}, 4, 32) AS iv{w} FROM {t} WHERE {c} LIKE 'v1:%'").format(
                c=sql.Identifier(c), t=sql.Identifier(schema, t),
                w=where.format(tn=sql.Literal(t), cn=sql.Literal(c), k=sql.Identifier(key)))
            for t, (key, cols) in present.items() for c in cols)

    if not any(cols for _, cols in present.values()):
        return result
    total, repeated = conn.execute(sql.SQL(
        "SELECT coalesce(sum(n), 0), count(*) FILTER (WHERE n > 1) FROM (SELECT count(*) AS n FROM ({u}) AS v "
        "GROUP BY iv) AS g").format(u=union(False))).fetchone()
    result.checked = int(total)
    if repeated:
        places = [p for (where,) in conn.execute(sql.SQL(
            "SELECT array_agg(tbl || '.' || col || ' id ' || id ORDER BY tbl, col, id) FROM ({u}) AS v GROUP BY iv "
            "HAVING count(*) > 1 ORDER BY min(tbl), min(col), min(id) LIMIT 6").format(u=union(True)))
            for p in where][:6]
        result.add(f"{repeated} IVs are used by more than one value (e.g. {'; '.join(places)})")
    return result


def _tasks(conn: psycopg.Connection, catalog: Catalog, schema: str, table: str, key: str, workers: int,
           make: dict, spans: list[ranges.KeyRange] | None = None,
           buckets: ranges.Buckets | None = None) -> list[Task]:
    """The table's ranges as tasks: the given spans, else whole buckets grouped into about TASKS_PER_WORKER
    contiguous ranges per worker (one range with one worker)."""
    if spans is None:
        buckets = buckets or ranges.buckets(conn, schema, table, key,
                                            ranges.integer_key(catalog, schema, table, key), ROWS_PER_BUCKET)
        spans = _group(buckets.ranges(), 1 if workers <= 1 else workers * TASKS_PER_WORKER)
    return [Task(schema, table, key, span, **make) for span in spans]


def _group(spans: list[ranges.KeyRange], parts: int) -> list[ranges.KeyRange]:
    """Contiguous runs of `spans` merged into at most `parts` ranges."""
    if len(spans) <= parts:
        return spans
    size = -(-len(spans) // parts)
    return [ranges.KeyRange(spans[i].low, spans[min(i + size, len(spans)) - 1].high)
            for i in range(0, len(spans), size)]


def _report(result: Result, table: str, outcome: Outcome, kinds: dict[str, str]) -> None:
    for error in outcome.errors:
        result.add(f"{table}: could not be checked: {error}")
    for (column, kind), count in outcome.counts.items():
        result.add(f"{table}.{column}: {count} {kinds[kind]} ({first_ids(outcome.ids[(column, kind)])})")


def decrypts(conn: psycopg.Connection, codec: PhiCodec, columns: Iterable[tuple[str, str]],
             sample: int | None = None, check: str = "PHI decrypts with the key", schema: str = "public",
             scope: sql.Composable | None = None, workers: int | None = None, record_to: Path | None = None,
             proof: proven.Proven | None = None) -> Result:
    """Every v1 value (or those of the first `sample` rows per table) decrypts, and its plaintext is not
    ciphertext again. Values that are not v1 at all are left to well_formed().

    Every table's key ranges go to one pool of `workers` processes (default GATE_WORKERS, else the machine's cores).
    `record_to` (a run folder): record digests of the buckets proven here (migration_gate.scan.proven). `proof`: skip
    the buckets whose ciphertexts are byte-identical to ones proven before; the notes say how many values were
    proven by digest and how many decrypted."""
    result = Result(check)
    catalog = catalog_of(conn, schema)
    present = _present(result, catalog, schema, columns)
    count = 1 if sample is not None or scope is not None else ranges.workers_for(conn, schema, present, workers)
    whole = sample is None and scope is None
    by_digest = 0
    planned: dict[str, tuple[str, list[str], ranges.Buckets | None, list[Task]]] = {}
    for table, (key, cols) in present.items():
        if not cols:
            continue
        with result.guard(table):
            integer = ranges.integer_key(catalog, schema, table, key)
            buckets = ranges.buckets(conn, schema, table, key, integer, ROWS_PER_BUCKET) \
                if record_to is not None and whole else None
            tasks: list[Task] = []
            rest = cols
            if proof is not None and whole:
                tasks, covered, proven_values = _unproven(conn, catalog, schema, table, key, cols, proof)
                by_digest += proven_values
                rest = [c for c in cols if c not in covered]
            if rest:
                tasks += _tasks(conn, catalog, schema, table, key, count,
                                {"columns": tuple(rest), "buckets": buckets, "limit": sample}, buckets=buckets)
            planned[table] = (key, cols, buckets, tasks)
    outcomes = iter(decryption.run(conn, codec, [t for *_, tasks in planned.values() for t in tasks], count,
                                   scope=scope))
    malformed, cpu, ranges_run = 0, 0.0, 0
    kinds = {k: f"values {k}" for k in (decryption.UNDECRYPTABLE, decryption.DOUBLE)}
    for table, (key, cols, buckets, tasks) in planned.items():
        total = Outcome()
        for _ in tasks:
            total.merge(next(outcomes))
        ranges_run, cpu, malformed = ranges_run + len(tasks), cpu + total.cpu, malformed + total.malformed
        result.checked += total.checked
        _report(result, table, total, kinds)
        with result.guard(table):
            if buckets is not None and not total.errors:
                clean = {w: d for w, d in total.digests.items() if w not in total.spoiled}
                proven.record(record_to, codec, table, key, buckets, clean, cols)
    if malformed:
        result.notes.append(f"{malformed} values are not v1 ciphertext (see the format check)")
    result.notes.append(f"{ranges_run} key ranges over {count} process(es), {cpu:.1f} s of CPU decrypting")
    if proof is not None:
        result.checked += by_digest
        result.notes.append(f"{by_digest} values proven by digest (byte-identical to ciphertext decrypted before "
                            f"the window), {result.checked - by_digest} decrypted"
                            + (f"; {proof.note}" if proof.note else ""))
    return result


def _unproven(conn: psycopg.Connection, catalog: Catalog, schema: str, table: str, key: str, cols: list[str],
              proof: proven.Proven) -> tuple[list[Task], list[str], int]:
    """For the columns the proof covers: tasks for the buckets whose digests differ from the recorded ones, those
    columns, and how many values the equal buckets hold (proven without decrypting)."""
    differing = _differing(conn, catalog, schema, table, key, cols, proof)
    tasks = [Task(schema, table, key, d.buckets.ranges()[i], columns=(column,))
             for column, d in differing.items() for i in d.indexes]
    return tasks, list(differing), sum(d.proven for d in differing.values())


def search_hashes(conn: psycopg.Connection, codec: PhiCodec, specs: Iterable[SearchHash],
                  schema: str = "public", scope: sql.Composable | None = None, workers: int | None = None) -> Result:
    """Each hash equals sha256(lower(trim(decrypted source))); NULL exactly when the source is blank. Split by key
    range over worker processes like decrypts()."""
    result = Result("search hashes are hashes of the decrypted values")
    catalog = catalog_of(conn, schema)
    grouped: dict[str, list[SearchHash]] = defaultdict(list)
    for spec in specs:
        if not missing(result, catalog, schema, spec.table, [spec.hash, spec.source]):
            grouped[spec.table].append(spec)
    count = 1 if scope is not None else ranges.workers_for(conn, schema, grouped, workers)
    planned: dict[str, list[Task]] = {}
    for table, table_specs in grouped.items():
        with result.guard(table):
            planned[table] = _tasks(conn, catalog, schema, table, key_of(catalog, schema, table), count,
                                    {"hashes": tuple(table_specs)})
    outcomes = iter(decryption.run(conn, codec, [t for tasks in planned.values() for t in tasks], count, hashes=True,
                                   scope=scope))
    kinds = {decryption.HASH_ABSENT: "hashes missing where the source has a value",
             decryption.HASH_WRONG: "hashes differ from the hash of the decrypted value"}
    for table, tasks in planned.items():
        total = Outcome()
        for _ in tasks:
            total.merge(next(outcomes))
        result.checked += total.checked
        for error in total.errors:
            result.add(f"{table}: could not be checked: {error}")
        # absent first, then wrong, as the checks have always listed them
        for kind in (decryption.HASH_ABSENT, decryption.HASH_WRONG):
            for (column, k), n in total.counts.items():
                if k == kind:
                    result.add(f"{table}.{column}: {n} {kinds[kind]} ({first_ids(total.ids[(column, k)])})")
    return result
