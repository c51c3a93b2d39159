"""`scripts/rehearse` (`migration-gate rehearse`): the command line of the rehearsal (migration_gate.rehearsal.rehearse
does the work): its options and their checks, its --help, and the environment it sets for the phases it runs."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from migration_gate.config import ConfigError, load_config
from migration_gate.core.paths import ROOT
from migration_gate.core.progress import Progress
from migration_gate.core.status import EXITS, Exit, help_text
from migration_gate.rehearsal import copies, rehearse
from migration_gate.run.provider import load_provider
from migration_gate.run.runstate import owner_only
from migration_gate.watch.rounds import COMPRESS

DEFAULT_PATIENTS = 20_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/rehearse",
        description="Rehearse the whole cut-over on an embedded sandbox: a throwaway PostgreSQL seeded with "
                    "synthetic PHI, the reference API, and every gated phase up to the sign-off report.",
        epilog=help_text(EXITS), formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--stop-kept", nargs="?", const=rehearse.ALL_OF_THIS_CHECKOUT, default=None, metavar="CLUSTER",
                        help="stop and delete what earlier --keep runs of this checkout left running, then exit; "
                             "CLUSTER (a kept cluster's folder, or its port) stops only that one, whoever kept it")
    parser.add_argument("--watch", action="store_true",
                        help="after a green go-live, run the whole [watch] schedule (scripts/watch), time compressed "
                             f"{COMPRESS:g} times (--watch-factor), into the run's watch/ folder")
    parser.add_argument("--watch-factor", type=float, default=COMPRESS, metavar="FACTOR",
                        help=f"how much faster than real time the rehearsed watch runs (default {COMPRESS:g})")
    parser.add_argument("--against-copy", action="store_true",
                        help="a DRESS REHEARSAL: the whole cut-over (backup to sign-off) on a copy of the real "
                             "target (DATABASE_URL; without it, a copy of a fresh sandbox), made as [rehearsal] "
                             "kind says ('local': a throwaway local cluster restored from a dump; 'hooks': your "
                             "create_copy/delete_copy commands). The target is only read to copy it, its hosting "
                             "hooks are never called; the app checks run against the reference API started on the "
                             "copy. The copy is removed afterwards; the sign-off and state.json are marked "
                             "\"dress rehearsal\". Kind 'scratch' is refused (it would load the target's server)")
    parser.add_argument("--copy-kind", choices=("local", "hooks"), default=None,
                        help="with --against-copy: the kind of copy instead of [rehearsal] kind (hooks without "
                             "[rehearsal] commands on the sandbox: the sandbox's own, a second embedded cluster)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.watch_factor <= 0:
        parser.error("--watch-factor must be above zero")
    if not 1 <= args.patients <= 5_000_000:
        parser.error("--patients must be between 1 and 5000000")
    if args.migration is not None and not args.migration.is_file():
        parser.error(f"--migration {args.migration}: no such file")
    if args.copy_kind and not args.against_copy:
        parser.error("--copy-kind needs --against-copy")
    if args.against_copy and (args.keep or args.watch):
        parser.error("--against-copy removes its copy afterwards: --keep and --watch do not apply")
    return args


def main(argv: list[str] | None = None) -> int:
    owner_only()
    args = parse_args(argv)
    if args.stop_kept is not None:
        return rehearse.stop_kept_runs(args.stop_kept)
    progress = Progress(quiet=args.quiet or args.json)
    # nothing here steers the phase suites through this process's environment: the gate hands each its context
    # (migration_gate.config.context): the migration file, the synthetic data (CutoverTarget.synthetic), the kind
    try:
        gate = load_config(args.config)
        if args.migration is not None:  # the gate, and through its context the phase suites, run this file
            gate = dataclasses.replace(gate, migration_file=args.migration.resolve())
        provider = load_provider(gate.sandbox_provider)
    except ConfigError as exc:
        print(f"rehearse: {exc}", file=sys.stderr)
        return Exit.USAGE

    with copies.janitor_on_sigterm():  # SIGTERM unwinds like Ctrl-C: the sandbox and a team's app are stopped
        if args.against_copy:
            return rehearse.dress_rehearsal(args, gate, provider, progress)
        return rehearse.rehearse(args, gate, provider, progress)
