"""Benchmark: where a backup's and a restore's time goes (pg_dump, gzip, the age stream, pg_restore, -j).

    .venv/bin/python bench/bench_backup.py --patients 100000

Seeds an embedded cluster and times, one run each, every option the backup could take: pg_dump alone into
/dev/null at several compression levels, the same through the age encryptor into a file, the encryptor alone,
directory format with -j, and pg_restore from a pipe, from a seekable file, and with -j. Prints seconds and MB.
The synthetic data holds no real PHI; the plaintext files this writes live in a temporary folder, deleted after.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pyrage

from migration_gate.backup.dump import _stream_dump, take_backup
from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.offsite import store_offsite
from migration_gate.backup.reading import stream_plaintext
from migration_gate.backup.record import BackupRecord, Hashing
from migration_gate.backup.restores import restore
from migration_gate.backup.tools import split_password
from migration_gate.checks import backups
from migration_gate.config import load_config
from migration_gate.db import catalog
from migration_gate.db.binaries import find_binaries
from migration_gate.db.checksums import table_checksum
from migration_gate.db.embedded import EmbeddedPostgres
from sandbox.roles import create_app_role
from sandbox.seed import seed_legacy

MB = 1 << 20


def timed(label: str, rows: list, func, *args, **kwargs):
    started = time.perf_counter()
    out = func(*args, **kwargs)
    seconds = time.perf_counter() - started
    size = out if isinstance(out, int) else 0
    rows.append((label, seconds, size / MB))
    print(f"{label:<58} {seconds:7.1f} s {size / MB:9.1f} MB", flush=True)
    return out


def run(command: list[str], env: dict[str, str], stdout=subprocess.DEVNULL) -> None:
    done = subprocess.run(command, env=env, stdout=stdout, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {done.stderr.decode()[-400:]}")


def dump_to(path: Path | None, dsn: str, env: dict[str, str], fmt: str, level: int, jobs: int = 1) -> int:
    tool = find_binaries().tool("pg_dump")
    args = [tool, f"--format={fmt}", f"--compress={level}", f"--dbname={dsn}"]
    if jobs > 1:
        args.append(f"--jobs={jobs}")
    if path is None:
        with open(os.devnull, "wb") as sink:
            proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE)
            counter = Hashing(None)
            assert proc.stdout is not None
            while block := proc.stdout.read(1 << 16):
                counter.size += len(block)
                sink.write(block)
            proc.wait()
            return counter.size
    run([*args, f"--file={path}"], env)
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


def dump_age(path: Path, dsn: str, env: dict[str, str], keys: BackupKeys, level: int) -> int:
    tool = find_binaries().tool("pg_dump")
    plain, out = _stream_dump([tool, "--format=custom", f"--compress={level}", f"--dbname={dsn}"], env,
                              path, keys, 3600)
    return out.size


def encrypt_only(data: bytes, path: Path, keys: BackupKeys) -> int:
    with open(path, "wb") as raw:
        out = Hashing(raw)
        pyrage.encrypt_io(Hashing(io.BytesIO(data)), out, keys.age_recipients())
    return out.size


def restore_cmd(server: EmbeddedPostgres, name: str, args: list[str], env: dict[str, str]) -> int:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    plain, secret = split_password(server.dsn(name))
    run([find_binaries().tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={plain}",
         *args], env | {"PGPASSWORD": secret.get("PGPASSWORD", "")})
    return 0


class CopyHooks:
    """store_backup and fetch_backup as the sandbox's are: a copy into another folder and back."""

    def __init__(self, store: Path) -> None:
        self.store = store
        store.mkdir(exist_ok=True)

    def store_backup(self, env: dict[str, str]) -> str:
        copy = self.store / env["GATE_BACKUP_NAME"]
        shutil.copyfile(env["GATE_BACKUP_FILE"], copy)
        return str(copy)

    def fetch_backup(self, env: dict[str, str]) -> None:
        shutil.copyfile(env["GATE_BACKUP_LOCATION"], env["GATE_BACKUP_DEST"])


