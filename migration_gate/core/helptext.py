"""What every command's --help ends with: the environment variables it reads, then its exit codes. One table of
the variables' meanings (a command may say more about one of them), one layout.

Used by cli/main.py (the cut-over commands), watch/rounds.py (scripts/watch) and cli/lint.py (scripts/lint);
scripts/rehearse ends with the exit codes alone (core/status.help_text).
"""

from __future__ import annotations

from collections.abc import Iterable

from migration_gate.core.status import EXITS, Exit, help_text

ENVIRONMENT = {
    "DATABASE_URL": "the target database (its password is redacted everywhere)",
    "PHI_ENCRYPTION_KEY": "the app's 64-hex-character PHI key",
    "API_BASE_URL": "the app's address, e.g. https://app.example.com",
    "GATE_API_USERNAME": "an existing user the API checks log in as",
    "GATE_API_PASSWORD": "that user's password",
    "APP_LOG_FILE": "the app's log file, when [logs] does not name another source",
    "GATE_API_HEADERS": "optional: a JSON object of headers for the checks (a maintenance bypass)",
    "GATE_REPORTS_DIR": "optional: where runs are recorded (default reports/)",
    "GATE_BACKUP_IDENTITY": "the age identity (a file, or the key) that opens the backup",
    "GATE_BACKUP_RECIPIENTS": "optional: more age public keys to encrypt the backup to",
    "GATE_CONFIG": "another migration description than migration.toml",
}


def environment_text(names: Iterable[str], said: dict[str, str] | None = None) -> str:
    """The "Environment:" block for these variables, in this order; `said` words a variable for this command."""
    said = said or {}
    rows = "".join(f"  {var:<20} {said.get(var, ENVIRONMENT[var])}\n" for var in names)
    return "Environment:" + ("\n" + rows if rows else " none read\n")


def epilog(names: Iterable[str], said: dict[str, str] | None = None, between: str = "",
           exits: dict[Exit, str] = EXITS, title: str = "Exit codes (all commands):") -> str:
    """A command's whole --help ending: its environment, anything it says between (a cron line), its exit codes."""
    return environment_text(names, said) + "\n" + between + help_text(exits, title)
