"""`scripts/watch` (`migration-gate watch`): the command line of the 48 hours after go-live
(migration_gate.watch.rounds does the rounds): its options, its --help, its exit codes, one line on a bad input."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psycopg

from migration_gate.app.hooks import target_from_environment
from migration_gate.config import ConfigError, load_config
from migration_gate.core import rundir
from migration_gate.core.errors import GateError
from migration_gate.core.helptext import epilog
from migration_gate.core.progress import Progress
from migration_gate.core.redact import redact_text
from migration_gate.core.result import error_text
from migration_gate.core.status import WATCH_EXITS, Exit
from migration_gate.run.runstate import owner_only
from migration_gate.run.watchstate import acknowledge
from migration_gate.watch import report as watchreport
from migration_gate.watch.rounds import COMPRESS, Watch, summary

EPILOG = epilog(
    ("DATABASE_URL", "PHI_ENCRYPTION_KEY", "API_BASE_URL", "GATE_API_USERNAME", "GATE_API_HEADERS", "APP_LOG_FILE",
     "GATE_CONFIG"),
    said={"PHI_ENCRYPTION_KEY": "the app's 64-hex-character PHI key (the PHI written since a round is decrypted)",
          "API_BASE_URL": "the app's address",
          "GATE_API_USERNAME": "the user the checks log in as (GATE_API_PASSWORD: its password)",
          "GATE_API_HEADERS": "optional: a JSON object of headers for the checks",
          "APP_LOG_FILE": "the app's log file, when the run recorded no log source and [logs] names none",
          "GATE_CONFIG": "another migration description than migration.toml ([watch], [hooks] alert)"},
    between="Cron, instead of one long process (every 5 minutes; one due round per tick, the state is on disk):\n"
            "  */5 * * * * cd /path/to/gate && scripts/watch --run-dir reports/cutover-... --once --quiet >> "
            "watch.log 2>&1\n\n",
    exits=WATCH_EXITS, title="Exit codes:")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/watch", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Watch a cut-over run for the 48 hours after go-live: rounds of checks on the [watch] schedule "
                    "(app health, login, critical reads, log, error rate, p95 latency; PHI written since the last "
                    "round, tenancy, orphans, sequences, audit rows), a running HTML report and a JUnit file per "
                    "round in <run-dir>/watch/; a red round calls [hooks] alert.")
    parser.add_argument("--run-dir", type=Path, required=True, help="the cut-over run that went live")
    parser.add_argument("--once", action="store_true", help="run the next round if it is due, then exit (cron)")
    parser.add_argument("--schedule", type=float, metavar="FACTOR", default=None,
                        help="compress time by FACTOR (a rehearsal: 1440 runs a day a minute); fixed at the first "
                             "round")
    parser.add_argument("--compress", action="store_const", const=COMPRESS, dest="schedule",
                        help=f"the same as --schedule {COMPRESS:g}")
    parser.add_argument("--config", type=Path, default=None, help="migration description (default: migration.toml)")
    parser.add_argument("--ack", type=int, metavar="ROUND", default=None,
                        help="acknowledge red round ROUND (and the red rounds before it): [[escalation]] tells nobody "
                             "further about them; needs --by. Nothing else runs (no database or app needed)")
    parser.add_argument("--by", metavar="NAME", default=None, help="who takes the acknowledged round on")
    parser.add_argument("--json", action="store_true", help="print the watch's state summary as JSON at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.schedule is not None and args.schedule <= 0:
        parser.error("--schedule FACTOR must be above zero")
    if (args.ack is None) != (args.by is None):
        parser.error("--ack ROUND and --by NAME go together")
    return args


def main(argv: list[str] | None = None) -> int:
    owner_only()
    args = parse_args(argv)
    progress = Progress(quiet=args.quiet or args.json)
    if args.ack is not None:
        try:
            taken = acknowledge(args.run_dir / rundir.WATCH, args.ack, args.by, time.time())
        except ConfigError as exc:
            print(f"watch: {exc}", file=sys.stderr)
            return Exit.USAGE
        print(f"watch: red round(s) {', '.join(map(str, taken)) or 'none new'} acknowledged by "
              f"{' '.join(args.by.split())}: no further escalation for them")
        return Exit.GREEN
    try:
        gate = load_config(args.config)
        watch = Watch(gate, target_from_environment(gate), args.run_dir, progress, factor=args.schedule)
        code = watch.run_rounds(once=args.once)
    except ConfigError as exc:
        print(f"watch: {exc}", file=sys.stderr)
        return Exit.USAGE
    except GateError as exc:
        print(f"watch: {exc}", file=sys.stderr)
        return Exit.REFUSED
    except (psycopg.Error, OSError) as exc:
        print(redact_text(f"watch: {error_text(exc)}"), file=sys.stderr)
        return Exit.RED
    if args.json:
        print(json.dumps(summary(watch, code), indent=2))
    elif len(watch.state.rounds):
        print(f"watch report: {watch.folder / watchreport.REPORT}")
    return code

