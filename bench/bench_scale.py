"""Benchmark: the whole rehearsal at a chosen size, with the goals of issue 12, in one table.

    .venv/bin/python -m bench.bench_scale --patients 100000
    .venv/bin/python -m bench.bench_scale --patients 20000 --reports /tmp/bench-scale   # keeps the run folder

Runs what scripts/rehearse runs (the configured sandbox provider, every gated phase in this process, the suites
as child processes) and measures, in the same run and on the same sandbox:
  - the data: rows of every mapped table, PHI values (non-NULL encrypted values, legacy before and new after),
    the database's size before and after the migration;
  - each phase's seconds and the maintenance window, from the run's state.json (the after-migration figures below
    are taken between the integrity phase and the deploy, so a run the post-checks roll back still has them;
    their time is taken out of the window);
  - integrity phase seconds / `SELECT count(*)` over every mapped table, legacy tables (timed before the gate, warm)
    plus new tables (timed after it, warm);
  - PHI values verified per second: per phase, the `checked` counts of the checks that decrypt (from the suites'
    results JSON, each check tied to its test) over the durations of every test with a PHI check (the sign-off's
    PHI_WORDS: format, IVs, plaintext patterns, decryption; the decrypting tests alone are shown too), divided by
    the cores the suite used (the most worker processes of its tree alive at once, the suite's own included, at
    most nproc), against a tight in-process loop that only parses and decrypts the new tables' PHI values with
    `cryptography` (one core, timed per batch, the fetching untimed; at most --tight-values values);
  - migration_gate.scan.compare on one table pair (--pair, a [tables.*] name; its key and non-PHI columns) against
    reladiff (hashdiff, one thread per database: the legacy table is copied into a second database of the same
    cluster before the gate runs) and against a naive check that fetches both tables into Python and compares
    (skipped above --naive-rows rows: it holds both tables in memory, on purpose);
  - peak RSS of each suite: its largest process's own high-water mark (VmHWM) and its whole process tree's summed
    RSS, both read from /proc 5 times a second (TreeSampler says why not getrusage).
Where a goal of issue 12 item 6 is missed, the table says by how much. The benchmark itself keeps no table in
memory except in the naive check. Times on a shared machine vary by 20-30% between runs: compare ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

from migration_gate.app.hooks import CutoverTarget
from migration_gate.config import GateConfig, TableMap, load_config
from migration_gate.core.phi import parse_key
from migration_gate.core.progress import Progress
from migration_gate.report.signoff import PHI_WORDS
from migration_gate.run import attest
from migration_gate.run.gate import Gate
from migration_gate.run.provider import load_provider
from migration_gate.run.runstate import PLAN, PhaseRecord, RunState
from migration_gate.scan.compare import Side, compare

# Issue 12 item 6 (at 1,000,000 patients on the 2-core machine).
GOAL_WINDOW_MIN = 10.0
GOAL_PREMIGRATION_MIN = 15.0
GOAL_INTEGRITY_X_COUNT = 20.0
GOAL_PHI_OF_TIGHT = 0.5
GOAL_RSS_MB = 500.0
# The data-size rows the issue names, by new table (each falls back to "not in the description").
SIZE_TABLES = {"patients": "patients", "sessions": "clinical_sessions", "plans": "patient_treatment_plans"}
SUITES = ("premigration", "backup", "integrity", "postmigration")
DECRYPTING = "decrypt"  # a check whose name says it decrypts (the PHI checks that verify values, not shapes)
BATCH = 5_000
COPY_DB = "bench_legacy_copy"


# -- what is measured -------------------------------------------------------------------------------------------

@dataclass
class PhiRate:
    """One phase's PHI verification: values its decrypting checks counted, over the seconds of their tests."""

    phase: str
    values: int
    seconds: float  # the tests whose checks decrypt
    cores: int
    all_seconds: float = 0.0  # every test with a PHI check (format, IVs, plaintext patterns, decryption)

    @property
    def per_core(self) -> float:
        return self.values / self.seconds / self.cores if self.seconds else 0.0

    @property
    def all_per_core(self) -> float:
        return self.values / self.all_seconds / self.cores if self.all_seconds else 0.0


