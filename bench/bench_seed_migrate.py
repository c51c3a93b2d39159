"""Benchmark: seeding, migrating and rolling back the sandbox at scale, with checksum proof of the rollback.

    .venv/bin/python bench/bench_seed_migrate.py --patients 100000
    .venv/bin/python bench/bench_seed_migrate.py --patients 1000000 --seed-only

Prints wall times measured in this run and their ratios to a `SELECT count(*)` over the same data (times on a
shared 2-core machine vary by 20-30% between runs: compare ratios within one run).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import psycopg

from migration_gate.config import load_config
from migration_gate.db import catalog, migration
from migration_gate.db.checksums import database_checksums
from migration_gate.db.embedded import EmbeddedPostgres
from sandbox.roles import create_app_role
from sandbox.seed import LEGACY_TABLES, seed_legacy
from sandbox.synthetic import SANDBOX_KEY

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--seed-only", action="store_true", help="stop after seeding")
    args = parser.parse_args()
    with EmbeddedPostgres() as pg:
        create_app_role(pg, load_config().app_role)  # the migration grants to it
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        dsn = pg.dsn("bench")
        seeded = seed_legacy(dsn, args.patients)
        print(f"seed {args.patients:,} patients: {seeded.seconds:.1f} s  rows: {seeded.counts}")
        with psycopg.connect(dsn) as conn:
            started = time.perf_counter()
            conn.execute("SELECT count(*) FROM sessions_hipaa").fetchone()
            baseline = time.perf_counter() - started
            print(f"baseline count(*) over sessions_hipaa: {baseline:.3f} s")
        if args.seed_only:
            return
        with psycopg.connect(dsn) as conn:
            started = time.perf_counter()
            before = database_checksums(conn, list(LEGACY_TABLES))
            checksum_time = time.perf_counter() - started
            schema_before = catalog.inspect(conn).only(LEGACY_TABLES)
        result = migration.run_file(dsn, ROOT / "sandbox/migrations/001_schema_refactor.sql", SANDBOX_KEY)
        rollback = migration.run_file(dsn, ROOT / "sandbox/migrations/001_rollback.sql", SANDBOX_KEY)
        with psycopg.connect(dsn) as conn:
            after = database_checksums(conn, list(LEGACY_TABLES))
            schema_after = catalog.inspect(conn).only(LEGACY_TABLES)
        print(f"checksums of all legacy tables: {checksum_time:.1f} s ({checksum_time / baseline:.0f}x count)")
        print(f"migration: {result.seconds:.1f} s ({result.seconds / baseline:.0f}x count)")
        for timing in sorted(result.timings, key=lambda t: -t.seconds)[:5]:
            print(f"    {timing.seconds:6.2f} s  line {timing.step.line}: {timing.step.label}")
        print(f"rollback: {rollback.seconds:.1f} s ({rollback.seconds / baseline:.0f}x count)")
        for table in LEGACY_TABLES:
            verdict = "identical" if before[table] == after[table] else "DIFFERENT"
            print(f"    {table:<24} {before[table].rows:>10,} rows  {verdict}  {after[table].digest}")
        print(f"schema after rollback: {'identical' if not schema_before.differences(schema_after) else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
