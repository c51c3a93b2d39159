"""How the embedded sandbox plugs into the library: through this one small interface, named by a dotted path
(`[sandbox] provider` in migration.toml, overridden by GATE_SANDBOX_PROVIDER or --gate-sandbox-provider) and
loaded at run time. So the library never imports the sandbox, and a team can plug in a target of its own."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

from migration_gate.app.hooks import Hooks
from migration_gate.app.logsource import LogSource
from migration_gate.config import ConfigError, GateConfig
from migration_gate.core.progress import Progress
from migration_gate.run.target import Targets


class Rehearsal(Protocol):
    """A throwaway target scripts/rehearse cuts over: a database with data, the app's API, its host's hooks."""

    @property
    def dsn(self) -> str: ...
    @property
    def api_base_url(self) -> str: ...
    @property
    def api_headers(self) -> dict[str, str]: ...  # e.g. the maintenance bypass the checks need before go-live
    @property
    def app_log_file(self) -> Path | None: ...
    @property
    def log_source(self) -> LogSource | None: ...  # where the post-checks read the app's log (None: [logs])
    @property
    def api_pid(self) -> int | None: ...  # for the --keep message
    @property
    def hooks(self) -> Hooks: ...
    def start(self) -> Rehearsal: ...
    def stop(self, keep: bool = False) -> None: ...


class SandboxProvider(Protocol):
    """What the phase suites need without DATABASE_URL (targets per phase, the synthetic key) and what the
    rehearsal needs (a target to cut over)."""

    @property
    def key(self) -> str: ...
    def targets(self, gate: GateConfig, workdir: Path, patients: int | None) -> Targets: ...
    def rehearsal(self, workdir: Path, patients: int, seed: int, progress: Progress) -> Rehearsal: ...


def load_provider(spec: str) -> SandboxProvider:
    """'package.module:Name' imported (a class is instantiated, an object used as it is); a bad name is one line."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"sandbox provider '{spec}' must be 'module:attribute', "
                          "e.g. sandbox.provider:SandboxProvider")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"sandbox provider '{spec}': cannot import {module_name} "
                          f"({exc.__class__.__name__})") from None
    found = getattr(module, attribute, None)
    if found is None:
        raise ConfigError(f"sandbox provider '{spec}': {module_name} has no {attribute}")
    provider = found() if isinstance(found, type) else found
    absent = [name for name in ("key", "targets", "rehearsal") if not hasattr(provider, name)]
    if absent:
        raise ConfigError(f"sandbox provider '{spec}' lacks {', '.join(absent)}")
    return provider
