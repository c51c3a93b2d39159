"""The latency check sees a migration that loses the index the app's list needs (issue 12 item 0).

At a size where a scan and an index differ clearly, on the sandbox for real: the legacy app's p95 is recorded as the
baseline, then the migration runs without idx_patients_organization_id (a copy of the migration file that drops it),
and the post-migration check is red, naming the endpoint, both p95s and the limit, and (where the cluster has
pg_stat_statements) the statements those requests ran that read the most. With the index back, the same check is
green. The legacy list is given an index on its owner column first, so the baseline is an index's cost too (the
legacy DDL has none: its list is a scan at any size, which would make any new-schema plan look fine).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import psycopg
import pytest

from migration_gate.app import performance
from migration_gate.config import load_config
from migration_gate.core.progress import Progress
from migration_gate.db import migration
from sandbox.synthetic import SANDBOX_KEY
from sandbox.target import DATABASE, Sandbox

# 20,000 patients: a page of /api/patients costs about 3 ms with the index and about 45 ms without it (a scan of
# the patients table for the count and again for the page); seeding and migrating take about 25 s.
PATIENTS = 60_000  # a sequential scan clearly slower than the index scan, also beside another test worker
ENDPOINT = "/api/patients"
INDEX = "idx_patients_organization_id"


def _without_index(gate_file: Path, folder: Path) -> Path:
    """The migration file, plus a last statement that drops the index the new schema's list needs."""
    text = gate_file.read_text()
    path = folder / "001_without_index.sql"
    path.write_text(text + f"\nDROP INDEX {INDEX};\n")
    return path


@pytest.mark.sandbox
def test_a_migration_without_the_list_index_is_red_naming_the_endpoint_and_green_with_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = load_config()
    gate = dataclasses.replace(config, performance=dataclasses.replace(config.performance, requests=20,
                                                                        p95_factor=2.0, p95_allowance_ms=20.0))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with Sandbox(workdir=tmp_path / "sandbox", patients=PATIENTS, progress=Progress(quiet=True)) as box:
        timings["seed"] = time.perf_counter() - started
        stats = box.cluster.enable_statement_stats(DATABASE)
        with psycopg.connect(box.dsn, autocommit=True) as conn:
            conn.execute("CREATE INDEX legacy_clients_therapist ON clients_hipaa (therapist_id)")
            conn.execute("ANALYZE clients_hipaa")
        plan = dataclasses.replace(performance.plan(gate, box.api.base_url, gate.sandbox_username,
                                                    gate.sandbox_password), paths=(ENDPOINT,))
        performance.record_baseline(plan, run).expect()

        mark = time.perf_counter()
        migration.run_file(box.dsn, _without_index(gate.migration_file, tmp_path), SANDBOX_KEY)
        timings["migration"] = time.perf_counter() - mark
        box.api.restart(use_hipaa_schema=True)
        mark = time.perf_counter()
        red = performance.check_after(plan, run, gate, "postmigration", dsn=box.dsn)
        timings["red check"] = time.perf_counter() - mark
        red_json = json.loads((run / "performance" / "postmigration.json").read_text())

        with psycopg.connect(box.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE INDEX {INDEX} ON patients (organization_id)")  # what the migration creates
        mark = time.perf_counter()
        green = performance.check_after(plan, run, gate, "golive", dsn=box.dsn)
        timings["green check"] = time.perf_counter() - mark
        green_json = json.loads((run / "performance" / "golive.json").read_text())
    print({k: round(v, 1) for k, v in timings.items()})

    before = json.loads((run / "performance" / "baseline.json").read_text())["endpoints"][ENDPOINT]["p95_ms"]
    slow = red_json["endpoints"][ENDPOINT]["p95_ms"]
    fast = green_json["endpoints"][ENDPOINT]["p95_ms"]
    limit = 2 * before + 20
    print(f"p95 {ENDPOINT}: baseline {before} ms, without the index {slow} ms, with it {fast} ms, limit {limit:.1f}")
    assert not red.ok and slow > limit > fast, (before, slow, fast)
    line = next(p for p in red.problems if p.startswith(f"GET {ENDPOINT}:"))
    print(line)
    assert (f"GET {ENDPOINT}: p95 {slow:.1f} ms on the new schema exceeds 2 x {before:.1f} ms (legacy baseline) "
            f"+ 20 ms = {limit:.1f} ms") in line
    if stats:  # the statements the slow endpoint's requests ran, the scans first, constants as $n
        named = red_json["statements"]["endpoints"][ENDPOINT]
        assert red_json["statements"]["available"] is True and named, red_json["statements"]
        assert named[0]["blocks"] > 100 and re.search(r"\bFROM \"?patients\"? t WHERE\b", named[0]["query"]), named
        assert "pg_stat_statements): (1) " in line and named[0]["query"][:60] in line
        assert "'" not in "".join(s["query"] for s in named)  # no literal values, only $n
    else:
        assert red_json["statements"]["available"] is False and "pg_stat_statements" in red_json["statements"]["note"]
    assert green.ok, green.problems
    assert green_json["statements"] == ({"available": True, "endpoints": {}} if stats else red_json["statements"])
