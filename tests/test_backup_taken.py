"""The backup is what was taken (issue 20 item 5): a forged dump, record and catalog in the run folder (an age
file anyone with a recipient's public key can write) are refused before anything is restored; the record is
authenticated under a key derived from the PHI key; the restore commits only when the stream it fed pg_restore
has the digests recorded at backup time; a pg_restore without the fix of CVE-2025-8714 is refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.backup import BackupError, BackupKeys
from migration_gate.checks import backups
from migration_gate.config import load_config
from migration_gate.core.progress import Progress
from migration_gate.db import catalog
from migration_gate.db.checksums import table_checksum
from migration_gate.run.gate import Gate
from migration_gate.run.runstate import schema_state
from sandbox.api_process import SandboxHooks
from sandbox.target import Sandbox
from tests.support.cutover import PATIENTS, cutover_target

PHI_KEY = "ab" * 32


def _keys() -> BackupKeys:
    return dataclasses.replace(BackupKeys.generate(), record_key=backup.record_key(PHI_KEY))


def _marker(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM audit_logs_hipaa").fetchone()[0]


def _grow(dsn: str) -> None:
    """One row more than the backup holds: a restore that commits takes it away."""
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO audit_logs_hipaa (user_id, action, resource_type) VALUES (1, 'read', 'client')")


def test_a_record_with_a_bad_or_no_mac_is_refused(legacy_db: str, tmp_path: Path, monkeypatch) -> None:
    keys = _keys()
    dump = Path(backup.take_backup(legacy_db, tmp_path / "backup", keys=keys).path)
    assert backup.BackupRecord.load(dump, keys.record_key).mac
    record_file = Path(str(dump) + backup.RECORD_SUFFIX)
    data = json.loads(record_file.read_text())
    table = sorted(data["checksums"])[0]
    data["checksums"][table] = [0, "0" * 32]  # what RB-02 would then call "as at backup"
    record_file.write_text(json.dumps(data))
    with pytest.raises(BackupError, match="does not authenticate under the PHI key"):
        backup.BackupRecord.load(dump, keys.record_key)
    with pytest.raises(BackupError, match="does not authenticate"):
        backup.restore_in_place(dump, legacy_db, keys=keys)
    monkeypatch.setenv(backup.PHI_KEY_ENV, PHI_KEY)  # the phase suites' checks: the key from their environment
    assert any("does not authenticate" in p for p in backups.record_matches(dump).problems)
    del data["mac"]
    record_file.write_text(json.dumps(data))
    with pytest.raises(BackupError, match="carries no MAC"):
        backup.BackupRecord.load(dump, keys.record_key)
    with pytest.raises(BackupError, match="carries no MAC"):  # another key: the same as none
        backup.BackupRecord.load(dump, backup.record_key("cd" * 32))


def test_a_swapped_catalog_record_is_refused(legacy_db: str, tmp_path: Path) -> None:
    keys = _keys()
    dump = Path(backup.take_backup(legacy_db, tmp_path / "backup", keys=keys).path)
    catalog_file = Path(str(dump) + backup.CATALOG_SUFFIX)
    catalog_file.write_text(catalog_file.read_text().replace("clients_hipaa", "clients_hipaa_x", 1))
    with pytest.raises(BackupError, match="catalog record of backup .* is not the one recorded"):
        backup.BackupRecord.load(dump, keys.record_key).catalog()


def test_a_dump_whose_plaintext_differs_from_the_record_is_not_committed(legacy_db: str, tmp_path: Path) -> None:
    keys = _keys()
    taken = backup.take_backup(legacy_db, tmp_path / "backup", keys=keys)
    dump = Path(taken.path)
    dataclasses.replace(taken, plaintext_sha256="0" * 64).save(keys.record_key)  # authentic, another plaintext
    _grow(legacy_db)
    before = _marker(legacy_db)
    with pytest.raises(BackupError) as caught:
        backup.restore_in_place(dump, legacy_db, keys=keys)
    assert f"backup {dump.name}: plaintext_sha256 " in str(caught.value)
    assert "000000000000: refusing to restore it (nothing was restored)" in str(caught.value)
    assert _marker(legacy_db) == before  # the restore ran to its end and was rolled back


def test_a_dump_other_than_the_one_state_json_recorded_is_refused(legacy_db: str, tmp_path: Path) -> None:
    """An authentic older backup put in the place of this run's (a replay): its MAC is good, its sha256 is not
    the one state.json recorded."""
    keys = _keys()
    older = backup.take_backup(legacy_db, tmp_path / "older", keys=keys)
    _grow(legacy_db)
    taken = backup.take_backup(legacy_db, tmp_path / "backup", keys=keys)
    state = taken.summary()
    _grow(legacy_db)
    before = _marker(legacy_db)
    with pytest.raises(BackupError) as caught:
        backup.restore_in_place(Path(older.path), legacy_db, keys=keys, expected=state)
    message = str(caught.value)
    assert Path(older.path).name in message and older.sha256[:12] in message and taken.sha256[:12] in message
    assert "state.json recorded at backup time" in message
    with pytest.raises(BackupError, match="state.json recorded at backup time"):
        backup.verify_unchanged(Path(older.path), keys, state)
    assert _marker(legacy_db) == before
    backup.restore_in_place(Path(taken.path), legacy_db, keys=keys, expected=state)  # the right one restores
    assert _marker(legacy_db) == before - 1


@pytest.mark.parametrize(("version", "refused"), [
    ("pg_restore (PostgreSQL) 15.18", None),
    ("pg_restore (PostgreSQL) 15.13", "pg_restore 15.13 predates the fix of CVE-2025-8714: use 15.14 or newer"),
    ("pg_restore (PostgreSQL) 17.5 (Debian 17.5-1)", "use 17.6 or newer"),
    ("pg_restore (PostgreSQL) 17.6", None),
    ("pg_restore (PostgreSQL) 16.9", "use 16.10 or newer"),
    ("pg_restore (PostgreSQL) 14.19", None),
    ("pg_restore (PostgreSQL) 13.21", "use 13.22 or newer"),
    ("pg_restore (PostgreSQL) 12.22", "pg_restore 12.22 is an unsupported major"),
    ("pg_restore (PostgreSQL) 18.0", None),
    ("no version here", "cannot check it for CVE-2025-8714"),
])
def test_pg_restore_is_checked_for_cve_2025_8714(version: str, refused: str | None) -> None:
    problem = backup.pg_restore_problem(version)
    assert (problem is None) if refused is None else (refused in problem and "\n" not in problem)


def test_this_machines_pg_restore_passes_the_pre_flight() -> None:
    assert not [p for p in backup.backup_inputs(load_config(), env={}) if "CVE" in p]


# -- the rollback with a forged backup in the run folder ---------------------------------------------------------

@pytest.fixture
def sandbox(tmp_path: Path):
    box = Sandbox(workdir=tmp_path / "sandbox", patients=PATIENTS, progress=Progress(quiet=True)).start()
    yield box
    box.stop()


def _whole(dsn: str) -> tuple:
    """Every table's content and the whole catalog, whatever schema the database is on."""
    with psycopg.connect(dsn) as conn:
        found = catalog.inspect(conn)
        return found, {k: table_checksum(conn, t.name, schema=t.schema) for k, t in found.tables.items()}


