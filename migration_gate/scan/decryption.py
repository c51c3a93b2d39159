"""PHI decryption by key range, in worker processes: each opens its own connection, streams its range through a
server-side cursor in chunks sized by time, decrypts with AESGCM and sends back only counts, the first failing
row ids and (when asked) digests of the ciphertexts it proved, never a value.

The key reaches a worker through the pool's initializer (pickled over the pool's pipe), never through argv or the
environment. With one worker (or a sample, or a scope) the same code runs in this process on the caller's
connection.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

from migration_gate.config import SearchHash
from migration_gate.core.errors import MigrationGateError
from migration_gate.core.phi import PhiCodec, is_blank, search_hash
from migration_gate.core.result import FIRST_IDS, error_text
from migration_gate.db import connection as db
from migration_gate.scan.ranges import Buckets, ChunkSizer, KeyRange, binary_order

UNDECRYPTABLE = "do not decrypt with this key (wrong key or corrupted)"
DOUBLE = "decrypt to ciphertext again (double encryption)"
HASH_ABSENT = "absent"
HASH_WRONG = "wrong"
_CIPHERTEXT = (b"v1:", b"v2:")  # a plaintext that starts so is ciphertext again
_KEPT = FIRST_IDS + 1  # ids kept per finding: enough for first_ids() to show five and say there are more


class Malformed(MigrationGateError, ValueError):
    """Not v1 ciphertext (the format check names it)."""


@dataclass(frozen=True)
class Task:
    """One range of one table: decrypt `columns` (or check `hashes`), optionally digesting per bucket."""

    schema: str
    table: str
    key: str
    span: KeyRange
    columns: tuple[str, ...] = ()
    hashes: tuple[SearchHash, ...] = ()
    buckets: Buckets | None = None  # digest the ciphertexts of each column per bucket (the pre-checks' proof)
    limit: int | None = None  # a sample: the first rows only


@dataclass
class Outcome:
    """What a range found: counts and the first ids per (column, kind); digests per (column, bucket) of the buckets
    whose every value decrypted."""

    checked: int = 0
    malformed: int = 0
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    ids: dict[tuple[str, str], list] = field(default_factory=dict)
    digests: dict[tuple[str, int], tuple[int, int, int, int]] = field(default_factory=dict)  # + values checked
    spoiled: set[tuple[str, int]] = field(default_factory=set)  # (column, bucket) with a failure: not proven
    cpu: float = 0.0  # seconds of CPU the range took in its process (for the rate per core)
    errors: list[str] = field(default_factory=list)  # a range that could not be read: its error, PHI-free

    def fail(self, column: str, kind: str, row_id: object) -> None:
        where = (column, kind)
        self.counts[where] = self.counts.get(where, 0) + 1
        kept = self.ids.setdefault(where, [])
        if len(kept) < _KEPT:
            kept.append(row_id)

    def merge(self, other: Outcome) -> None:
        """Add a later range's outcome (ranges are merged in key order, so the first ids stay the first)."""
        self.checked += other.checked
        self.malformed += other.malformed
        for where, count in other.counts.items():
            self.counts[where] = self.counts.get(where, 0) + count
            kept = self.ids.setdefault(where, [])
            kept.extend(other.ids[where][:_KEPT - len(kept)])
        for where, (n, total, xor, checked) in other.digests.items():
            had = self.digests.get(where, (0, 0, 0, 0))
            self.digests[where] = (had[0] + n, had[1] + total, had[2] ^ xor, had[3] + checked)
        self.spoiled |= other.spoiled
        self.cpu += other.cpu
        self.errors += [e for e in other.errors if e not in self.errors]


def open_v1(aead: AESGCM, value: str) -> bytes:
    """Decrypt one stored value to its plaintext bytes (valid UTF-8). Exactly the v1 format's rule (V1_PATTERN),
    checked with split, lengths, bytes.fromhex and lower() (ASCII fast paths, cheaper per value than the regex
    or str.islower()); raises Malformed, or InvalidTag/UnicodeDecodeError for what does not decrypt."""
    parts = value.split(":")
    if len(parts) != 4 or parts[0] != "v1":
        raise Malformed
    _, iv, tag, ct = parts
    try:
        nonce, sealed = bytes.fromhex(iv), bytes.fromhex(ct + tag)
    except ValueError:
        raise Malformed from None
    # fromhex skips whitespace and reads A-F: byte counts that match the text's length prove there was no
    # whitespace, and lower() == value that there was no upper case
    if len(nonce) != 16 or len(tag) != 32 or len(ct) < 2 or 2 * len(sealed) != len(ct) + 32 or value.lower() != value:
        raise Malformed
    plain = aead.decrypt(nonce, sealed, None)
    if not plain.isascii():
        plain.decode("utf-8")
    return plain