@dataclass
class Timed:
    """One comparator on the table pair: seconds (None: not run) and what it found or why it did not run."""

    name: str
    seconds: float | None
    note: str


@dataclass
class Measured:
    patients: int
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows (legacy tables before, new ones after)
    legacy_of: dict[str, str] = field(default_factory=dict)  # new table -> its legacy table (the description's)
    phi_values: tuple[int | None, int | None] = (None, None)  # legacy, new
    mb: tuple[float | None, float | None] = (None, None)  # database size before, after
    phases: dict[str, float | None] = field(default_factory=dict)
    status: str = "not run"
    window_min: float | None = None
    count_s: tuple[float | None, float | None] = (None, None)  # count(*) over legacy tables, over new tables
    phi: list[PhiRate] = field(default_factory=list)
    tight: tuple[int, float] = (0, 0.0)  # values, seconds of the tight loop
    pair: str = ""
    compared: list[Timed] = field(default_factory=list)
    largest_mb: dict[str, float] = field(default_factory=dict)  # suite -> peak of its largest process (VmHWM)
    tree_mb: dict[str, float] = field(default_factory=dict)  # suite -> peak of its process tree's summed RSS
    machine: str = ""
    run_dir: str = ""
    load: list[float] = field(default_factory=list)  # 1-minute load average at the start and at the end

    @property
    def tight_rate(self) -> float:
        return self.tight[0] / self.tight[1] if self.tight[1] else 0.0


# -- the database ------------------------------------------------------------------------------------------------

def _tables(gate: GateConfig, side: str) -> list[str]:
    return list(dict.fromkeys(getattr(m, side) for m in gate.tables))


def _existing(conn: psycopg.Connection, schema: str, tables: list[str]) -> list[str]:
    found = {name for (name,) in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))}
    return [t for t in tables if t in found]


def count_seconds(conn: psycopg.Connection, schema: str, tables: list[str]) -> tuple[float, dict[str, int]]:
    """`SELECT count(*)` over the tables, warm (a first untimed pass reads them into cache), and their rows."""
    def counts() -> dict[str, int]:
        return {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, t))).fetchone()[0]
                for t in tables}
    counts()
    began = time.perf_counter()
    rows = counts()
    return time.perf_counter() - began, rows


def phi_columns(mapping: TableMap, side: str) -> list[str]:
    """The encrypted columns of a mapping: legacy ciphertext, or new ciphertext (mapped, encrypted, new PHI)."""
    if side == "legacy":
        return list(mapping.phi)
    rules = [c for c, rule in mapping.new_columns.items() if rule.kind == "phi"]
    return list(dict.fromkeys([*mapping.phi.values(), *mapping.encrypt.values(), *rules]))


def _phi_by_table(gate: GateConfig, side: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for mapping in gate.tables:
        table = getattr(mapping, side)
        found[table] = list(dict.fromkeys([*found.get(table, []), *phi_columns(mapping, side)]))
    return {t: cols for t, cols in found.items() if cols}


def _present(conn: psycopg.Connection, gate: GateConfig, side: str) -> dict[str, list[str]]:
    """The side's PHI columns by table, only those the database has (a rolled-back run has legacy tables only)."""
    found: dict[str, set[str]] = {}
    for table, column in conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                                      "WHERE table_schema = %s", (gate.schema,)):
        found.setdefault(table, set()).add(column)
    shown = {t: [c for c in cols if c in found.get(t, ())] for t, cols in _phi_by_table(gate, side).items()}
    return {t: cols for t, cols in shown.items() if cols}


