"""The legacy side of every integrity check, recorded as digests in the backup's own snapshot.

While pg_dump dumps an exported snapshot, a second session imports the same snapshot and computes, for each
mapping of the migration description, what the integrity checks (INT-01..INT-05) would compute on a restored
copy of that dump: row counts (in total and per group) and per-bucket digests (compare.py's buckets and row
hashes) of the key alone, of the mapped non-PHI columns, of the relationship columns, of the PHI ciphertexts,
and of the plaintexts a migration encrypts on the way (salted with a value derived from the PHI key, as those
are plaintext PHI). Inside the window the checks compare the new side with these and touch the legacy data only
where a bucket differs: then the backup is restored and only those buckets are drilled into. The file holds
counts, hash aggregates and keys (for a partial table), never a value; it sits beside the dump, owner-only.

The shortcut's assumption, "the new side equals the legacy data as dumped", is exactly what is checked: any
write to the legacy data after the snapshot that the migration carries over makes the new side differ from the
recorded digests, so the check drills into the restored backup (which lacks that write) and goes red.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from migration_gate.backup.dump import take_backup as dump_backup
from migration_gate.backup.record import BackupError, BackupRecord
from migration_gate.config import GateConfig, TableMap
from migration_gate.core.phi import PhiCodec
from migration_gate.db import connection as db
from migration_gate.db import snapshot as snapshots
from migration_gate.scan import compare
from migration_gate.scan.compare import Bucketing, Digest, Side

SUFFIX = ".digests.json"  # beside the dump
VERSION = 1
PARTIAL_KEYS_MAX = 200_000  # a partial table's legacy keys are recorded up to this many; beyond, no digests
APPLICATION = "migration-gate baseline digests"
# Both sides' digests are taken on the target server (at backup time and inside the window): PostgreSQL's own
# hash serves, at half md5's cost. The plaintext set is md5, as Python hashes the decrypted new side alike.
ROW_HASH = "hashtextextended"
PYTHON_FOLDED = frozenset({"plain"})
SUBSETS_OF_COLUMNS = ("rows", "relationships")  # digest sets whose columns the "columns" set holds, key included


def salt(codec: PhiCodec) -> str:
    """What plaintext PHI is hashed with: derived from the PHI key (a fixed text sealed with it), so a recorded
    digest cannot be brute-forced back to a short value (a date of birth, an EIN) by whoever reads the run folder."""
    sealed = codec.encrypt("migration-gate baseline digest of plaintext PHI", iv=bytes(16)) or ""
    return hashlib.sha256(sealed.encode()).hexdigest()[:32]


SALT_SETTING = "migration_gate.plain_salt"  # where plain_hash reads the salt: never a literal in a statement's text


def set_salt(conn: psycopg.Connection, salted: str) -> None:
    """The salt as a bound parameter of the session, so no statement text (which the server logs with an error)
    carries it."""
    conn.execute("SELECT set_config(%s, %s, false)", (SALT_SETTING, salted))


def plain_hash(columns: list[str]) -> compare.RowHash:
    """A row hash of legacy plaintext (blank is empty, as phi_equal reads it), salted with what `set_salt` gave
    the session; Python computes the same of the decrypted new values (`plain_row_hash`)."""
    def row(text: sql.Composable) -> sql.Composable:
        parts: list[sql.Composable] = [sql.SQL("current_setting({})").format(sql.Literal(SALT_SETTING)), text]
        parts += [sql.SQL("coalesce(md5(CASE WHEN {c} ~ '^[[:space:]]*$' THEN NULL ELSE {c} END), '-')").format(
            c=sql.Identifier(c)) for c in columns]
        return sql.SQL("concat_ws('|', {})").format(sql.SQL(", ").join(parts))
    return row


def plain_row_hash(salted: str, key_text: str, plaintexts: list[str | None]) -> str:
    parts = [salted, key_text]
    parts += [hashlib.md5(p.encode()).hexdigest() if p is not None and p.strip() else "-" for p in plaintexts]
    return hashlib.md5("|".join(parts).encode()).hexdigest()


def column_sets(gate: GateConfig, mapping: TableMap) -> dict[str, list[tuple[str, str]]]:
    """The (legacy, new) column pairs each check compares, by digest set name: what the checks and the backup
    must agree on exactly."""
    relationships = gate.relationships(mapping)
    sets = {"rows": [], "columns": list(mapping.columns.items()),
            "relationships": [(o, n) for o, n in mapping.columns.items() if n in relationships],
            "phi": list(mapping.phi.items()), "plain": list(mapping.encrypt.items())}
    return {name: pairs for name, pairs in sets.items() if pairs or name == "rows"}


def groupings(mapping: TableMap) -> list[tuple[str, str, str]]:
    """(label, legacy column, new column) whose per-value counts INT-01 compares."""
    found = []
    if mapping.owner:
        found.append(("owner", *mapping.owner))
    if mapping.soft_delete:
        found.append(("deleted flag", *mapping.soft_delete))
    return found + [(column, column, mapping.columns[column]) for column in mapping.count_by]


def grouped_counts(side: Side, groups: list[tuple[str, str]]) -> tuple[int, dict[str, dict[str, int]]]:
    """Rows in total and per value of each (label, column), in one scan (GROUPING SETS): a value by its text (an
    owner's id) or its md5 (any other value, which may be a status or a flag but is never kept as it is)."""
    values = []
    for label, column in groups:
        value = sql.SQL("{}::text").format(sql.Identifier(column))
        values.append(value if label == "owner" else sql.SQL("md5({})").format(value))
    if not values:
        query = sql.SQL("SELECT count(*) FROM {t} WHERE {bound}").format(t=side.relation, bound=side.bound())
        return side.conn.execute(query).fetchone()[0], {}
    query = sql.SQL("SELECT GROUPING({v}), {v}, count(*) FROM {t} WHERE {bound} GROUP BY GROUPING SETS ((), {sets})"
                    ).format(v=sql.SQL(", ").join(values), t=side.relation, bound=side.bound(),
                             sets=sql.SQL(", ").join(sql.SQL("({})").format(v) for v in values))
    every = (1 << len(values)) - 1  # GROUPING's bit for a value is set when the row does not group by it
    total, found = 0, {label: {} for label, _ in groups}
    for mask, *row, n in side.conn.execute(query):
        if mask == every:
            total = n
            continue
        i = next(i for i in range(len(values)) if not mask & (1 << (len(values) - 1 - i)))
        found[groups[i][0]][str(row[i])] = n
    return total, found


@dataclass
class MappingDigests:
    """One mapping's legacy side at the snapshot."""

    legacy: str
    key: str
    bucketing: dict  # compare.Bucketing as a dict
    rows: int
    groups: dict[str, dict[str, int]]  # label -> value text (or md5) -> rows
    sets: dict[str, dict[str, Any]]  # name -> {"pairs": [[legacy, new], ...], "buckets": {bucket: digest}}
    max_key: int | None = None  # the highest legacy key (append-only tables compare rows up to it)
    among: list | None = None  # a partial table's legacy keys (its other rows have no legacy source)

    def cut(self) -> Bucketing:
        return Bucketing(**self.bucketing)

    def buckets(self, name: str, pairs: list[tuple[str, str]]) -> dict[int | None, Digest] | None:
        """The recorded digests of a set, if they were taken of exactly these column pairs."""
        found = self.sets.get(name)
        if found is None or [tuple(p) for p in found["pairs"]] != list(pairs):
            return None
        return {None if b == "null" else int(b): tuple(d) for b, d in found["buckets"].items()}


@dataclass
class BaselineDigests:
    taken_at: str
    mappings: dict[str, MappingDigests] = field(default_factory=dict)  # by [tables.<name>]
    skipped: dict[str, str] = field(default_factory=dict)  # mapping -> why it has no digests (PHI-free)
    version: int = VERSION
    dump_sha256: str = ""  # the dump these were taken with (its record's sha256): never trusted for another dump

    def save(self, dump: Path) -> Path:
        path = Path(str(dump) + SUFFIX)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, dump: Path | None) -> BaselineDigests | None:
        """The digests recorded with this dump; None when there are none (a backup taken without them)."""
        if dump is None:
            return None
        try:
            data = json.loads(Path(str(dump) + SUFFIX).read_text())
            if data.get("version") != VERSION:
                return None
            data["mappings"] = {k: MappingDigests(**v) for k, v in data["mappings"].items()}
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def of(self, mapping: TableMap) -> MappingDigests | None:
        found = self.mappings.get(mapping.name or mapping.new)
        if found is None or (found.legacy, found.key) != (mapping.legacy, mapping.source_key):
            return None
        return found