def _hashes(column: str) -> sql.Composable:
    """Two independent 64-bit hashes of a stored value, computed by the server (hashtextextended: PostgreSQL 11+)."""
    c = sql.Identifier(column)
    return sql.SQL("hashtextextended({c}, 0), hashtextextended({c}, 1)").format(c=c)


def ciphertext_digests(conn: psycopg.Connection, schema: str, table: str, key: str, columns: list[str],
                       buckets: Buckets) -> dict[tuple[str, int], tuple[int, int, int]]:
    """Per (column, bucket): count, sum of the first hash and xor of the second over the non-NULL values, in one
    scan: the same numbers decrypt_range adds up for the values it proves."""
    parts = [sql.SQL("count({c}), coalesce(sum(hashtextextended({c}, 0)::numeric), 0), "
                     "coalesce(bit_xor(hashtextextended({c}, 1)), 0)").format(c=sql.Identifier(c)) for c in columns]
    query = sql.SQL("SELECT {b} AS bucket, {aggs} FROM {t} GROUP BY 1").format(
        b=buckets.index(key), aggs=sql.SQL(", ").join(parts), t=sql.Identifier(schema, table))
    found = {}
    for row in conn.execute(query):
        for i, column in enumerate(columns):
            found[(column, row[0])] = (int(row[1 + 3 * i]), int(row[2 + 3 * i]), int(row[3 + 3 * i]))
    return found


def _rows(conn: psycopg.Connection, task: Task, columns: list[str], scope: sql.Composable | None,
          hashes: bool = False) -> Iterator[list[tuple]]:
    """The task's rows in key order (key, columns, then two hashes per column when asked), in chunks sized to the
    time budget, through a server-side cursor."""
    where = task.span.condition(task.key)
    if scope is not None:
        where = sql.SQL("({}) AND ({})").format(where, scope)
    fields = [sql.Identifier(c) for c in columns] + ([_hashes(c) for c in columns] if hashes else [])
    query = sql.SQL("SELECT {k}, {fields} FROM {t} WHERE {w} ORDER BY {order}{limit}").format(
        k=sql.Identifier(task.key), fields=sql.SQL(", ").join(fields),
        order=binary_order(conn, task.schema, task.table, [task.key]),
        t=sql.Identifier(task.schema, task.table), w=where,
        limit=sql.SQL(" LIMIT {}").format(sql.Literal(task.limit)) if task.limit else sql.SQL(""))
    sizer = ChunkSizer(columns=len(columns))
    with conn.cursor(name=f"gate_{task.table}", binary=True) as cur:
        cur.execute(query)
        while True:
            chunk = cur.fetchmany(sizer.start())
            if not chunk:
                return
            yield chunk
            sizer.done(len(chunk))


