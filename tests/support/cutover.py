"""A whole cut-over on a seeded sandbox, shared by the gate's tests and those of its parts (backups, rollbacks,
deploy tables, maintenance, the watch): the sandbox (the function fixture `sandbox`, imported by name), the target
the gate is handed, a snapshot of the legacy tables to compare before and after, a migration broken at a phase,
the gate in this process (`run_gate`) or the command line in a child (`gate_cli`), and descriptions whose backup
hooks store into a folder."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.app.hooks import CutoverTarget
from migration_gate.config import load_config
from migration_gate.core.progress import Progress
from migration_gate.db import catalog
from migration_gate.db.checksums import database_checksums
from migration_gate.run.gate import Gate
from migration_gate.run.runstate import RunState
from sandbox.api_process import SandboxHooks
from sandbox.synthetic import SANDBOX_KEY
from sandbox.target import Sandbox
from tests.conftest import MIGRATION, ROOT, gate_keys

PATIENTS = 150
# Faults that only strike the real run, not the scratch copy the pre-checks rehearse on (as a lock timeout or
# production-only data would): so the pre-checks pass and the fault shows at its own phase.
NOT_SCRATCH = "current_database() NOT LIKE 'gate_scratch%'"


@pytest.fixture
def sandbox(tmp_path: Path):
    box = Sandbox(workdir=tmp_path / "sandbox", patients=PATIENTS, progress=Progress(quiet=True)).start()
    yield box
    box.stop()


def cutover_target(box: Sandbox, hooks=None) -> CutoverTarget:
    gate = load_config()
    return CutoverTarget(dsn=box.dsn, key=SANDBOX_KEY, api_base_url=box.api.base_url,
                         api_username=gate.sandbox_username, api_password=gate.sandbox_password,
                         hooks=hooks or SandboxHooks(box.api), app_log_file=box.api.log_file,
                         api_headers=box.api.bypass_headers, allow_writes=True)


def legacy_snapshot(dsn: str, audit: bool = True) -> tuple:
    """Content and schema of every legacy table (audit_logs_hipaa left out when the run's own audited reads,
    as the app must log them, are expected to have added rows)."""
    tables = [t for t in load_config().legacy_schema if audit or t != "audit_logs_hipaa"]
    with psycopg.connect(dsn) as conn:
        return database_checksums(conn, tables), catalog.inspect(conn).only(tables)


def broken_migration(tmp_path: Path, sql: str) -> Path:
    path = tmp_path / "broken.sql"
    path.write_text(MIGRATION.read_text() + f"\nDO $$ BEGIN IF {NOT_SCRATCH} THEN {sql} END IF; END $$;\n")
    return path


def run_gate(box: Sandbox, run_dir: Path, migration_file: Path | None = None, hooks=None,
             deploy_retries: int = 0) -> RunState:
    if migration_file:
        os.environ["GATE_MIGRATION_FILE"] = str(migration_file)
    try:  # a deploy that never reports the new schema fails after 6 s here, not the default 300
        gate = load_config()
        gate = dataclasses.replace(gate, deploy_wait_seconds=6,
                                   deploy=dataclasses.replace(gate.deploy, retries=deploy_retries))
        return Gate(gate, cutover_target(box, hooks), run_dir, Progress(quiet=True)).run()
    finally:
        os.environ.pop("GATE_MIGRATION_FILE", None)


BROKEN = {
    "migration": ("RAISE EXCEPTION 'lock timeout on the real database';", None),
    "integrity": ("DELETE FROM clinical_sessions WHERE status = 'cancelled';", None),
    "postmigration": ("ALTER TABLE audit_logs_hipaa ALTER COLUMN id DROP DEFAULT;", None),
    "deploy": (None, "deploy"),
    "golive": (None, "golive"),
}


def gate_cli(box: Sandbox, *args: str, reports: Path, migration: Path | None = None,
         config: Path | None = None, extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=box.dsn, PHI_ENCRYPTION_KEY=SANDBOX_KEY, API_BASE_URL=box.api.base_url,
               GATE_API_USERNAME="demo_therapist1", GATE_API_PASSWORD="demo-password-1",
               GATE_REPORTS_DIR=str(reports), GATE_API_HEADERS=json.dumps(box.api.bypass_headers))
    if config is not None:
        env["GATE_CONFIG"] = str(config)
    env.update(extra or {})
    if migration is not None:
        env["GATE_MIGRATION_FILE"] = str(migration)
    return subprocess.Popen([sys.executable, "-m", "migration_gate.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rollback_run(legacy_db: str, tmp_path: Path, target: str) -> backup.BackupRecord:
    """A run folder whose backup was taken as the gate takes it: the record authenticated under the run's PHI key
    (the sandbox's, which ROLLBACK_ENV hands the rollback), its digests in state.json."""
    record = backup.take_backup(legacy_db, tmp_path / "run" / "backup", keys=gate_keys())
    state = {"run_dir": str(tmp_path / "run"), "target": target, "migration_file": "m", "migration_sha256": "0",
             "status": "rolled-back", "phases": [{"name": "migration", "status": "passed"}],
             "backup": record.summary()}
    (tmp_path / "run" / "state.json").write_text(json.dumps(state))
    return record


def config_with_store(tmp_path: Path) -> Path:
    """migration.toml with store_backup/fetch_backup hooks that copy the backup to a second folder (as the
    shipped placeholders would refuse)."""
    offsite = tmp_path / "offsite"
    text = load_config().path.read_text().replace('file = "sandbox/', f'file = "{ROOT}/sandbox/')
    text = re.sub(r"^store_backup = .*$", f"store_backup = 'mkdir -p {offsite} && cp \"$GATE_BACKUP_FILE\" "
                  f"{offsite}/ && echo file://{offsite}/$GATE_BACKUP_NAME'", text, flags=re.M)
    text = re.sub(r"^fetch_backup = .*$", "fetch_backup = 'cp \"${GATE_BACKUP_LOCATION#file://}\" "
                  "\"$GATE_BACKUP_DEST\"'", text, flags=re.M)
    config = tmp_path / "migration.toml"
    config.write_text(text)
    return config


def config_without_rollback_sql(tmp_path: Path) -> Path:
    config = config_with_store(tmp_path)
    config.write_text(re.sub(r"^rollback_file = .*$", "", config.read_text(), flags=re.M))
    return config


class SlowDeployHooks(SandboxHooks):
    """A host whose deploy returns at once and swaps the instance seconds later (as Render's does)."""

    def deploy(self, use_hipaa_schema: bool) -> None:
        if use_hipaa_schema:
            threading.Timer(3.0, lambda: self.api.restart(use_hipaa_schema=True)).start()
            return
        super().deploy(use_hipaa_schema)


def performance_config(folder: Path, requests: int) -> Path:
    """migration.toml with fewer requests per endpoint (the phase suites read the file, GATE_CONFIG)."""
    text = load_config().path.read_text().replace('file = "sandbox/', f'file = "{ROOT}/sandbox/')
    text, found = re.subn(r"^requests = 40 ", f"requests = {requests} ", text, flags=re.M)
    assert found == 1
    path = folder / "migration.toml"
    path.write_text(text)
    return path


def plaintext_dumps(*folders: Path) -> list[Path]:
    """Every file under the folders that is a pg_dump archive in clear."""
    return [p for folder in folders for p in folder.rglob("*") if p.is_file() and backup.is_plaintext_dump(p)]
