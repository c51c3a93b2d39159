"""Benchmark: the live app's latency with and without the pre-checks running beside it, in one run.

    .venv/bin/python bench/bench_live_app.py                      # 20,000 patients, 3,000 requests, 4 workers
    .venv/bin/python bench/bench_live_app.py --patients 5000 --requests 1000 --workers 2

Starts a sandbox (embedded PostgreSQL, seeded legacy database, reference API on 127.0.0.1), warms the app up,
then drives its list endpoints ([api] endpoints, as the fixture user) with a bounded load twice: alone
(--requests requests), then while the premigration suite runs as the gate runs it (scripts/precheck: a child
pytest with [precheck]'s timeouts), the load lasting exactly as long as the pre-checks. Meanwhile a lock watch
samples pg_stat_activity every 50 ms. Prints p50/p95/p99 of both loads and the ratio p95(with)/p95(without).
Both loads share the machine's 2 cores with the API and PostgreSQL: compare the ratio, not absolute times.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from migration_gate.app.hooks import CutoverTarget
from migration_gate.app.load import LoadPlan, LoadReport, load_during, run_load
from migration_gate.config import load_config
from migration_gate.core.progress import Progress
from migration_gate.db.lockwatch import LockWatch
from migration_gate.run.gate import Gate
from sandbox.api_process import SandboxHooks
from sandbox.target import Sandbox


def _row(label: str, report: LoadReport) -> str:
    return (f"{label:<24} {report.requests:>7,} {report.seconds:>7.1f} {report.errors:>6} "
            f"{report.p(50):>8.1f} {report.p(95):>8.1f} {report.p(99):>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=3_000, help="requests of the load alone")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="bound of each load")
    args = parser.parse_args()
    gate = load_config()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as folder, \
            Sandbox(workdir=Path(folder) / "sandbox", patients=args.patients) as box:
        def plan(requests: int) -> LoadPlan:
            return LoadPlan.configured(gate, box.api.base_url, gate.sandbox_username, gate.sandbox_password,
                                       requests=requests, max_seconds=args.max_seconds, workers=args.workers)

        run_load(plan(min(200, args.requests)))  # warm-up: connections, caches, the API's pool
        alone = run_load(plan(args.requests))
        target = CutoverTarget(dsn=box.dsn, key=box.key, api_base_url=box.api.base_url,
                               api_username=gate.sandbox_username, api_password=gate.sandbox_password,
                               hooks=SandboxHooks(box.api), app_log_file=box.api.log_file)
        runner = Gate(gate, target, Path(folder) / "run", Progress(quiet=True))
        with LockWatch(box.dsn, interval_s=0.05, app_role=gate.app_role.name if gate.app_role else None) as watch:
            # the load lasts as long as the pre-checks (its count bound set out of reach)
            beside, state, seconds = load_during(plan(args.requests * 100), lambda: runner.run(only=["premigration"]))
        phase = state.phase("premigration")
        rows = box.seeded.counts if box.seeded else {}
        print(f"sandbox: {args.patients:,} patients ({sum(rows.values()):,} legacy rows); load: {args.workers} "
              f"workers over {', '.join(alone.paths)} (left out: {', '.join(alone.skipped) or 'none'})")
        print(f"pre-checks: {phase.status} in {seconds:.1f} s ({phase.detail}); [precheck] lock_timeout "
              f"{gate.precheck.lock_timeout}, statement_timeout {gate.precheck.statement_timeout}")
        print(f"lock watch: {watch.report.line()}")
        print(f"{'':<24} {'requests':>7} {'seconds':>7} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        print(_row("app alone", alone))
        print(_row("app + pre-checks", beside))
        ratio = beside.p(95) / alone.p(95) if alone.p(95) else float("nan")
        print(f"p95(with pre-checks) / p95(without) = {ratio:.2f}  "
              f"(p50 ratio {beside.p(50) / alone.p(50):.2f}, p99 ratio {beside.p(99) / alone.p(99):.2f})")


if __name__ == "__main__":
    main()
