"""Create and fill the legacy (Layer B) database: schema, synthetic rows by COPY, then foreign keys.

Patients are generated in fixed chunks, in parallel worker processes, each streaming its rows over its own
connection; the foreign keys are added (and validated) after the load, which is what makes 1,000,000 patients
fit in the time budget.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from sandbox import synthetic
from sandbox.synthetic import COLUMNS, SANDBOX_KEY, Plan

LEGACY_TABLES = ("users_auth", "therapist_profiles", "therapist_phi", "clients_hipaa", "sessions_hipaa",
                 "treatment_plans_hipaa", "audit_logs_hipaa")

Progress = Callable[[int, int], None]


SQL_DIR = Path(__file__).parent / "sql"


def sql_file(name: str) -> str:
    return (SQL_DIR / name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class SeedSummary:
    patients: int
    counts: dict[str, int]
    seconds: float


def _copy_rows(conn: psycopg.Connection, table: str, rows: list[tuple]) -> None:
    if not rows:
        return
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, COLUMNS[table])))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _load_chunk(dsn: str, plan: Plan, chunk: tuple[int, int], first_ids: tuple[int, int], key: str) -> int:
    rows: dict[str, list[tuple]] = {"clients_hipaa": [], "sessions_hipaa": [], "treatment_plans_hipaa": []}
    for table, row in synthetic.patient_chunk(plan, chunk, first_ids, key):
        rows[table].append(row)
    with psycopg.connect(dsn) as conn:
        for table, table_rows in rows.items():
            _copy_rows(conn, table, table_rows)
    return chunk[1] - chunk[0] + 1


def seed_legacy(dsn: str, patients: int, seed: int = 1, key: str = SANDBOX_KEY, workers: int | None = None,
                progress: Progress | None = None, fixture_password: str | None = None) -> SeedSummary:
    """Create the legacy schema in an empty database and fill it; returns the row count of every table.
    `fixture_password` replaces the first demo user's documented password (a canary run's own)."""
    started = time.perf_counter()
    plan = Plan(seed=seed, patients=patients, fixture_password=fixture_password)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql_file("legacy_schema.sql"))
        with conn.transaction():
            for table, rows in synthetic.users(plan, key).items():
                _copy_rows(conn, table, rows)
    chunks, offsets = plan.chunks, synthetic.id_offsets(plan)
    workers = workers or min(len(chunks), os.cpu_count() or 1)
    done = 0
    if workers <= 1:
        for chunk, first in zip(chunks, offsets, strict=True):
            done += _load_chunk(dsn, plan, chunk, first, key)
            if progress:
                progress(done, patients)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_load_chunk, dsn, plan, c, o, key) for c, o in zip(chunks, offsets, strict=True)]
            for future in futures:
                done += future.result()
                if progress:
                    progress(done, patients)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql_file("legacy_foreign_keys.sql"))
        for table in LEGACY_TABLES:
            conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({t}, 'id'), coalesce(max(id), 0) + 1, false) "
                                 "FROM {i}").format(t=sql.Literal(table), i=sql.Identifier(table)))
        conn.execute("ANALYZE")
        counts = {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
                  for t in LEGACY_TABLES}
    return SeedSummary(patients=patients, counts=counts, seconds=time.perf_counter() - started)
