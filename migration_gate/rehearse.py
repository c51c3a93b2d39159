"""The rehearsal on the embedded sandbox: start it, seed the legacy database, migrate, deploy the new schema
flag, and print a summary. (The gated cut-over with its phase suites and sign-off builds on this.)

Exit codes: 0 the rehearsal completed; 1 a step failed (the message names it); 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from migration_gate import migration
from migration_gate.config import load_config
from migration_gate.embedded import EmbeddedError
from migration_gate.progress import Progress
from migration_gate.redact import redact_text
from sandbox.target import Sandbox

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MIGRATION = ROOT / "sandbox" / "migrations" / "001_schema_refactor.sql"
SLOW_STEP_SECONDS = 0.5
TABLE_PAIRS = tuple((t.legacy, t.new) for t in load_config().tables)


@dataclass
class Summary:
    verdict: str = "incomplete"
    patients: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    counts: list[dict] = field(default_factory=list)
    health_after_deploy: dict = field(default_factory=dict)
    run_dir: str = ""
    error: str | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/rehearse",
        description="Rehearse the HIPAA schema migration on an embedded sandbox: a throwaway PostgreSQL seeded "
                    "with synthetic PHI, the migration, and the reference API switched to the new schema.",
        epilog="Exit codes: 0 completed, 1 a step failed, 2 bad usage.")
    parser.add_argument("--patients", type=int, default=20_000,
                        help="synthetic patients to seed (sessions and plans in proportion; default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic data (default 1)")
    parser.add_argument("--migration", type=Path, default=DEFAULT_MIGRATION,
                        help="migration file to rehearse (default: the sandbox's 001_schema_refactor.sql)")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports", help="where run folders go")
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster and API running afterwards and print how to connect")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    args = parser.parse_args(argv)
    if not 1 <= args.patients <= 5_000_000:
        parser.error("--patients must be between 1 and 5000000")
    if not args.migration.is_file():
        parser.error(f"--migration {args.migration}: no such file")
    return args


def _counts(dsn: str, side: int) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {pair[side]: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(pair[side]))).fetchone()[0] for pair in TABLE_PAIRS}


def _report_step(progress: Progress, index: int, total: int, timing: migration.StepTiming) -> None:
    """Every statement counts toward the bar; the slow ones get a line of their own with their timing."""
    if timing.seconds >= SLOW_STEP_SECONDS:
        progress.say(f"  statement {index}/{total} (line {timing.step.line}) took {timing.seconds:.2f} s: "
                     f"{timing.step.label}")
    progress.count("migration statements", index, total)


def rehearse(args: argparse.Namespace, progress: Progress) -> Summary:
    summary = Summary(patients=args.patients)
    run_dir = args.reports / datetime.now(UTC).strftime("rehearsal-%Y%m%dT%H%M%SZ")
    summary.run_dir = str(run_dir)
    sandbox = Sandbox(workdir=run_dir, patients=args.patients, seed=args.seed, progress=progress)
    try:
        started = time.perf_counter()
        sandbox.start()
        summary.seconds["setup_and_seed"] = round(time.perf_counter() - started, 2)
        before = _counts(sandbox.dsn, 0)

        progress.say(f"migrating with {args.migration.name}")
        result = migration.run_file(sandbox.dsn, args.migration, sandbox.key,
                                    on_step=lambda i, n, t: _report_step(progress, i, n, t))
        summary.seconds["migration"] = round(result.seconds, 2)

        progress.say("deploying: USE_HIPAA_SCHEMA=true and restart")
        started = time.perf_counter()
        sandbox.api.restart(use_hipaa_schema=True)
        health = httpx.get(f"{sandbox.api.base_url}/health", timeout=10).json()
        summary.seconds["deploy"] = round(time.perf_counter() - started, 2)
        summary.health_after_deploy = {"status": health.get("status"),
                                       "useHipaaSchema": health.get("config", {}).get("useHipaaSchema")}
        after = _counts(sandbox.dsn, 1)
        summary.counts = [{"legacy": old, "new": new, "before": before[old], "after": after[new]}
                          for old, new in TABLE_PAIRS]
        ok = (all(c["before"] == c["after"] for c in summary.counts)
              and summary.health_after_deploy == {"status": "ok", "useHipaaSchema": True})
        summary.verdict = "completed" if ok else "failed"
        if not ok:
            summary.error = "row counts differ or the app is not healthy on the new schema"
        if args.keep:
            progress.say(f"kept running: psql '{sandbox.dsn}'  API {sandbox.api.base_url}  "
                         f"(stop: kill the API, then pg_ctl -D {sandbox.cluster.data_dir} stop)")
    except (EmbeddedError, RuntimeError, OSError, psycopg.Error, httpx.HTTPError,
            migration.MigrationFileError, ValueError) as exc:
        summary.verdict = "failed"
        summary.error = redact_text(f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        sandbox.stop(keep=args.keep and summary.verdict == "completed")
    return summary


def print_summary(summary: Summary, stream=sys.stdout) -> None:
    print(f"\nRehearsal {summary.verdict.upper()} with {summary.patients:,} patients", file=stream)
    if summary.error:
        print(f"  error: {summary.error}", file=stream)
    for name, seconds in summary.seconds.items():
        print(f"  {name:<16} {seconds:8.2f} s", file=stream)
    if summary.counts:
        print(f"  {'legacy table':<24}{'rows':>10}   {'new table':<26}{'rows':>10}", file=stream)
        for c in summary.counts:
            mark = "" if c["before"] == c["after"] else "   MISMATCH"
            print(f"  {c['legacy']:<24}{c['before']:>10,}   {c['new']:<26}{c['after']:>10,}{mark}", file=stream)
    if summary.health_after_deploy:
        print(f"  app after deploy: {summary.health_after_deploy}", file=stream)
    print(f"  run folder: {summary.run_dir}", file=stream)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = Progress(quiet=False)
    summary = rehearse(args, progress)
    if args.json:
        json.dump(asdict(summary), sys.stdout, indent=2)
        print()
    else:
        print_summary(summary)
    return 0 if summary.verdict == "completed" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
