"""The embedded sandbox target: a throwaway PostgreSQL, the legacy database with synthetic PHI, and the
reference API on the legacy schema. What a user's staging or production is to the gate, this is on a fresh
machine. As on a hosted database, the gate gets the owner role's DSN (no superuser) and the API connects as the
app's own role with only the privileges [app_role] gives it (sandbox.roles)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate.app.appserver import AppServer
from migration_gate.backup.keys import IDENTITY_ENV, RECIPIENTS_ENV, BackupKeys
from migration_gate.config import AppServerConfig, GateConfig, load_config
from migration_gate.core.paths import ROOT
from migration_gate.core.progress import Progress
from migration_gate.db.embedded import EmbeddedPostgres
from sandbox.api_process import SANDBOX_JWT_SECRET, ApiProcess, ServingApp
from sandbox.deploy import deploy_migrations
from sandbox.roles import as_role, create_app_role, grant_app_role
from sandbox.seed import SeedSummary, seed_legacy
from sandbox.synthetic import SANDBOX_KEY

DATABASE = "therapy_app"


KEPT_BY = str(ROOT)  # a kept cluster names this checkout: scripts/rehearse --stop-kept stops only its own


@dataclass
class Sandbox:
    workdir: Path
    patients: int
    seed: int = 1
    key: str = SANDBOX_KEY
    progress: Progress = field(default_factory=Progress)
    cluster: EmbeddedPostgres | None = None
    api: ApiProcess | None = None
    seeded: SeedSummary | None = None
    gate: GateConfig | None = None  # the description whose [app_role] the API runs as (default: migration.toml)
    fixture_password: str | None = None  # the first demo user's password instead of the documented one
    jwt_secret: str = SANDBOX_JWT_SECRET
    backup_keys: BackupKeys | None = None  # the sandbox's own backup key pair, made at start
    private: Path | None = None  # outside the run folder: the identity file and the "off the box" store
    database_dsn: str | None = None  # an existing database (a dress rehearsal's copy): no cluster, no seeding
    app_new: AppServerConfig | None = None  # a team's own app in place of the reference API from the deploy on
    app_legacy: AppServerConfig | None = None  # ... and on the legacy side
    app_key: str | None = None  # the key handed to a team's app (default: the sandbox's)
    app_error_pattern: str | None = None  # [logs] error_pattern for a team's app's text log
    serving: ServingApp | None = None
    _saved_env: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def dsn(self) -> str:
        """The owner role's DSN: what the gate, the suites, backups and the migration use."""
        if self.database_dsn is not None:
            return self.database_dsn
        assert self.cluster is not None
        return self.cluster.dsn(DATABASE)

    @property
    def app_dsn(self) -> str:
        """What the API connects as: the app's own role when [app_role] names one, else the owner."""
        app_role = self.gate.app_role if self.gate else None
        return as_role(self.dsn, app_role.name) if app_role else self.dsn

    @property
    def offsite(self) -> Path:
        """The sandbox's "off the box" store (a second folder, never inside a run folder)."""
        assert self.private is not None
        return self.private / "offsite"

    def _backup_keys(self) -> None:
        """A key pair made now, given to the gate as an operator does: GATE_BACKUP_RECIPIENTS and
        GATE_BACKUP_IDENTITY (an owner-only identity file outside the run folder) for the sandbox's lifetime."""
        self.backup_keys = BackupKeys.generate()
        self.private = Path(tempfile.mkdtemp(prefix="gate-sandbox-"))
        identity = self.private / "backup-identity.txt"
        identity.write_text(self.backup_keys.identity_file_text())
        identity.chmod(0o600)
        self._saved_env = {name: os.environ.get(name) for name in (IDENTITY_ENV, RECIPIENTS_ENV)}
        os.environ[IDENTITY_ENV], os.environ[RECIPIENTS_ENV] = str(identity), self.backup_keys.recipients[0]

    def _forget_backup_keys(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        if self.private is not None:
            shutil.rmtree(self.private, ignore_errors=True)
            self.private = None

    def start(self) -> Sandbox:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._backup_keys()
        self.gate = self.gate or load_config()
        if self.database_dsn is not None:
            return self._start_api()
        self.progress.say("starting the embedded PostgreSQL")
        self.cluster = EmbeddedPostgres().start()
        if self.gate.app_role:
            create_app_role(self.cluster, self.gate.app_role)
        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:  # the owner role creates and owns it
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        self.progress.say(f"seeding the legacy database with {self.patients:,} synthetic patients")
        self.seeded = seed_legacy(self.dsn, self.patients, seed=self.seed, key=self.key,
                                  progress=lambda done, total: self.progress.count("patients", done, total),
                                  fixture_password=self.fixture_password)
        if self.gate.app_role:
            grant_app_role(self.dsn, self.gate.app_role, sorted(self.gate.legacy_schema), self.gate.schema)
        self.progress.say(f"seeded in {self.seeded.seconds:.1f} s")
        return self._start_api()

    def _start_api(self) -> Sandbox:
        self.api = ApiProcess(self.app_dsn, self.key, use_hipaa_schema=False, log_file=self.workdir / "api.log",
                              maintenance_file=self.workdir / "maintenance.flag", jwt_secret=self.jwt_secret)
        self.api.app_migrations = deploy_migrations(self.gate, self.dsn)  # before every start on the new schema
        self.serving = ServingApp(self.api, *(self._team_app(spec, name) for spec, name in (
            (self.app_new, "app-new.log"), (self.app_legacy, "app-legacy.log"))))
        self.serving.start(use_hipaa_schema=False)
        self.progress.say(f"{self.serving.label(False)} on {self.api.base_url} (legacy schema)")
        return self

    def _team_app(self, spec: AppServerConfig | None, log_name: str) -> AppServer | None:
        """A team's app on the reference API's port, connecting as the app's role, its log in the sandbox folder."""
        if spec is None:
            return None
        assert self.api is not None
        dsn = self.dsn if spec.database_role == "owner" else self.app_dsn
        return AppServer(spec, dsn, self.app_key or self.key, self.workdir / log_name, port=self.api.port,
                         error_pattern=self.app_error_pattern)

    def stop(self, keep: bool = False) -> None:
        """Stop everything, or with keep=True leave the cluster and the API running for inspection."""
        api_pid = self.api.pid if self.api is not None else None
        if self.serving is not None:  # a team's app is stopped even with keep: only the reference API is kept
            for app in (self.serving.new, self.serving.legacy):
                if app is not None:
                    app.stop()
        if self.api is not None:
            self.api.detach() if keep else self.api.stop()
        if self.cluster is not None:
            if keep:
                self.cluster.keep(companion_pids=(api_pid,) if api_pid else (), owner=KEPT_BY)
            else:
                self.cluster.stop()
        if not keep:  # a kept sandbox keeps its key, so its backups can still be opened
            self._forget_backup_keys()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
