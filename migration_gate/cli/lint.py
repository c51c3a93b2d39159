"""`scripts/lint`: the migration lint (PRE-13, migration_gate.checks.lint) for the DBA at a prompt, live sizes from
DATABASE_URL when it is set, exit 0 nothing red, 1 a finding [lint] denies, 2 bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

from migration_gate.checks.lint import lint_migration
from migration_gate.config import ConfigError, load_config
from migration_gate.config.environment import variable
from migration_gate.core.helptext import epilog
from migration_gate.core.redact import redact_dsn
from migration_gate.core.result import error_text
from migration_gate.core.status import LINT_EXITS, Exit
from migration_gate.db import connection as db
from migration_gate.run.runstate import recorded_migration_sha256


def main(argv: list[str] | None = None) -> int:
    """The lint for the DBA: live sizes from DATABASE_URL when set."""
    parser = argparse.ArgumentParser(
        prog="scripts/lint", formatter_class=argparse.RawDescriptionHelpFormatter, description=(
            "Classify each statement of the migration file (table rewrites, full scans under lock, destructive "
            "statements, a missing lock_timeout) with the live size of each table and the time the rehearsal "
            "measured for it; [lint] in the configuration decides which findings are red (PRE-13)."),
        epilog=epilog(("DATABASE_URL", "GATE_CONFIG"), said={
            "DATABASE_URL": "the target, for live table sizes (optional: without it sizes are unknown)"},
            exits=LINT_EXITS, title="Exit codes:"))
    parser.add_argument("file", nargs="?", type=Path, help="the migration file (default: [migration] file)")
    parser.add_argument("--config", type=Path, help="the migration description (default: migration.toml)")
    parser.add_argument("--run-dir", type=Path, help="a run folder whose rehearsal (PRE-08) recorded the times; "
                        "the configured migration file must still be the one its cut-over recorded (sha256)")
    args = parser.parse_args(argv)
    try:
        gate = load_config(args.config)
    except ConfigError as exc:
        print(f"lint: {exc}", file=sys.stderr)
        return Exit.USAGE
    path = args.file or gate.migration_file
    if not path.is_file():
        print(f"lint: migration file {path} not found", file=sys.stderr)
        return Exit.USAGE
    dsn = variable("DATABASE_URL")
    try:
        with (db.connect(dsn, autocommit=True) if dsn else _Nothing()) as conn:
            recorded = recorded_migration_sha256(args.run_dir) if path == gate.migration_file else None
            result = lint_migration(conn, path, gate.lint, gate.schema, gate.lock_timeout, args.run_dir, recorded)
    except psycopg.Error as exc:
        print(f"lint: cannot read sizes from DATABASE_URL {redact_dsn(dsn or '')}: {error_text(exc)}",
              file=sys.stderr)
        return Exit.USAGE
    for line in result.problems:
        print(f"RED  {line}")
    for line in result.notes:
        print(f"note {line}")
    print(f"{result.check}: {result.checked} finding(s), {len(result.problems)} red"
          + ("" if dsn else " (no DATABASE_URL: sizes unknown)"))
    return Exit.RED if result.problems else Exit.GREEN


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    sys.exit(main())