def phi_value_count(conn: psycopg.Connection, gate: GateConfig, side: str) -> int:
    """Non-NULL, non-empty encrypted values in the side's tables, counted by the server (one scan per table)."""
    total = 0
    for table, columns in _present(conn, gate, side).items():
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(" + ").join(sql.SQL("count(NULLIF({}, ''))").format(sql.Identifier(c)) for c in columns),
            sql.Identifier(gate.schema, table))
        total += conn.execute(query).fetchone()[0]
    return total


def database_mb(conn: psycopg.Connection) -> float:
    return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20


def with_dbname(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


def as_uri(dsn: str) -> str:
    """The URI form reladiff connects with (it takes no key=value strings)."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    password = f":{info['password']}" if info.get("password") else ""
    where = f"{info.get('host', '')}:{info.get('port', 5432)}/{info['dbname']}"
    return f"postgresql://{info.get('user', '')}{password}@{where}"


def copy_table(source: str, target: str, schema: str, table: str, columns: list[str]) -> int:
    """The table's columns (types from the catalog, the first column as primary key) into another database of the
    cluster, streamed with COPY: never held in memory."""
    with psycopg.connect(source) as src, psycopg.connect(target) as dst:
        types = dict(src.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a JOIN pg_class c "
            "ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped", (schema, table)).fetchall())
        definition = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c])) for c in columns)
        dst.execute(sql.SQL("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} ({d}, PRIMARY KEY ({k}))").format(
            t=sql.Identifier(table), d=definition, k=sql.Identifier(columns[0])))
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        with src.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)").format(
                names, sql.Identifier(schema, table))) as out, \
                dst.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
                    sql.Identifier(table), names)) as into:
            for block in out:
                into.write(block)
        dst.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
        return dst.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]


# -- PHI: the suites' rate and the tight loop --------------------------------------------------------------------

def phi_rates(run_dir: Path, cores: dict[str, int]) -> list[PhiRate]:
    """Per phase, from its results JSON (data the plugin writes, not text): the values its decrypting checks
    counted and the durations of the tests that ran them."""
    rates = []
    for phase in PLAN:
        path = run_dir / phase / f"criteria-{phase}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        durations = {t["nodeid"]: float(t.get("duration") or 0) for t in data.get("tests", [])}
        ran = [c for c in data.get("checks", [])
               if DECRYPTING in c["check"].lower() and c.get("unit", "values") == "values" and c.get("test")]
        if not ran:
            continue
        tests = {c["test"] for c in ran}
        phi_tests = tests | {c["test"] for c in data.get("checks", []) if c.get("test")
                             and any(w in c["check"] for w in PHI_WORDS) and "non-PHI" not in c["check"]}
        rates.append(PhiRate(phase, sum(c["checked"] for c in ran), sum(durations.get(t, 0.0) for t in tests),
                             max(1, cores.get(phase, 1)), sum(durations.get(t, 0.0) for t in phi_tests)))
    return rates


def tight_loop(dsn: str, gate: GateConfig, key: str, limit: int) -> tuple[int, float]:
    """Parse and decrypt up to `limit` of the new tables' PHI values (the legacy ones after a rollback), in process,
    one core: (values, seconds).
    Only the parsing and decrypting is timed; values are fetched in batches through a server-side cursor."""
    aead = AESGCM(parse_key(key))
    done, seconds = 0, 0.0
    with psycopg.connect(dsn) as conn:
        for table, columns in (_present(conn, gate, "new") or _present(conn, gate, "legacy")).items():
            if done >= limit:
                break
            with conn.cursor(name="bench_tight") as cursor:
                cursor.execute(sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(gate.schema, table)))
                while done < limit and (rows := cursor.fetchmany(BATCH)):
                    values = [v for row in rows for v in row if v][:limit - done]
                    began = time.perf_counter()
                    for value in values:
                        _, iv, tag, ct = value.split(":")
                        aead.decrypt(bytes.fromhex(iv), bytes.fromhex(ct) + bytes.fromhex(tag), None).decode()
                    seconds += time.perf_counter() - began
                    done += len(values)
            conn.commit()
    return done, seconds


# -- the table pair: ours, reladiff, naive -----------------------------------------------------------------------

def compare_pair(legacy_dsn: str, new_dsn: str, mapping: TableMap, schema: str, naive_rows: int) -> list[Timed]:
    """The same key and non-PHI columns compared three ways, each timed alone on warm tables."""
    old_cols, new_cols = list(mapping.columns), list(mapping.columns.values())
    timed = []
    with psycopg.connect(legacy_dsn) as left, psycopg.connect(new_dsn) as right:
        rows = [count_seconds(left, "public", [mapping.legacy])[1][mapping.legacy],
                count_seconds(right, schema, [mapping.new])[1][mapping.new]]  # warm
        began = time.perf_counter()
        diff = compare(Side(left, mapping.legacy, mapping.source_key, old_cols),
                       Side(right, mapping.new, mapping.key, new_cols, schema=schema))
        differing = len(diff.missing) + len(diff.extra) + sum(len(k) for k in diff.columns.values())
        timed.append(Timed("migration_gate.scan.compare", time.perf_counter() - began,
                           f"{differing} differences, {diff.buckets_compared} buckets"))
    timed.append(_reladiff(legacy_dsn, new_dsn, mapping, schema))
    if max(rows) > naive_rows:
        timed.append(Timed("naive (both tables into Python)", None,
                           f"skipped: {max(rows):,} rows > --naive-rows {naive_rows:,}"))
    else:
        timed.append(_naive(legacy_dsn, new_dsn, mapping, schema))
    return timed


def _reladiff(legacy_dsn: str, new_dsn: str, mapping: TableMap, schema: str) -> Timed:
    name = "reladiff (hashdiff)"
    try:
        import reladiff  # noqa: PLC0415 - optional: bash scripts/setup --dev
    except ImportError as exc:
        return Timed(name, None, f"not installed ({exc.name}): bash scripts/setup --dev")
    try:
        began = time.perf_counter()
        left = reladiff.connect_to_table(as_uri(legacy_dsn), ("public", mapping.legacy), mapping.source_key,
                                         extra_columns=tuple(mapping.columns))
        right = reladiff.connect_to_table(as_uri(new_dsn), (schema, mapping.new), mapping.key,
                                          extra_columns=tuple(mapping.columns.values()))
        with reladiff.diff_tables(left, right, algorithm=reladiff.Algorithm.HASHDIFF) as diff:
            differing = sum(1 for _ in diff)
        seconds = time.perf_counter() - began
        with contextlib.suppress(Exception):
            left.database.close()
            right.database.close()
        return Timed(name, seconds, f"{differing} differing rows reported")
    except Exception as exc:  # noqa: BLE001 - the table says it could not compare, and why (class only)
        return Timed(name, None, f"could not compare: {exc.__class__.__name__}")


def _naive(legacy_dsn: str, new_dsn: str, mapping: TableMap, schema: str) -> Timed:
    """Deliberately naive: both tables fetched whole into dicts, compared in Python."""
    began = time.perf_counter()
    with psycopg.connect(legacy_dsn) as left, psycopg.connect(new_dsn) as right:
        def fetch(conn: psycopg.Connection, relation: sql.Identifier, key: str, cols: list[str]) -> dict:
            query = sql.SQL("SELECT {}, {} FROM {}").format(sql.Identifier(key), sql.SQL(", ").join(
                map(sql.Identifier, cols)), relation)
            return {row[0]: row[1:] for row in conn.execute(query).fetchall()}
        old = fetch(left, sql.Identifier("public", mapping.legacy), mapping.source_key, list(mapping.columns))
        new = fetch(right, sql.Identifier(schema, mapping.new), mapping.key, list(mapping.columns.values()))
        differing = len(old.keys() ^ new.keys()) + sum(old[k] != new[k] for k in old.keys() & new.keys())
    return Timed("naive (both tables into Python)", time.perf_counter() - began, f"{differing} differing rows")


# -- memory: each suite's process tree, sampled ------------------------------------------------------------------

class TreeSampler(threading.Thread):
    """Every `interval` s: each suite child of this process (pytest -m <marker>) and its descendants, per marker:
    the largest VmHWM of one process (the kernel's own high-water mark of that process, so exact but for what it
    grew after the last sample), the peak of their summed VmRSS (sampled), and the most of its worker processes
    alive at once (the suite's process included). Reads /proc only (Linux).

    Not getrusage/wait4: a child's ru_maxrss includes the RSS its parent had when it was spawned (the kernel keeps
    the high-water mark from before the exec), so every suite the gate starts would read as large as the gate."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.largest_mb: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self.workers: dict[str, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            with contextlib.suppress(OSError):
                self.sample()

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)

    def sample(self) -> None:
        parent: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):  # the fields after "(comm)": state, ppid
                    stat = Path(f"/proc/{entry.name}/stat").read_text()
                    parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        children: dict[int, list[int]] = {}
        for pid, ppid in parent.items():
            children.setdefault(ppid, []).append(pid)
        for root in children.get(os.getpid(), []):
            marker = _marker(root)
            if marker is None:
                continue
            tree, rss, largest, workers, root_args = [root], 0, 0, 0, _cmdline(root)
            while tree:
                pid = tree.pop()
                tree.extend(children.get(pid, []))
                now, high = _memory_kb(pid)
                rss, largest = rss + now, max(largest, high)
                workers += _is_worker(pid, root_args)
            self.largest_mb[marker] = max(self.largest_mb.get(marker, 0.0), largest / 1024)
            self.peak_mb[marker] = max(self.peak_mb.get(marker, 0.0), rss / 1024)
            self.workers[marker] = max(self.workers.get(marker, 0), workers)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _marker(pid: int) -> str | None:
    args = _cmdline(pid)
    if "pytest" in args and "-m" in args:
        index = args.index("-m", args.index("pytest"))
        return args[index + 1] if index + 1 < len(args) else None
    return None