class ForgeThenFail(SandboxHooks):
    """Someone with write access to the run folder and the recipients' public key (in migration.toml) puts a
    dump of their own, its record and catalog in the place of the run's, then the deploy fails: the rollback
    must not restore it."""

    def __init__(self, api, offsite: Path, forged: Path, gate_holder: dict) -> None:
        super().__init__(api, offsite)
        self.forged, self.holder = forged, gate_holder

    def deploy(self, use_hipaa_schema: bool) -> None:
        if not use_hipaa_schema:
            return super().deploy(use_hipaa_schema)
        dump = Path(self.holder["gate"].state.backup["path"])
        for suffix in ("", backup.RECORD_SUFFIX, backup.CATALOG_SUFFIX):
            shutil.copyfile(str(self.forged) + suffix, str(dump) + suffix)
        record = Path(str(dump) + backup.RECORD_SUFFIX)
        record.write_text(json.dumps(json.loads(record.read_text()) | {"path": str(dump)}))
        self.holder["before"] = _whole(self.holder["dsn"])
        raise RuntimeError("the host's deploy failed")


def test_a_forged_backup_in_the_run_folder_is_not_restored(sandbox: Sandbox, tmp_path: Path, monkeypatch) -> None:
    with psycopg.connect(sandbox.dsn) as conn:  # the attacker's version of the data
        conn.execute("UPDATE clients_hipaa SET status = 'forged' WHERE id = (SELECT min(id) FROM clients_hipaa)")
    monkeypatch.delenv("PHI_ENCRYPTION_KEY", raising=False)  # the attacker has the public keys, not the PHI key
    attacker = BackupKeys(recipients=sandbox.backup_keys.recipients)
    forged = Path(backup.take_backup(sandbox.dsn, tmp_path / "attacker", keys=attacker).path)
    with psycopg.connect(sandbox.dsn) as conn:
        conn.execute("UPDATE clients_hipaa SET status = 'active' WHERE status = 'forged'")
    holder: dict = {"dsn": sandbox.dsn}
    hooks = ForgeThenFail(sandbox.api, sandbox.offsite, forged, holder)
    gate = Gate(dataclasses.replace(load_config(), deploy_wait_seconds=6), cutover_target(sandbox, hooks),
                tmp_path / "run", Progress(quiet=True))
    holder["gate"] = gate
    state = gate.run()
    assert state.status == "rollback-failed" and not state.rollback_verified, state.status
    restore = state.rollback_phases[0]
    assert restore.status == "failed" and "carries no MAC" in restore.detail, restore.detail
    assert _whole(sandbox.dsn) == holder["before"]  # the database untouched by the rollback: still migrated
    with psycopg.connect(sandbox.dsn) as conn:
        assert schema_state(conn, load_config()) != "legacy"