def _jsonable(digests: dict[int | None, Digest]) -> dict[str, list[int]]:
    return {"null" if b is None else str(b): list(d) for b, d in digests.items()}


def of_mapping(conn: psycopg.Connection, gate: GateConfig, mapping: TableMap, key: str) -> MappingDigests:
    """One mapping's legacy side, computed in conn's current transaction (one scan for every digest set)."""
    schema = gate.schema
    side = Side(conn, mapping.legacy, mapping.source_key, [], schema=schema)
    cut = compare.plan(side, row_hash=ROW_HASH)
    sets = column_sets(gate, mapping)
    hashes = {name: compare.columns_hash([o for o, _ in pairs]) for name, pairs in sets.items() if name != "plain"}
    if "plain" in sets:
        set_salt(conn, salt(PhiCodec(key)))
        hashes["plain"] = plain_hash([o for o, _ in sets["plain"]])
    found = compare.digest_sets(side, cut, hashes, md5=PYTHON_FOLDED)
    rows = sum(d[0] for d in found["rows"].values())
    max_key = among = None
    if mapping.append_only:
        max_key = conn.execute(sql.SQL("SELECT coalesce(max({}), 0) FROM {}").format(
            sql.Identifier(mapping.source_key), side.relation)).fetchone()[0]
    if mapping.partial:
        if rows > PARTIAL_KEYS_MAX:
            raise ValueError(f"{mapping.legacy}: {rows} rows, too many keys to record for a partial table")
        among = [k for (k,) in conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
            sql.Identifier(mapping.source_key), side.relation))]
    return MappingDigests(
        legacy=mapping.legacy, key=mapping.source_key, bucketing=asdict(cut), rows=rows,
        groups=grouped_counts(side, [(label, old) for label, old, _ in groupings(mapping)])[1],
        sets={name: {"pairs": [list(p) for p in sets[name]], "buckets": _jsonable(found[name])} for name in sets},
        max_key=max_key, among=among)


