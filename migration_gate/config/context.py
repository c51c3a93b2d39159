"""The one channel from the gate to a phase suite: a frozen, typed SuiteContext, written as JSON beside the phase
(<run folder>/<phase>/context.json) and named by the plugin's one option (--gate-context PATH, ini gate_context).

It carries run state only. Secrets (DATABASE_URL with its password, PHI_ENCRYPTION_KEY, the API login and
headers, BASELINE_DATABASE_URL, the backup's age identities) stay in the child's environment, read there by
migration_gate.config.environment; they never go into this file (SECRET_VARIABLES; a test holds it).
A suite run by hand has no file: migration_gate.config.environment.context_by_hand builds the same object from
the environment and the options.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from migration_gate.config.errors import ConfigError

# What stays in the environment, never in a context file: the target's secrets.
SECRET_VARIABLES = ("DATABASE_URL", "PHI_ENCRYPTION_KEY", "GATE_API_USERNAME", "GATE_API_PASSWORD",
                    "GATE_API_HEADERS", "BASELINE_DATABASE_URL", "GATE_BACKUP_IDENTITY")
_PATHS = ("run_dir", "config", "migration_file", "app_log_file", "backup_file", "carried_rows", "progress_file")


@dataclass(frozen=True)
class SuiteContext:
    """What a phase suite runs with, besides the secrets: the cut-over's run folder (state.json, performance/) and
    this phase's folder in it (its reports and results), the description and migration file the gate uses, the
    app's address and log position, the backup, and who to answer to. By hand: the run's --gate-run-dir for both
    folders (phase_folder ""), the rest from the environment."""

    run_dir: Path
    phase_folder: str = ""  # this phase's reports: run_dir / phase_folder
    config: Path | None = None
    migration_file: Path | None = None  # None: the one the description names
    sandbox_provider: str | None = None  # None: the description's [sandbox] provider
    rehearsal_kind: str | None = None  # None: the description's [rehearsal] kind
    synthetic: bool = False  # DATABASE_URL is a rehearsal's sandbox: the reports carry the banner
    api_base_url: str | None = None
    app_log_file: Path | None = None
    log_offset: int = 0
    logs_since: str | None = None
    log_source: str | None = None  # the source the gate resolved (LogSource JSON); None: the check resolves [logs]
    log_marker: str | None = None  # the deploy's position in it (LogMarker JSON)
    backup_file: Path | None = None
    carried_rows: Path | None = None  # what a SQL rollback carried back (RB-02)
    allow_writes: bool = False
    progress_file: Path | None = None  # one JSON line per test done, for the gate's progress
    parent_pid: int | None = None  # the gate: the suite ends itself when it dies

    @property
    def reports_dir(self) -> Path:
        """This phase's folder: its HTML, JUnit and results."""
        return self.run_dir / self.phase_folder if self.phase_folder else self.run_dir

    def to_json(self) -> str:
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()},
                          indent=2)

    def write(self, path: Path) -> Path:
        """Written whole or not at all (a suite never reads half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: Path) -> SuiteContext:
        """The context the gate wrote; an unreadable or foreign file is one line naming it."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"gate context {path}: cannot be read ({exc.strerror or 'unreadable'})") from None
        except ValueError:
            raise ConfigError(f"gate context {path}: not JSON") from None
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or "run_dir" not in data:
            raise ConfigError(f"gate context {path}: not a context the gate wrote (no run_dir)")
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"gate context {path}: unknown key {unknown[0]}")
        try:
            return cls(**{k: Path(v) if k in _PATHS and v is not None else v for k, v in data.items()})
        except TypeError:
            raise ConfigError(f"gate context {path}: not a context the gate wrote") from None