def _bucket_of(buckets: Buckets) -> Callable[[int], int]:
    last, low, width = buckets.count - 1, buckets.low, buckets.width
    return lambda k: 0 if last == 0 else min(max((k - low) // width, 0), last)


def decrypt_range(conn: psycopg.Connection, aead: AESGCM, task: Task,
                  scope: sql.Composable | None = None) -> Outcome:
    """Decrypt every value of the task's columns in its range: failures by column and kind. The loop is column by
    column over each chunk, with locals only: per value, the parse and the decryption and little else."""
    out = Outcome()
    started = time.process_time()
    columns = list(task.columns)
    bucket_of = _bucket_of(task.buckets) if task.buckets else None
    checked = 0
    with conn.transaction():
        for chunk in _rows(conn, task, columns, scope, hashes=bucket_of is not None):
            for i, column in enumerate(columns, 1):
                for row in chunk:
                    value = row[i]
                    if value is None:
                        continue
                    try:
                        plain = open_v1(aead, value)
                    except Malformed:
                        if not is_blank(value):
                            checked += 1
                            out.malformed += 1  # the format check names these; here only the key is in question
                            out.spoiled.add((column, bucket_of(row[0]) if bucket_of else 0))
                        continue
                    except (InvalidTag, UnicodeDecodeError):
                        checked += 1
                        out.fail(column, UNDECRYPTABLE, row[0])
                        out.spoiled.add((column, bucket_of(row[0]) if bucket_of else 0))
                        continue
                    checked += 1
                    if plain.startswith(_CIPHERTEXT):
                        out.fail(column, DOUBLE, row[0])
                        out.spoiled.add((column, bucket_of(row[0]) if bucket_of else 0))
                if bucket_of:
                    _digest(out.digests, column, chunk, i, len(columns) + 2 * i - 1, bucket_of)
    out.checked = checked
    out.cpu = time.process_time() - started
    return out


def _digest(digests: dict, column: str, chunk: list[tuple], i: int, h: int, bucket_of: Callable[[int], int]) -> None:
    """Add the chunk's non-NULL values of one column (at row[i], their hashes at row[h] and row[h + 1]) to their
    buckets' digests, counting those that are not blank (what the decryption check counts as checked)."""
    for row in chunk:
        value = row[i]
        if value is not None:
            where = (column, bucket_of(row[0]))
            n, total, xor, checked = digests.get(where, (0, 0, 0, 0))
            digests[where] = (n + 1, total + row[h], xor ^ row[h + 1],
                              checked + (value.startswith("v1:") or not is_blank(value)))


def hash_range(conn: psycopg.Connection, aead: AESGCM, task: Task, scope: sql.Composable | None = None) -> Outcome:
    """Compare each search hash with sha256(lower(trim(decrypted source))) in the task's range."""
    out = Outcome()
    started = time.process_time()
    columns = [c for s in task.hashes for c in (s.hash, s.source)]
    specs = list(enumerate(task.hashes))
    with conn.transaction():
        for chunk in _rows(conn, task, columns, scope):
            for row in chunk:
                for i, spec in specs:
                    stored, source = row[1 + 2 * i], row[2 + 2 * i]
                    if spec.plaintext:
                        plain = source
                    elif source is None:
                        plain = None
                    else:
                        try:
                            plain = open_v1(aead, source).decode("utf-8")
                        except Malformed:
                            if not is_blank(source):
                                continue  # reported by the format check
                            plain = None
                        except (InvalidTag, UnicodeDecodeError):
                            continue  # reported by the decryption check
                    expected = search_hash(plain)
                    out.checked += 1
                    if stored is None and expected is not None:
                        out.fail(spec.hash, HASH_ABSENT, row[0])
                    elif stored != expected:
                        out.fail(spec.hash, HASH_WRONG, row[0])
    out.cpu = time.process_time() - started
    return out


# -- the worker processes ---------------------------------------------------------------------------------------
_worker: dict = {}


def _start(conninfo: str, key: bytes) -> None:
    """Pool initializer: the connection parameters and the key, kept in this worker's memory only."""
    _worker["conninfo"], _worker["aead"] = conninfo, AESGCM(key)


def _connection() -> psycopg.Connection:
    conn = _worker.get("conn")
    if conn is None or conn.closed:
        conn = _worker["conn"] = db.connect(_worker["conninfo"], autocommit=True)
        conn.read_only = True
    return conn


def _guarded(one: Callable[..., Outcome], conn: psycopg.Connection, aead: AESGCM, task: Task,
             scope: sql.Composable | None = None) -> Outcome:
    """One range's outcome; an error there is that range's finding (class and masked first line), not a crash of
    the other ranges."""
    try:
        return one(conn, aead, task, scope)
    except Exception as exc:  # noqa: BLE001 - reported as a finding naming the table
        return Outcome(errors=[error_text(exc)])


def _in_worker(one: Callable[..., Outcome], task: Task) -> Outcome:
    try:
        conn = _connection()
    except psycopg.Error as exc:
        return Outcome(errors=[error_text(exc)])
    return _guarded(one, conn, _worker["aead"], task)


def _decrypt_task(task: Task) -> Outcome:
    return _in_worker(decrypt_range, task)


def _hash_task(task: Task) -> Outcome:
    return _in_worker(hash_range, task)


def conninfo_of(conn: psycopg.Connection) -> str:
    """The caller's connection parameters, password included, for the workers to open their own."""
    password = conn.info.password
    return psycopg.conninfo.make_conninfo(conn.info.dsn, **({"password": password} if password else {}))


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def run(conn: psycopg.Connection, codec: PhiCodec, tasks: Iterable[Task], workers: int, hashes: bool = False,
        scope: sql.Composable | None = None) -> list[Outcome]:
    """Every task's outcome, in the tasks' order: in this process with one worker (or a scope), else over a pool of
    `workers` processes, each with its own connection."""
    tasks = list(tasks)
    one = hash_range if hashes else decrypt_range
    if workers <= 1 or len(tasks) <= 1 or scope is not None:
        aead = codec.aead()
        return [_guarded(one, conn, aead, task, scope) for task in tasks]
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=_context(), initializer=_start,
                             initargs=(conninfo_of(conn), codec.worker_key())) as pool:
        return list(pool.map(_hash_task if hashes else _decrypt_task, tasks))