def old_backup(dsn: str, path: Path, keys: BackupKeys) -> int:
    """take_backup as it was: the dump at gzip 1, then every table's checksum in the snapshot, in turn."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        plain_dsn, env = split_password(dsn)
        _, out = _stream_dump([find_binaries().tool("pg_dump"), "--format=custom", "--compress=1",
                               f"--snapshot={snapshot}", f"--dbname={plain_dsn}"], env, path, keys, 3600)
        for table in catalog.inspect(conn).tables.values():
            table_checksum(conn, table.name, schema=table.schema)
        conn.execute("COMMIT")
    return out.size


def gate_functions(pg: EmbeddedPostgres, dsn: str, folder: Path, keys: BackupKeys, rows: list) -> None:
    """What the gate runs: take_backup (dump, age stream, the snapshot's checksums) and BAK-03 (restore, then
    compare every table's checksum), as before this change (gzip 1, one job) and with the options."""
    timed("before: pg_dump -Z1 piped into age, then the checksums one table after another", rows, old_backup, dsn,
          folder / "old.age", keys)
    for compress, jobs in ((1, 1), (0, 1), (0, 2)):
        record = timed(f"take_backup -Z{compress}, checksums with {jobs} job(s)", rows,
                       lambda c=compress, j=jobs: take_backup(dsn, folder / f"gate-{c}-{j}", keys=keys,
                                                              compress=c, jobs=j))
        rows[-1] = (*rows[-1][:2], record.size / MB)
    for compress, jobs in ((1, 1), (0, 2)):
        record = BackupRecord.load(next((folder / f"gate-{compress}-{jobs}").glob("*.age")))
        timed(f"store_offsite (copy off, fetch back, sha256, decrypt), -Z{compress} file", rows,
              lambda r=record: store_offsite(r, CopyHooks(folder / "offsite"), "bench", keys) and 0)
    for compress, jobs in ((1, 1), (0, 1), (0, 2)):
        dump = next((folder / f"gate-{compress}-{1 if compress else 2}").glob("*.age"))
        result = timed(f"BAK-03 restore + compare, -Z{compress} file, {jobs} job(s)", rows,
                       lambda d=dump, j=jobs: backups.restores_to_recorded_content(d, pg.dsn(), keys, jobs=j))
        assert result.ok, result.problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--levels", default="0,1,6")
    parser.add_argument("--gate-only", action="store_true", help="only take_backup and BAK-03, old and new ways")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    rows: list = []
    keys = BackupKeys.generate()
    with EmbeddedPostgres() as pg, tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        folder = Path(tmp)
        create_app_role(pg, load_config().app_role)
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        dsn = pg.dsn("bench")
        seeded = seed_legacy(dsn, args.patients)
        with psycopg.connect(dsn) as conn:
            mb = conn.execute("SELECT pg_database_size('bench')").fetchone()[0] / MB
        print(f"seeded {args.patients:,} patients in {seeded.seconds:.0f} s; database {mb:.0f} MB", flush=True)
        plain_dsn, env = split_password(dsn)
        if args.gate_only:
            gate_functions(pg, dsn, folder, keys, rows)
        else:
            options(pg, plain_dsn, env, folder, keys, levels, rows)
            gate_functions(pg, dsn, folder, keys, rows)
    print("\n| option | seconds | MB |\n|---|---|---|")
    for label, seconds, size in rows:
        print(f"| {label} | {seconds:.1f} | {size:.1f} |")


def options(pg: EmbeddedPostgres, plain_dsn: str, env: dict[str, str], folder: Path, keys: BackupKeys,
            levels: list[int], rows: list) -> None:
    """Each building block alone: pg_dump at each level, with and without the age stream, the encryptor alone,
    directory format with -j, and pg_restore from a pipe, a seekable file and a directory."""
    for level in levels:
        timed(f"pg_dump -Fc -Z{level} into /dev/null", rows, dump_to, None, plain_dsn, env, "custom", level)
    for level in levels:
        timed(f"pg_dump -Fc -Z{level} piped into age (pyrage), into a file", rows, dump_age, folder / f"z{level}.age",
              plain_dsn, env, keys, level)
    for level in levels:
        timed(f"pg_dump -Fc -Z{level} --file (plaintext, seekable)", rows, dump_to, folder / f"z{level}.dump",
              plain_dsn, env, "custom", level)
    data = (folder / f"z{levels[0]}.dump").read_bytes()
    timed(f"age encrypt alone ({len(data) / MB:.0f} MB from memory)", rows, encrypt_only, data,
          folder / "enc.age", keys)
    del data
    timed("age decrypt alone (Z1 file, hashed, nothing written)", rows,
          lambda: stream_plaintext(folder / "z1.age", keys, None).size)
    for level in (0, 1):
        if level in levels:
            timed(f"pg_dump -Fd -Z{level} -j2", rows, dump_to, folder / f"d{level}", plain_dsn, env,
                  "directory", level, 2)
    # restores: the gate's way (age -> pg_restore stdin), then from seekable plaintext sources
    for level in levels:
        for jobs in (1, 2):
            timed(f"restore: age Z{level} -> {jobs} pg_restore stream(s)", rows,
                  lambda lv=level, j=jobs: restore(folder / f"z{lv}.age", pg.dsn(), f"r_age{lv}_{j}",
                                                   keys=keys, replace=True, jobs=j) and 0)
    for level in (0, 1):
        if level not in levels:
            continue
        timed(f"restore: pg_restore Z{level} custom file, single", rows, restore_cmd, pg, f"r_c{level}",
              [str(folder / f"z{level}.dump")], env)
        timed(f"restore: pg_restore Z{level} custom file, -j2", rows, restore_cmd, pg, f"r_cj{level}",
              ["--jobs=2", str(folder / f"z{level}.dump")], env)
        timed(f"restore: pg_restore Z{level} directory, -j2", rows, restore_cmd, pg, f"r_dj{level}",
              ["--jobs=2", "--format=directory", str(folder / f"d{level}")], env)


if __name__ == "__main__":
    main()