def take(dsn: str, snapshot: str | None, gate: GateConfig, key: str,
         imported: threading.Event | None = None, application_name: str | None = None) -> BaselineDigests:
    """Every mapping's legacy digests in the exported snapshot (None: a snapshot of its own). A mapping that cannot
    be digested (a table or column missing, which the checks report themselves) is skipped and says why."""
    result = BaselineDigests(taken_at=datetime.now(UTC).isoformat(timespec="seconds"))
    session = f"{application_name} digests" if application_name else APPLICATION  # a resumed run ends it by name
    with (db.connect(dsn, autocommit=True, application_name=session[:63]) as conn,
          snapshots.session(conn, snapshot=snapshot)):
        if imported is not None:  # the exporting transaction may end now: this one holds the snapshot
            imported.set()
        for mapping in gate.tables:
            name = mapping.name or mapping.new
            try:
                with conn.transaction():
                    result.mappings[name] = of_mapping(conn, gate, mapping, key)
            except (psycopg.Error, ValueError) as exc:
                result.skipped[name] = type(exc).__name__ if isinstance(exc, psycopg.Error) else str(exc)
    return result


class InSnapshot:
    """Runs `take` in a thread on the snapshot take_backup exports, while pg_dump dumps it; `result` after."""

    def __init__(self, dsn: str, gate: GateConfig, key: str, application_name: str | None = None) -> None:
        self.dsn, self.gate, self.key, self.application_name = dsn, gate, key, application_name
        self._thread: threading.Thread | None = None
        self._result: BaselineDigests | None = None
        self._error: BaseException | None = None

    def start(self, snapshot: str) -> None:
        """Returns once the snapshot is imported (the exporter may then commit); the digests go on meanwhile."""
        imported = threading.Event()

        def run() -> None:
            try:
                self._result = take(self.dsn, snapshot, self.gate, self.key, imported, self.application_name)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by result()
                self._error = exc
            finally:
                imported.set()
        self._thread = threading.Thread(target=run, name="baseline-digests", daemon=True)
        self._thread.start()
        imported.wait()

    def save_beside(self, record: Any) -> bool:
        """Wait for the digests and save them beside the backup (record: backup.BackupRecord), bound to its
        sha256. False when they could not be taken: the backup stands, integrity restores it to compare."""
        Path(record.path + SUFFIX).unlink(missing_ok=True)
        try:
            taken = self.result()
        except Exception:  # noqa: BLE001 - an optimisation failed; the checks fall back to the restored backup
            return False
        taken.dump_sha256 = record.sha256
        taken.save(Path(record.path))
        return True

    def result(self) -> BaselineDigests:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RuntimeError("the baseline digests were never started")
        return self._result


