"""How the gate reaches the target and the app's hosting: the Hooks a host offers for maintenance mode and
deploys (shell commands from migration.toml [hooks] by default), and the CutoverTarget that bundles them with
the database, the key and the API."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from migration_gate.config import ConfigError, GateConfig, load_environment
from migration_gate.errors import GateError
from migration_gate.redact import dsn_passwords, mask_values, redact_text, secret_values

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
    # Optional (migration_gate.notify): one PHI-free status line, also in env as GATE_STATUS. Hooks without it
    # send no status updates.
    def notify(self, line: str, env: dict[str, str]) -> None: ...


def hook_problems(hooks: Hooks) -> list[str]:
    """What is wrong with the hooks before any of them runs: shell hooks missing or still placeholders. Hooks
    that are code (the sandbox's) have nothing to configure."""
    if not isinstance(hooks, ShellHooks):
        return []
    return command_problems(hooks.commands, REQUIRED, "your host's")


def command_problems(commands: Mapping[str, str], names: Iterable[str], whose: str) -> list[str]:
    """Each named [hooks] command configured and not still a TODO(hook) placeholder, one line per problem."""
    found = []
    for name in names:
        command = (commands.get(name) or "").strip()
        if not command:
            found.append(f"hook {name}: not configured in [hooks]")
        elif PLACEHOLDER_MARK in command:
            found.append(f"hook {name}: still the shipped placeholder (replace it with {whose} command)")
    return found


@dataclass
class ShellHooks:
    """Shell commands from migration.toml [hooks]; a team calls its host's API there."""

    commands: dict[str, str]
    timeout: float = 600
    backup_timeout: float = 1800  # store_backup / fetch_backup move the whole (encrypted) dump
    notify_timeout: float = 30  # [notify] timeout_seconds: a status update never holds the cut-over up

    def _run(self, name: str, env: dict[str, str] | None = None, timeout: float | None = None,
             args: tuple[str, ...] = ()) -> str:
        command = self.commands.get(name)
        if not command:
            raise GateError(f"no [hooks] {name} command configured")
        limit = timeout or self.timeout
        # its own process group, so a hang is stopped with everything it started (a sleep, a curl)
        child = subprocess.Popen([command, name, *args] if args else command, shell=True,  # args: $1...
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True, env=os.environ | (env or {}))
        try:
            stdout, stderr = child.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise GateError(f"hook {name} did not finish within {limit:g} s and was stopped "
                            "([hooks] timeout_seconds)") from None
        if child.returncode != 0:
            last = (stderr or stdout).strip().splitlines()[-1:] or ["(no output)"]
            # a hook's output may echo its environment (set -x, a verbose curl): its secrets are masked by value
            line = mask_values(redact_text(last[0]), secret_values(dict(os.environ) | (env or {}))
                               + dsn_passwords((env or {}).values()))
            raise GateError(f"hook {name} failed with exit code {child.returncode}: {line}")
        return stdout

    def store_backup(self, env: dict[str, str]) -> str:
        """The [hooks] store_backup command; its last output line is where the copy is (e.g. the s3:// URL)."""
        lines = [line.strip() for line in self._run("store_backup", env, self.backup_timeout).splitlines()]
        return mask_values(redact_text(next((line for line in reversed(lines) if line), "")),
                           secret_values(dict(os.environ)))

    def fetch_backup(self, env: dict[str, str]) -> None:
        self._run("fetch_backup", env, self.backup_timeout)

    def notify(self, line: str, env: dict[str, str]) -> None:
        """The [hooks] notify command with the status line in GATE_STATUS and as $1 (nothing when unset)."""
        if (self.commands.get("notify") or "").strip():
            self._run("notify", env, self.notify_timeout, args=(line,))

    def alert(self, env: dict[str, str]) -> None:
        """[hooks] alert: tell a human (the watch's red rounds); GATE_ALERT_MESSAGE carries a PHI-free message."""
        self._run("alert", env)

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
    # what every request to the app carries, the public's too (the maintenance probe, go-live): what a host's
    # edge adds in front of the app, e.g. X-Forwarded-Proto behind a TLS-terminating proxy; the checks send
    # api_headers, which hold these as well
    edge_headers: dict[str, str] = field(default_factory=dict)
    # set when maintenance mode cannot be seen on this target (a rehearsal's own legacy app, which knows nothing
    # of the sandbox's flag): the maintenance phase says so, with this reason, instead of probing for a 503
    maintenance_unverifiable: str | None = None


def target_from_environment(gate: GateConfig, need_api: bool = True, hint: str = "") -> CutoverTarget:
    """The real target as the environment names it (the cut-over's commands and the watch alike), its hooks the
    [hooks] commands; a variable missing or empty is one line, with `hint` after it."""
    env = load_environment()
    needed = [("DATABASE_URL", env.database_url), ("PHI_ENCRYPTION_KEY", env.phi_key)]
    if need_api:
        needed += [("API_BASE_URL", env.api_base_url), ("GATE_API_USERNAME", env.api_username),
                   ("GATE_API_PASSWORD", env.api_password)]
    missing = [name for name, value in needed if not value]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not set{hint}")
    return CutoverTarget(dsn=env.database_url, key=env.phi_key, api_base_url=env.api_base_url or "",
                         api_username=env.api_username or "", api_password=env.api_password or "",
                         hooks=ShellHooks(gate.hooks, timeout=gate.hook_timeout_seconds),
                         app_log_file=env.app_log_file, api_headers=env.api_headers)
