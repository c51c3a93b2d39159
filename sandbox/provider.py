"""The embedded sandbox as the library's sandbox provider (migration_gate.provider), named in migration.toml
[sandbox] provider: phase targets built on demand (sandbox.phases), the synthetic key, and the rehearsal's
throwaway target (sandbox.target) with its hooks."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from migration_gate.config import ROOT, GateConfig
from migration_gate.logsource import SINCE_VARIABLE, LogSource
from migration_gate.progress import Progress
from sandbox.api_process import SandboxHooks
from sandbox.phases import SandboxTargets
from sandbox.synthetic import SANDBOX_KEY
from sandbox.target import Sandbox


class SandboxRehearsal:
    """A Sandbox (cluster, seeded legacy database, reference API) as the rehearsal sees it."""

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self._hooks: SandboxHooks | None = None

    def start(self) -> SandboxRehearsal:
        self.box.start()
        return self

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
        return self.box.api.bypass_headers

    @property
    def app_log_file(self) -> Path | None:
        """None: the rehearsal reads the API's log only through its log command, as a hosted app's."""
        return None

    @property
    def log_source(self) -> LogSource:
        """The API's log served by a command (python -m sandbox.logs), as a host's log CLI serves a hosted
        app's: the rehearsal's post-checks read it the way a team on Render reads theirs."""
        command = (f"{shlex.quote(sys.executable)} -m sandbox.logs --file {shlex.quote(str(self.box.api.log_file))}"
                   f' --since "${SINCE_VARIABLE}"')
        return LogSource(kind="command", format="jsonl", hook="logs_since", command=command, timeout_seconds=30)

    @property
    def api_pid(self) -> int | None:
        return self.box.api.pid if self.box.api is not None else None

    @property
    def hooks(self) -> SandboxHooks:
        if self._hooks is None:
            self._hooks = SandboxHooks(self.box.api, offsite=self.box.offsite)
        return self._hooks


class SandboxProvider:
    """The default provider: everything the gate needs from the embedded sandbox, behind one small interface."""

    key = SANDBOX_KEY

    def targets(self, gate: GateConfig, workdir: Path, patients: int | None) -> SandboxTargets:
        return SandboxTargets(gate, workdir, patients, key=self.key)

    def rehearsal(self, workdir: Path, patients: int, seed: int, progress: Progress) -> SandboxRehearsal:
        return SandboxRehearsal(Sandbox(workdir=workdir, patients=patients, seed=seed, key=self.key,
                                        progress=progress))

    def copy_hooks(self) -> dict[str, str]:
        """[rehearsal] create_copy / delete_copy for the sandbox: a second embedded cluster (sandbox.copies)."""
        base = f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m sandbox.copies"
        return {"create_copy": f"{base} create", "delete_copy": f"{base} delete"}

    def app_on(self, dsn: str, workdir: Path, progress: Progress) -> SandboxRehearsal:
        """The reference API (legacy schema) with its hooks against a database that already exists: a dress
        rehearsal's copy. Nothing is seeded; stop() stops the API only."""
        return SandboxRehearsal(Sandbox(workdir=workdir, patients=0, key=self.key, progress=progress,
                                        database_dsn=dsn))
