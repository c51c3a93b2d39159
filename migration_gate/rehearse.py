"""The rehearsal, the project's main job: the whole cut-over on the embedded sandbox.

Starts a throwaway PostgreSQL, seeds the legacy database with synthetic PHI, starts the reference API on the
legacy schema, then runs the same gated cut-over a production migration day runs (migration_gate.gate), with
the sandbox's own hooks for maintenance mode and deploys. The sandbox comes from the configured provider
(migration_gate.provider), never imported by name. Ends with the verdict and the sign-off report.
Exit codes are those of scripts/cutover (see --help).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from migration_gate import attest
from migration_gate.config import ROOT, ConfigError, load_config
from migration_gate.embedded import EmbeddedError, stop_kept
from migration_gate.errors import Refused
from migration_gate.gate import Gate
from migration_gate.hooks import CutoverTarget
from migration_gate.progress import Progress
from migration_gate.provenance import gate_version, operator
from migration_gate.provider import load_provider
from migration_gate.redact import redact_text
from migration_gate.verdict import EPILOG, EXIT, finish_run
from migration_gate.watch import COMPRESS, Watch, summary

DEFAULT_PATIENTS = 20_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/rehearse",
        description="Rehearse the whole cut-over on an embedded sandbox: a throwaway PostgreSQL seeded with "
                    "synthetic PHI, the reference API, and every gated phase up to the sign-off report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                        help="synthetic patients to seed (sessions and plans in proportion; "
                             f"default {DEFAULT_PATIENTS})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic data (default 1)")
    parser.add_argument("--migration", type=Path, default=None,
                        help="rehearse another migration file (default: the one migration.toml names)")
    parser.add_argument("--config", type=Path, default=None, help="migration description (default: migration.toml)")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports", help="where run folders go")
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster and API running afterwards and print how to connect")
    parser.add_argument("--stop-kept", action="store_true",
                        help="stop and delete what earlier --keep runs left running, then exit")
    parser.add_argument("--watch", action="store_true",
                        help="after a green go-live, run the whole [watch] schedule (scripts/watch), time compressed "
                             f"{COMPRESS:g} times (--watch-factor), into the run's watch/ folder")
    parser.add_argument("--watch-factor", type=float, default=COMPRESS, metavar="FACTOR",
                        help=f"how much faster than real time the rehearsed watch runs (default {COMPRESS:g})")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.watch_factor <= 0:
        parser.error("--watch-factor must be above zero")
    if not 1 <= args.patients <= 5_000_000:
        parser.error("--patients must be between 1 and 5000000")
    if args.migration is not None and not args.migration.is_file():
        parser.error(f"--migration {args.migration}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stop_kept:
        stopped = stop_kept()
        print(f"stopped {len(stopped)} kept sandbox cluster(s)")
        return 0
    progress = Progress(quiet=args.quiet or args.json)
    if args.migration is not None:
        os.environ["GATE_MIGRATION_FILE"] = str(args.migration.resolve())  # the phase suites see it too
    # the phase suites run against the sandbox's DATABASE_URL: they mark their reports as the sandbox's, and a
    # GATE_SANDBOX=1 the caller set (this is a sandbox run by definition) must not read as a conflict there
    os.environ.pop("GATE_SANDBOX", None)
    os.environ["GATE_REHEARSAL"] = "1"
    try:
        gate = load_config(args.config)
        provider = load_provider(gate.sandbox_provider)
    except ConfigError as exc:
        print(f"rehearse: {exc}", file=sys.stderr)
        return 2

    run_dir = args.reports / f"rehearsal-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    sandbox = provider.rehearsal(run_dir / "sandbox", args.patients, args.seed, progress)
    state = None
    try:
        sandbox.start()
        target = CutoverTarget(dsn=sandbox.dsn, key=provider.key, api_base_url=sandbox.api_base_url,
                               api_username=gate.sandbox_username, api_password=gate.sandbox_password,
                               hooks=sandbox.hooks, app_log_file=sandbox.app_log_file,
                               api_headers=sandbox.api_headers, allow_writes=True)
        # the checklist's human items, attested by whoever rehearses (as the sandbox operator): nobody to brief
        attest.record_all(gate, run_dir, by=f"sandbox operator ({operator()})", note="recorded by scripts/rehearse")
        state = Gate(gate, target, run_dir, progress, log_source=getattr(sandbox, "log_source", None)).run()
        environment = {"Target": "embedded sandbox (throwaway PostgreSQL, synthetic PHI)",
                       "Patients seeded": f"{args.patients:,} (seed {args.seed})", "API": "sandbox reference API",
                       "Configuration": str(gate.path), "Run by": operator(), "Gate version": gate_version()}
        code = finish_run(args, gate, state, environment, sandbox=True)
        _show_status_updates(args, getattr(sandbox.hooks, "notify_file", None))
        if args.watch and code == 0:
            code = _watch(gate, target, run_dir, progress, args, getattr(sandbox, "log_source", None))
        if args.keep and not args.json:
            print(f"Kept running: psql '{sandbox.dsn}'  API {sandbox.api_base_url} (pid {sandbox.api_pid})\n"
                  "  stop and delete with: scripts/rehearse --stop-kept")
        return code
    except Refused as exc:
        print(f"rehearse: {exc}", file=sys.stderr)
        return EXIT["refused"]
    except (EmbeddedError, RuntimeError, OSError, psycopg.Error) as exc:
        message = redact_text(f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        print(f"rehearse: {message}", file=sys.stderr)
        if args.json:
            print(json.dumps({"verdict": "error", "error": message, "exit_code": 1}))
        return 1
    finally:
        sandbox.stop(keep=args.keep)


def _show_status_updates(args: argparse.Namespace, path: Path | None) -> None:
    """Where the sandbox's notify hook wrote the run's status lines, and the lines (what a channel would get)."""
    if args.json or path is None:
        return
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    print(f"Status updates (the sandbox's notify hook, {len(lines)} lines): {path}")
    for line in lines:
        print(f"  {line}")


def _watch(gate, target: CutoverTarget, run_dir: Path, progress: Progress, args: argparse.Namespace,
           log_source) -> int:
    """The 48 hours after go-live, compressed: every round of the schedule against the sandbox, as scripts/watch
    runs them against a real target."""
    began = time.monotonic()
    watch = Watch(gate, target, run_dir, progress, factor=args.watch_factor, sandbox=True, log_source=log_source)
    code = watch.run_rounds()
    seconds = time.monotonic() - began
    if args.json:
        print(json.dumps(summary(watch, code) | {"seconds": round(seconds, 1)}, indent=2))
    else:
        red = sum(r.verdict == "red" for r in watch.state.rounds)
        print(f"Watch: {len(watch.state.rounds)} of {watch.state.total} rounds in {seconds:.0f} s "
              f"({args.watch_factor:g} times real time), {red} red; exit {code}\n"
              f"Watch report: {watch.folder / 'watch.html'}")
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
