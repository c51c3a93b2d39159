"""How the gate reaches the target and the app's hosting: the Hooks a host offers for maintenance mode and
deploys (shell commands from migration.toml [hooks] by default), and the CutoverTarget that bundles them with
the database, the key and the API."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from migration_gate.errors import GateError
from migration_gate.redact import redact_text


class Hooks(Protocol):
    """How the gate talks to the app's hosting: maintenance mode and deploys."""

    def maintenance(self, on: bool) -> None: ...
    def deploy(self, use_hipaa_schema: bool) -> None: ...


@dataclass
class ShellHooks:
    """Shell commands from migration.toml [hooks]; a team calls its host's API there."""

    commands: dict[str, str]
    timeout: float = 600

    def _run(self, name: str) -> None:
        command = self.commands.get(name)
        if not command:
            raise GateError(f"no [hooks] {name} command configured")
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=self.timeout)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise GateError(redact_text(f"hook {name} failed with exit code {done.returncode}: {last[0]}"))

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
