"""The embedded sandbox as the library's sandbox provider (migration_gate.run.provider), named in migration.toml
[sandbox] provider: phase targets built on demand (sandbox.phases), the synthetic key, and the rehearsal's
throwaway target (sandbox.target) with its hooks."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from migration_gate.app.logsource import SINCE_VARIABLE, LogSource
from migration_gate.config import GateConfig, RehearsalConfig
from migration_gate.core.paths import ROOT
from migration_gate.core.progress import Progress
from sandbox.api_process import SandboxHooks
from sandbox.phases import SandboxTargets
from sandbox.synthetic import SANDBOX_KEY
from sandbox.target import Sandbox


class SandboxRehearsal:
    """A Sandbox (cluster, seeded legacy database, reference API) as the rehearsal sees it."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self._hooks: SandboxHooks | None = None

    def use_apps(self, rehearsal: RehearsalConfig, key: str, error_pattern: str | None = None) -> None:
        """A team's own app ([rehearsal] app_new / app_legacy) in place of the reference API on the side it serves,
        handed `key` and the app role's DSN; before start()."""
        self.box.app_new, self.box.app_legacy = rehearsal.app_new, rehearsal.app_legacy
        self.box.app_key, self.box.app_error_pattern = key, error_pattern

    def start(self) -> SandboxRehearsal:
        self.box.start()
        return self

    def app_label(self, use_hipaa_schema: bool) -> str:
        """Which app answers on that side: the reference API, or "your app: <command> in <cwd>"."""
        spec = self.box.app_new if use_hipaa_schema else self.box.app_legacy
        return spec.label if spec is not None else "the reference API (sandbox.api)"

    @property
    def edge_headers(self) -> dict[str, str]:
        """What every request must carry to reach a team's app (its [rehearsal] headers), as a host's edge adds."""
        return {k: v for spec in (self.box.app_legacy, self.box.app_new) if spec is not None
                for k, v in spec.headers.items()}

    @property
    def maintenance_unverifiable(self) -> str | None:
        """A team's legacy app knows nothing of the sandbox's maintenance flag: nothing answers 503 for it."""
        if self.box.app_legacy is None:
            return None
        return ("your legacy app does not know the sandbox's maintenance flag (on your host, [hooks] "
                "maintenance_on is checked for the 503)")

    def stop(self, keep: bool = False) -> None:
        self.box.stop(keep=keep)

    @property
    def dsn(self) -> str:
        return self.box.dsn

    @property
    def api_base_url(self) -> str:
        return self.box.api.base_url

    @property
    def api_headers(self) -> dict[str, str]:
        return self.box.api.bypass_headers | self.edge_headers

    @property
    def app_log_file(self) -> Path | None:
        """None: the rehearsal reads the API's log only through its log command, as a hosted app's."""
        return None

    @property
    def log_source(self) -> LogSource:
        """The API's log served by a command (python -m sandbox.logs), as a host's log CLI serves a hosted
        app's: the rehearsal's post-checks read it the way a team on Render reads theirs. With a team's app on
        the new side, its own output (a text file) is the app's log."""
        if self.box.serving is not None and self.box.serving.new is not None:
            return self.box.serving.new.log_source
        command = (f"{shlex.quote(sys.executable)} -m sandbox.logs --file {shlex.quote(str(self.box.api.log_file))}"
                   f' --since "${SINCE_VARIABLE}"')
        return LogSource(kind="command", format="jsonl", hook="logs_since", command=command, timeout_seconds=30)

    @property
    def api_pid(self) -> int | None:
        return self.box.serving.pid if self.box.serving is not None else None

    @property
    def hooks(self) -> SandboxHooks:
        if self._hooks is None:
            self._hooks = SandboxHooks(self.box.api, offsite=self.box.offsite, serving=self.box.serving)
        return self._hooks


class SandboxProvider:
    """The default provider: everything the gate needs from the embedded sandbox, behind one small interface."""

    key = SANDBOX_KEY

    def targets(self, gate: GateConfig, workdir: Path, patients: int | None) -> SandboxTargets:
        return SandboxTargets(gate, workdir, patients, key=self.key)

    def rehearsal(self, workdir: Path, patients: int, seed: int, progress: Progress) -> SandboxRehearsal:
        return SandboxRehearsal(Sandbox(workdir=workdir, patients=patients, seed=seed, key=self.key,
                                        progress=progress))

    def copy_hooks(self, config: Path | None = None) -> dict[str, str]:
        """[rehearsal] create_copy / delete_copy for the sandbox: a second embedded cluster (sandbox.copies). A
        hook sees only its contract and [hooks] pass_env, so the command itself names what sandbox.copies reads:
        the description and where PostgreSQL is (no secret among them)."""
        settings = {"GATE_CONFIG": str(config) if config else os.environ.get("GATE_CONFIG"),
                    **{name: os.environ.get(name) for name in ("PG_BINDIR", "MIGRATION_GATE_PG_USER")}}
        assigned = "".join(f"{name}={shlex.quote(value)} " for name, value in settings.items() if value)
        base = f"cd {shlex.quote(str(ROOT))} && {assigned}{shlex.quote(sys.executable)} -m sandbox.copies"
        return {"create_copy": f"{base} create", "delete_copy": f"{base} delete"}

    def app_on(self, dsn: str, workdir: Path, progress: Progress) -> SandboxRehearsal:
        """The reference API (legacy schema) with its hooks against a database that already exists: a dress
        rehearsal's copy. Nothing is seeded; stop() stops the API only."""
        return SandboxRehearsal(Sandbox(workdir=workdir, patients=0, key=self.key, progress=progress,
                                        database_dsn=dsn))
