"""bench/bench_scale.py cannot rot: its parts measured for real on the small template databases, a real suite run
through SuiteRunner (its exact peak RSS) and the sampler, and the table built from them with every row."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from bench import bench_scale as bench
from migration_gate.config.context import SuiteContext
from migration_gate.core.progress import Progress
from migration_gate.run.runstate import PLAN, PhaseRecord, RunState
from migration_gate.run.suites import SuiteRunner
from migration_gate.scan.ranges import worker_count
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import GATE

PAIR = next(m for m in GATE.tables if m.name == "clinical_sessions")
ROW_LABELS = ["data: patients", "data: sessions", "data: plans", "data: PHI values", "data: database MB",
              *[f"phase: {p}" for p in PLAN], "maintenance window", "count(*) over mapped tables",
              "integrity phase / count(*)", "PHI tight loop", "PHI verified per core / tight loop: postmigration",
              "compare sessions_hipaa -> clinical_sessions: migration_gate.scan.compare", "ours / reladiff",
              "ours / naive", *[f"peak RSS: {s} suite" for s in bench.SUITES]]


def _suite(dsn: str, run_dir: Path) -> bench.TreeSampler:
    """The post-migration suite's database checks (no API here: its API tests fail, which does not matter) through
    the gate's own runner, sampled as the benchmark samples it."""
    env = {k: v for k, v in os.environ.items() if k not in ("GATE_SANDBOX", "API_BASE_URL", "PYTEST_ADDOPTS")}
    env |= {"DATABASE_URL": dsn, "PHI_ENCRYPTION_KEY": SANDBOX_KEY, "GATE_CONFIG": str(GATE.path)}
    sampler = bench.TreeSampler(interval=0.05)
    sampler.start()
    try:
        SuiteRunner(run_dir, Progress(quiet=True)).run("postmigration", PhaseRecord("postmigration"), env,
                                                        SuiteContext(run_dir=run_dir, config=GATE.path))
    finally:
        sampler.stop()
    return sampler


def test_the_benchmark_table_has_every_row_from_real_measurements(legacy_db: str, migrated_db: str, new_db,
                                                                   tmp_path: Path) -> None:
    m = bench.Measured(patients=120, pair=f"{PAIR.legacy} -> {PAIR.new}", machine=bench.machine(legacy_db),
                       legacy_of={t.new: t.legacy for t in GATE.tables if not t.partial})
    with psycopg.connect(legacy_db) as conn:
        before, rows = bench.count_seconds(conn, GATE.schema, bench._tables(GATE, "legacy"))
        m.rows.update(rows)
        m.phi_values, m.mb = (bench.phi_value_count(conn, GATE, "legacy"), None), (bench.database_mb(conn), None)
    with psycopg.connect(migrated_db) as conn:
        after, rows = bench.count_seconds(conn, GATE.schema, bench._tables(GATE, "new"))
        m.rows.update(rows)
        m.phi_values = (m.phi_values[0], bench.phi_value_count(conn, GATE, "new"))
        m.mb = (m.mb[0], bench.database_mb(conn))
    m.count_s = (before, after)
    assert m.rows["clinical_sessions"] == m.rows["sessions_hipaa"] > 0 and m.phi_values[0] > 0 and m.phi_values[1] > 0

    copy = new_db()
    assert bench.copy_table(legacy_db, copy, GATE.schema, PAIR.legacy, [PAIR.source_key, *PAIR.columns]) \
        == m.rows["sessions_hipaa"]
    m.compared = bench.compare_pair(copy, migrated_db, PAIR, GATE.schema, naive_rows=100_000)
    found = {t.name: t for t in m.compared}
    assert found["migration_gate.scan.compare"].note.startswith("0 differences")
    assert found["naive (both tables into Python)"].note == "0 differing rows"
    reladiff = found["reladiff (hashdiff)"]
    assert reladiff.note.startswith("0 differing"), reladiff.note  # scripts/setup installs the bench extra
    skipped = bench.compare_pair(copy, migrated_db, PAIR, GATE.schema, naive_rows=10)[-1]
    assert skipped.seconds is None and skipped.note.startswith("skipped:")

    m.tight = bench.tight_loop(migrated_db, GATE, SANDBOX_KEY, limit=2_000)
    assert m.tight[0] == 2_000 and m.tight[1] > 0

    sampler = _suite(migrated_db, tmp_path)
    assert 20 < sampler.largest_mb["postmigration"] < 500 and 20 < sampler.peak_mb["postmigration"] < 500
    # pytest, and the PHI checks' worker processes while they decrypt (the log command and psql are no workers)
    assert 1 <= sampler.workers["postmigration"] <= 1 + worker_count()
    m.largest_mb, m.tree_mb = sampler.largest_mb, sampler.peak_mb
    m.phi = bench.phi_rates(tmp_path, {"postmigration": 1})
    assert [r.phase for r in m.phi] == ["postmigration"] and m.phi[0].values > 0 and m.phi[0].seconds > 0

    state = RunState(run_dir=str(tmp_path), target="t", migration_file="m", migration_sha256="s",
                     phases=[PhaseRecord(p, status="passed", seconds=1.0 + i) for i, p in enumerate(PLAN)],
                     maintenance_on_at=1000.0, maintenance_off_at=1000.0 + 12 * 60)
    state.status = "green"
    bench.read_state(m, state)
    rows = bench.table(m)
    labels = [label for label, *_ in rows]
    for wanted in ROW_LABELS:
        assert any(label.startswith(wanted) for label in labels), f"no row {wanted!r} in {labels}"
    window = next(r for r in rows if r[0].startswith("maintenance window"))
    assert window[3] == "MISSED by 2.00 min (1.2x the goal)"  # 12 min against 10
    unmeasured = [r[0] for r in rows if "n/a" in r[1]]  # only the suites this test did not run
    assert unmeasured == [f"peak RSS: {s} suite" for s in bench.SUITES if s != "postmigration"], unmeasured
    assert bench.render(m, rows).count("\n| ") == len(rows) + 1  # the header, then a line per row