def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB; zeros when it is gone or has no memory of its own (a zombie)."""
    found = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line[:5]] = int(line.split()[1])
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


def _is_worker(pid: int, root_args: list[str]) -> bool:
    """The suite's own process or one of its worker processes (forked: the same command line; spawned:
    multiprocessing's; from a forkserver: its children), not a tool it runs (pg_restore, psql, a log command) nor
    multiprocessing's idle helpers (the forkserver itself, the resource tracker)."""
    args = _cmdline(pid)
    if not args:
        return False
    if args == root_args or any("multiprocessing.spawn" in a for a in args):
        return True
    return any("forkserver" in a for a in args) and any("forkserver" in a for a in _cmdline(_parent(pid)))


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


# -- the run -----------------------------------------------------------------------------------------------------

def load_average() -> float:
    """Others' work on a shared machine shows here: read the figures with it."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine(dsn: str | None = None) -> str:
    ram = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0) / 2**20
    version = "?"
    if dsn:
        with contextlib.suppress(psycopg.Error), psycopg.connect(dsn) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    return f"{os.cpu_count()} cores (nproc), {ram:.1f} GiB RAM, PostgreSQL {version}"


@contextlib.contextmanager
def rehearsal_env() -> Iterator[None]:
    """What scripts/rehearse sets for its phase suites (a sandbox run by definition), restored afterwards."""
    saved = {k: os.environ.get(k) for k in ("GATE_SANDBOX", "GATE_REHEARSAL")}
    os.environ.pop("GATE_SANDBOX", None)
    os.environ["GATE_REHEARSAL"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def measure(patients: int, reports: Path, pair: str = "clinical_sessions", seed: int = 1,
            tight_values: int = 500_000, naive_rows: int = 400_000, quiet: bool = False) -> Measured:
    """One rehearsal at this size and every figure of the table, measured around and after it."""
    gate = load_config()
    provider = load_provider(gate.sandbox_provider)
    mapping = next((m for m in gate.tables if m.name == pair), None)
    if mapping is None:
        raise SystemExit(f"bench_scale: --pair {pair}: no [tables.{pair}] in {gate.path}")
    progress = Progress(quiet=quiet)
    run_dir = reports / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    measured = Measured(patients=patients, pair=f"{mapping.legacy} -> {mapping.new}", run_dir=str(run_dir),
                        legacy_of={m.new: m.legacy for m in gate.tables if not m.partial})
    sampler = TreeSampler()
    measured.load.append(load_average())
    with rehearsal_env():
        sandbox = provider.rehearsal(run_dir / "sandbox", patients, seed, progress)
        try:
            sandbox.start()
            dsn = sandbox.dsn
            measured.machine = machine(dsn)
            copy = with_dbname(dsn, COPY_DB)
            with psycopg.connect(dsn, autocommit=True) as conn:
                legacy = _existing(conn, gate.schema, _tables(gate, "legacy"))
                seconds, rows = count_seconds(conn, gate.schema, legacy)
                measured.count_s = (seconds, None)
                measured.rows.update(rows)
                measured.phi_values = (phi_value_count(conn, gate, "legacy"), None)
                measured.mb = (database_mb(conn), None)
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(COPY_DB)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(COPY_DB)))
            copy_table(dsn, copy, gate.schema, mapping.legacy, [mapping.source_key, *mapping.columns])
            progress.say(f"bench: legacy measured; {mapping.legacy} copied into {COPY_DB} for the comparisons")
            target = CutoverTarget(dsn=dsn, key=provider.key, api_base_url=sandbox.api_base_url,
                                   api_username=gate.sandbox_username, api_password=gate.sandbox_password,
                                   hooks=sandbox.hooks, app_log_file=sandbox.app_log_file,
                                   api_headers=sandbox.api_headers, allow_writes=True)
            attest.record_all(gate, run_dir, by="bench_scale", note="recorded by bench/bench_scale.py")
            def after_migration() -> None:  # the new tables as migrated, whatever the post-checks decide later
                with psycopg.connect(dsn, autocommit=True) as conn:
                    new = _existing(conn, gate.schema, _tables(gate, "new"))
                    seconds, rows = count_seconds(conn, gate.schema, new)
                    measured.count_s = (measured.count_s[0], seconds)
                    measured.rows.update(rows)
                    measured.phi_values = (measured.phi_values[0], phi_value_count(conn, gate, "new"))
                    measured.mb = (measured.mb[0], database_mb(conn))
                progress.say("bench: tight decryption loop")
                measured.tight = tight_loop(dsn, gate, provider.key, tight_values)
                progress.say(f"bench: {measured.pair} compared three ways")
                measured.compared = compare_pair(copy, dsn, mapping, gate.schema, naive_rows)

            runner = MeasuringGate(gate, target, run_dir, progress, log_source=getattr(sandbox, "log_source", None),
                                   before_deploy=after_migration)
            sampler.start()
            try:
                state = runner.run()
            finally:
                sampler.stop()
            measured.largest_mb, measured.tree_mb = dict(sampler.largest_mb), dict(sampler.peak_mb)
            read_state(measured, state, paused=runner.paused)
            measured.phi = phi_rates(run_dir, {m: min(os.cpu_count() or 1, n) for m, n in sampler.workers.items()})
            if not measured.tight[0]:  # the run never got to the deploy: the legacy values, for the PHI rows
                measured.tight = tight_loop(dsn, gate, provider.key, tight_values)
        finally:
            sandbox.stop()
    measured.load.append(load_average())
    return measured


def read_state(measured: Measured, state: RunState, paused: float = 0.0) -> None:
    """Phase seconds, the verdict and the maintenance window (maintenance on to go-live, less the benchmark's own
    measurements in it) from the run's state."""
    measured.phases = {p.name: p.seconds for p in state.phases}
    measured.status = state.status
    if state.maintenance_on_at and state.maintenance_off_at:
        measured.window_min = (state.maintenance_off_at - state.maintenance_on_at - paused) / 60


