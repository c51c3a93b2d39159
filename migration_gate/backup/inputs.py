"""What the pre-flight asks of the backup before maintenance goes on: keys, pg_restore, the off-box hooks."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from typing import Any

from migration_gate.app.hooks import command_problems
from migration_gate.backup.keys import IDENTITY_ENV, BackupKeys
from migration_gate.backup.record import BackupError
from migration_gate.backup.tools import pg_restore_problem, tool_version
from migration_gate.config import BackupConfig
from migration_gate.db.binaries import find_binaries


def backup_inputs(gate: Any, env: Mapping[str, str] | None = None, hooks: object | None = None) -> list[str]:
    """Problems with the backup's inputs, one line each, before anything changes: recipients valid, the identity
    present and matching a recipient (a restore must be able to open what the backup writes), pg_restore fixed
    for CVE-2025-8714, the store_backup and fetch_backup hooks configured (shell hooks: not placeholders)."""
    settings: BackupConfig = gate.backup
    problems = []
    try:
        keys = BackupKeys.from_environment(settings, env)
    except BackupError as exc:
        return [f"backup: {exc}"]
    if keys.encrypting:
        try:
            keys.age_recipients()
            identities = keys.age_identities("the backup")
            publics = {str(i.to_public()) for i in identities}
            if not publics & set(keys.recipients):
                problems.append(f"backup: no identity in {IDENTITY_ENV} matches a recipient: a restore could not "
                                "open the backup")
        except BackupError as exc:
            problems.append(f"backup: {exc}")
    try:  # the rollback's restore runs this pg_restore: one with CVE-2025-8714 is refused before anything changes
        fixed = pg_restore_problem(tool_version(find_binaries(), "pg_restore"))
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        fixed = f"pg_restore --version could not be run: {exc.__class__.__name__}"
    if fixed:
        problems.append(f"backup: {fixed}")
    commands = getattr(hooks, "commands", None)
    if hooks is None or isinstance(commands, dict):
        commands = commands if isinstance(commands, dict) else gate.hooks
        problems += command_problems(commands, ("store_backup", "fetch_backup"), "your store's")
    elif not (hasattr(hooks, "store_backup") and hasattr(hooks, "fetch_backup")):
        problems.append("hooks: no store_backup and fetch_backup (the backup cannot be kept off the box)")
    return problems
