"""The embedded sandbox in the state each phase needs, built on demand, one database per state in one cluster.

premigration: the seeded legacy database, API on the legacy schema.
backup:       the same, plus a backup taken with migration_gate.backup.
postmigration: seeded, backed up, migrated, API deployed with USE_HIPAA_SCHEMA=true.
integrity:    seeded, backed up, migrated, the backup restored as the baseline; no app traffic (integrity runs
              right after the migration, before go-live).
rollback:     seeded, backed up, migrated, rolled back, API on the legacy schema.

Every database is created and owned by the cluster's owner role (no superuser), whose DSN the suites get; each
API connects as the app's own role ([app_role]) with the privileges the legacy grants and the migration give.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from migration_gate.app import logsource
from migration_gate.app.logsource import LogSource
from migration_gate.backup import digests as baseline_digests
from migration_gate.backup.dump import take_backup
from migration_gate.backup.keys import BackupKeys
from migration_gate.backup.restores import restore
from migration_gate.config import GateConfig
from migration_gate.db import migration
from migration_gate.db.embedded import EmbeddedPostgres
from migration_gate.run.target import TargetState
from sandbox.api_process import ApiProcess
from sandbox.deploy import deploy_migrations
from sandbox.roles import as_role, create_app_role, grant_app_role
from sandbox.seed import seed_legacy
from sandbox.synthetic import SANDBOX_KEY

TEMPLATE = "gate_legacy_template"


class SandboxTargets:
    def __init__(self, gate: GateConfig, workdir: Path, patients: int | None = None, key: str = SANDBOX_KEY) -> None:
        self.gate = gate
        self.workdir = workdir
        self.patients = patients or gate.sandbox_patients
        self.key = key
        self.cluster: EmbeddedPostgres | None = None
        self._states: dict[str, TargetState] = {}
        self._apis: list[ApiProcess] = []
        self.backup_keys = BackupKeys.generate()  # the phase states' backups: a pair held in memory

    def _database(self, name: str) -> str:
        if self.cluster is None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.cluster = EmbeddedPostgres().start()
            if self.gate.app_role:
                create_app_role(self.cluster, self.gate.app_role)
            with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
            seed_legacy(self.cluster.dsn(TEMPLATE), self.patients, seed=self.gate.sandbox_seed, key=self.key,
                        workers=1 if self.patients <= 5_000 else None)
            if self.gate.app_role:
                grant_app_role(self.cluster.dsn(TEMPLATE), self.gate.app_role, sorted(self.gate.legacy_schema),
                               self.gate.schema)
        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                           sql.Identifier(TEMPLATE)))
        return self.cluster.dsn(name)

    def _api(self, dsn: str, name: str, use_hipaa_schema: bool) -> ApiProcess:
        app_dsn = as_role(dsn, self.gate.app_role.name) if self.gate.app_role else dsn
        api = ApiProcess(app_dsn, self.key, use_hipaa_schema=use_hipaa_schema,
                         log_file=self.workdir / f"{name}-api.log",
                         maintenance_file=self.workdir / f"{name}-maintenance.flag")
        api.app_migrations = deploy_migrations(self.gate, dsn)  # the deploy's own tables, as on every new start
        api.start()
        self._apis.append(api)
        return api

    def _state(self, phase: str, dsn: str, api: ApiProcess, **extra) -> TargetState:
        return TargetState(phase=phase, dsn=dsn, use_hipaa_schema=api.use_hipaa_schema, api_base_url=api.base_url,
                           app_log_file=api.log_file, api_username=self.gate.sandbox_username,
                           api_password=self.gate.sandbox_password, backup_keys=self.backup_keys, **extra)

    def state(self, phase: str) -> TargetState:
        if phase not in self._states:
            self._states[phase] = getattr(self, f"_build_{phase}")()
        return self._states[phase]

    def _build_premigration(self) -> TargetState:
        dsn = self._database("gate_premigration")
        return self._state("premigration", dsn, self._api(dsn, "premigration", False))

    def _build_backup(self) -> TargetState:
        dsn = self._database("gate_backup")
        record = take_backup(dsn, self.workdir / "backups", name="gate_backup.dump", keys=self.backup_keys)
        return self._state("backup", dsn, self._api(dsn, "backup", False), backup_file=Path(record.path))

    def _migrated(self, name: str) -> tuple[str, Path]:
        dsn = self._database(name)
        record = baseline_digests.record_backup(dsn, self.workdir / "backups", self.gate, self.key,
                                                name=f"{name}.dump", keys=self.backup_keys)
        migration.run_file(dsn, self.gate.migration_file, self.key)
        return dsn, Path(record.path)

    def _build_postmigration(self) -> TargetState:
        dsn, dump = self._migrated("gate_postmigration")
        api = self._api(dsn, "postmigration", True)
        source = LogSource(kind="file", format="jsonl", path=str(api.log_file))
        marker = logsource.mark(source)  # after the start: the lines the suite's own requests cause
        return self._state("postmigration", dsn, api, backup_file=dump, log_offset=marker.offset,
                           log_source=source, log_marker=marker)

    def _build_integrity(self) -> TargetState:
        """Migrated and untouched by app traffic: integrity runs right after the migration, before go-live. The
        backup is restored as the baseline only when a check asks for it (baseline)."""
        dsn, dump = self._migrated("gate_integrity")
        return TargetState(phase="integrity", dsn=dsn, use_hipaa_schema=True, backup_file=dump,
                           backup_keys=self.backup_keys)

    def _build_rollback(self) -> TargetState:
        dsn, dump = self._migrated("gate_rollback")
        migration.run_file(dsn, self.gate.rollback_file, self.key)
        return self._state("rollback", dsn, self._api(dsn, "rollback", False), backup_file=dump)

    def baseline(self, state: TargetState) -> str:
        if state.baseline_dsn is None and state.phase == "integrity" and state.backup_file is not None:
            state.baseline_dsn = restore(state.backup_file, state.dsn, "gate_integrity_baseline",
                                         keys=self.backup_keys)
        if state.baseline_dsn is None:
            raise LookupError(f"the sandbox's {state.phase} state has no baseline")
        return state.baseline_dsn

    def close(self) -> None:
        for api in self._apis:
            api.stop()
        if self.cluster is not None:
            self.cluster.stop()
