"""How the gate reaches the target and the app's hosting: the Hooks a host offers for maintenance mode and
deploys (shell commands from migration.toml [hooks] by default), and the CutoverTarget that bundles them with
the database, the key and the API."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from migration_gate.errors import GateError
from migration_gate.redact import redact_text

# The hooks a cut-over calls; a shipped example that still says this mark is a placeholder, not a hook.
REQUIRED = ("maintenance_on", "maintenance_off", "deploy_new_schema", "deploy_legacy_schema")
PLACEHOLDER_MARK = "TODO(hook)"


class Hooks(Protocol):
    """How the gate talks to the app's hosting: maintenance mode and deploys."""

    def maintenance(self, on: bool) -> None: ...
    def deploy(self, use_hipaa_schema: bool) -> None: ...
    # The backup off the box (environment contract in migration_gate.backup.hook_env): store returns the
    # location (a shell hook's last output line); fetch writes the copy at that location to GATE_BACKUP_DEST.
    def store_backup(self, env: dict[str, str]) -> str: ...
    def fetch_backup(self, env: dict[str, str]) -> None: ...


def hook_problems(hooks: Hooks) -> list[str]:
    """What is wrong with the hooks before any of them runs: shell hooks missing or still placeholders. Hooks
    that are code (the sandbox's) have nothing to configure."""
    if not isinstance(hooks, ShellHooks):
        return []
    found = []
    for name in REQUIRED:
        command = (hooks.commands.get(name) or "").strip()
        if not command:
            found.append(f"hook {name}: not configured in [hooks]")
        elif PLACEHOLDER_MARK in command:
            found.append(f"hook {name}: still the shipped placeholder (replace it with your host's command)")
    return found


@dataclass
class ShellHooks:
    """Shell commands from migration.toml [hooks]; a team calls its host's API there."""

    commands: dict[str, str]
    timeout: float = 600
    backup_timeout: float = 1800  # store_backup / fetch_backup move the whole (encrypted) dump

    def _run(self, name: str, env: dict[str, str] | None = None, timeout: float | None = None) -> str:
        command = self.commands.get(name)
        if not command:
            raise GateError(f"no [hooks] {name} command configured")
        limit = timeout or self.timeout
        try:
            done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=limit,
                                  env=os.environ | (env or {}))
        except subprocess.TimeoutExpired:
            raise GateError(f"hook {name} did not finish within {limit:g} s") from None
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise GateError(redact_text(f"hook {name} failed with exit code {done.returncode}: {last[0]}"))
        return done.stdout

    def store_backup(self, env: dict[str, str]) -> str:
        """The [hooks] store_backup command; its last output line is where the copy is (e.g. the s3:// URL)."""
        lines = [line.strip() for line in self._run("store_backup", env, self.backup_timeout).splitlines()]
        return redact_text(next((line for line in reversed(lines) if line), ""))

    def fetch_backup(self, env: dict[str, str]) -> None:
        self._run("fetch_backup", env, self.backup_timeout)

    def maintenance(self, on: bool) -> None:
        self._run("maintenance_on" if on else "maintenance_off")

    def deploy(self, use_hipaa_schema: bool) -> None:
        self._run("deploy_new_schema" if use_hipaa_schema else "deploy_legacy_schema")


@dataclass
class CutoverTarget:
    """Everything the gate acts on: the database and its key, the app's API and login, the host's hooks."""

    dsn: str
    key: str
    api_base_url: str
    api_username: str
    api_password: str
    hooks: Hooks
    app_log_file: Path | None = None
    api_headers: dict[str, str] = field(default_factory=dict)  # e.g. a maintenance-bypass header for the checks
    allow_writes: bool = False  # the post-checks may create a probe patient (sandbox, staging)