class MeasuringGate(Gate):
    """The gate, with the benchmark's after-migration measurements taken just before the deploy phase starts (the
    integrity phase passed, the new tables are there and quiet, whatever the post-checks decide later). They fall
    between two phases, so no phase's seconds include them; their time (`paused`) is taken out of the window."""

    def __init__(self, *args, before_deploy: Callable[[], None], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.before_deploy = before_deploy
        self.paused = 0.0

    def _step(self, record: PhaseRecord, action: Callable[[PhaseRecord], bool]) -> bool:
        if record.name == "deploy":
            began = time.monotonic()
            try:
                self.before_deploy()
            except Exception as exc:  # noqa: BLE001 - the benchmark's figures go n/a; the run goes on
                self.progress.say(f"bench: after-migration measurements failed: {exc.__class__.__name__}")
            self.paused += time.monotonic() - began
        return super()._step(record, action)


# -- the table ---------------------------------------------------------------------------------------------------

def _n(value: float | None, fmt: str = ",.0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def _short(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def at_most(value: float | None, goal: float, unit: str) -> str:
    """'met', or by how much the figure is over its goal."""
    if value is None:
        return "not measured"
    if value <= goal:
        return "met"
    return f"MISSED by {_short(value - goal)}{unit} ({value / goal:.1f}x the goal)"


def at_least(value: float | None, goal: float) -> str:
    """'met', or by how much the figure is under its goal."""
    if value is None:
        return "not measured"
    if value >= goal:
        return "met"
    return f"MISSED by {_short(goal - value)} ({goal / value:.1f}x short)" if value else "MISSED (zero)"


def table(m: Measured) -> list[tuple[str, str, str, str]]:
    """(what, measured, goal, verdict) rows, in the order the issue lists them."""
    rows: list[tuple[str, str, str, str]] = []
    add = rows.append
    for label, new in SIZE_TABLES.items():
        legacy = m.legacy_of.get(new, "")  # as seeded (the post-checks add a row or two to the new tables)
        add((f"data: {label} ({legacy or new})", _n(m.rows.get(legacy, m.rows.get(new))), "", ""))
    add(("data: PHI values (legacy / new)", f"{_n(m.phi_values[0])} / {_n(m.phi_values[1])}", "", ""))
    add(("data: database MB (before / after migration)", f"{_n(m.mb[0], ',.1f')} / {_n(m.mb[1], ',.1f')}", "", ""))
    for phase in PLAN:
        seconds = m.phases.get(phase)
        goal, verdict = "", ""
        if phase == "premigration":
            goal = f"< {GOAL_PREMIGRATION_MIN:g} min"
            verdict = at_most(None if seconds is None else seconds / 60, GOAL_PREMIGRATION_MIN, " min")
        add((f"phase: {phase}", _n(seconds, ",.1f", " s"), goal, verdict))
    add(("maintenance window (on to go-live)", _n(m.window_min, ",.2f", " min") + f", run {m.status}",
         f"< {GOAL_WINDOW_MIN:g} min", at_most(m.window_min, GOAL_WINDOW_MIN, " min")))
    counted = None if None in m.count_s else sum(m.count_s)
    add(("count(*) over mapped tables (legacy + new)",
         f"{_n(m.count_s[0], '.3f')} + {_n(m.count_s[1], '.3f')} s", "", ""))
    integrity = m.phases.get("integrity")
    ratio = integrity / counted if integrity is not None and counted else None
    add(("integrity phase / count(*)", _n(ratio, ",.0f", "x"), f"<= {GOAL_INTEGRITY_X_COUNT:g}x",
         at_most(ratio, GOAL_INTEGRITY_X_COUNT, "x")))
    add(("PHI tight loop (parse + decrypt, 1 core)", f"{_n(m.tight_rate)} values/s ({m.tight[0]:,} values)", "", ""))
    for rate in m.phi:
        of_tight = rate.all_per_core / m.tight_rate if m.tight_rate else None
        decrypting = rate.per_core / m.tight_rate if m.tight_rate else None
        add((f"PHI verified per core / tight loop: {rate.phase}",
             f"{_n(of_tight, '.2f')}: {rate.values:,} values in {rate.all_seconds:.1f} s of PHI tests on {rate.cores} "
             f"core(s) = {rate.all_per_core:,.0f}/s per core (the decrypting tests alone: {rate.seconds:.1f} s, "
             f"{rate.per_core:,.0f}/s, {_n(decrypting, '.2f')})", f">= {GOAL_PHI_OF_TIGHT:g}",
             at_least(of_tight, GOAL_PHI_OF_TIGHT)))
    if not m.phi:
        add(("PHI verified per core / tight loop", "n/a (no decrypting check in the results)",
             f">= {GOAL_PHI_OF_TIGHT:g}", "not measured"))
    ours = next((t for t in m.compared if t.name == "migration_gate.scan.compare"), None)
    add((f"compare {m.pair}: migration_gate.scan.compare", _timed(ours), "", ""))
    for other in [t for t in m.compared if t is not ours] or [Timed("reladiff / naive", None, "not run")]:
        ratio = ours.seconds / other.seconds if ours and ours.seconds and other.seconds else None
        goal = "< 1 (faster)" if other.name.startswith("reladiff") else ""
        add((f"ours / {other.name}", f"{_n(ratio, '.2f')} ({_timed(other)})", goal,
             at_most(ratio, 1.0, "") if goal else ""))
    for suite in SUITES:
        largest, tree = m.largest_mb.get(suite), m.tree_mb.get(suite)
        shown = f"{_n(largest, ',.0f', ' MB')} largest process (VmHWM), {_n(tree, ',.0f', ' MB')} whole tree (sampled)"
        worst = max((v for v in (largest, tree) if v is not None), default=None)
        add((f"peak RSS: {suite} suite", shown, f"< {GOAL_RSS_MB:g} MB", at_most(worst, GOAL_RSS_MB, " MB")))
    return rows


def _timed(timed: Timed | None) -> str:
    if timed is None:
        return "not run"
    return f"{timed.seconds:.2f} s, {timed.note}" if timed.seconds is not None else timed.note


def render(m: Measured, rows: list[tuple[str, str, str, str]]) -> str:
    load = " -> ".join(f"{x:.1f}" for x in m.load) or "?"
    head = (f"bench_scale: {m.patients:,} patients; {m.machine}; load average {load}; run {m.run_dir}\n\n"
            "| what | measured | goal (issue 12 item 6) | verdict |\n|---|---|---|---|\n")
    return head + "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reports", type=Path, default=None, help="where the run folder goes (default: a temporary "
                                                                    "folder, deleted afterwards)")
    parser.add_argument("--pair", default="clinical_sessions", help="[tables.*] name of the pair compared three ways")
    parser.add_argument("--tight-values", type=int, default=500_000, help="values the tight loop decrypts at most")
    parser.add_argument("--naive-rows", type=int, default=400_000,
                        help="the naive comparison is skipped above this many rows in a table (it holds both)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        reports = args.reports or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
        measured = measure(args.patients, reports, args.pair, args.seed, args.tight_values, args.naive_rows,
                           args.quiet)
        text = render(measured, table(measured))
        print(text)
        if args.reports:  # kept with the run it measured
            (Path(measured.run_dir) / "bench.md").write_text(text + "\n")
            (Path(measured.run_dir) / "bench.json").write_text(json.dumps(asdict(measured), indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