def record_backup(dsn: str, folder: Path, gate: GateConfig, key: str,
                  take_backup: Callable[..., Any] | None = None, **options: Any):
    """take_backup with the baseline digests taken in the dump's snapshot, saved beside the dump."""
    digests = InSnapshot(dsn, gate, key, options.get("application_name"))
    record = (take_backup or dump_backup)(dsn, folder, in_snapshot=digests.start, **options)
    digests.save_beside(record)
    return record


class Baseline:
    """The legacy data at backup time as the integrity checks see it: the digests recorded in the backup's
    snapshot, and the restored backup, which `connection` restores (once) only when a check needs to drill."""

    def __init__(self, digests: BaselineDigests | None, connect: Callable[[], psycopg.Connection],
                 catalog: Any = None) -> None:
        self.digests = digests
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self._catalog = catalog  # the legacy catalog at the dump's snapshot (catalog.Catalog), if recorded
        self._theirs: dict[tuple[str, str], dict[str, dict[int | None, Digest]]] = {}

    @classmethod
    def from_backup(cls, dump: Path | None, connect: Callable[[], psycopg.Connection]) -> Baseline:
        """The digests and the legacy catalog recorded with this dump (none: every check restores)."""
        digests = BaselineDigests.load(dump)
        catalog = None
        if digests is not None and dump is not None:
            try:
                record = BackupRecord.load(dump)
                catalog = record.catalog()
            except BackupError:
                record = None
            if record is None or record.sha256 != digests.dump_sha256:  # taken with another dump: not these
                digests = catalog = None
        return cls(digests, connect, catalog)

    def of(self, mapping: TableMap) -> MappingDigests | None:
        return self.digests.of(mapping) if self.digests is not None else None

    def new_side(self, target: psycopg.Connection, mapping: TableMap, schema: str,
                 name: str) -> dict[int | None, Digest]:
        """The new table's digests of one recorded set, taken once per suite. The first call takes the non-PHI
        columns (key included) and the PHI ciphertexts in one scan; the key alone (INT-02) and the relationship
        columns (INT-05) are subsets of the former, so where it agrees in every bucket they agree too, and they
        are scanned for only when it does not. Inside the window nothing else writes the new tables while
        integrity runs (maintenance is on). BucketingMismatch as compare's."""
        recorded = self.of(mapping)
        if recorded is None:
            raise LookupError(f"no recorded digests for {mapping.new}")
        taken = self._theirs.setdefault((target.info.dsn, mapping.name or mapping.new), {})
        if not taken:
            first = [n for n in ("columns", "phi") if n in recorded.sets] or ["rows"]
            taken.update(self._scan(target, mapping, schema, recorded, first))
        if name not in taken and name in SUBSETS_OF_COLUMNS and "columns" in taken and not compare.differing(
                recorded.buckets("columns", [tuple(p) for p in recorded.sets["columns"]["pairs"]]) or {},
                taken["columns"]):
            return recorded.buckets(name, [tuple(p) for p in recorded.sets[name]["pairs"]]) or {}
        if name not in taken:
            taken.update(self._scan(target, mapping, schema, recorded, [name]))
        return taken[name]

    @staticmethod
    def _scan(target: psycopg.Connection, mapping: TableMap, schema: str, recorded: MappingDigests,
              names: list[str]) -> dict[str, dict[int | None, Digest]]:
        among = tuple(recorded.among) if recorded.among is not None else None
        side = Side(target, mapping.new, mapping.key, [], max_key=recorded.max_key, schema=schema, among=among)
        hashes = {n: compare.columns_hash([new for _, new in recorded.sets[n]["pairs"]]) for n in names}
        return compare.digest_sets(side, recorded.cut(), hashes, parallel=compare.workers(), md5=PYTHON_FOLDED)

    @property
    def restored(self) -> bool:
        return self._conn is not None

    def connection(self) -> psycopg.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def catalog(self) -> Any:
        """What `present` reads: the catalog recorded with the dump, else the restored copy's connection."""
        return self._catalog if self._catalog is not None else self.connection()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
