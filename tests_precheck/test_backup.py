"""Backup: the dump taken before the migration is complete, readable, private and exactly the live data."""

import pytest

from migration_gate.checks import backups

pytestmark = pytest.mark.backup


@pytest.fixture
def dump(gate_target):
    if gate_target.backup_file is None:
        pytest.fail("BACKUP_FILE is not set: the backup phase checks the dump scripts/backup wrote")
    return gate_target.backup_file


@pytest.mark.criterion("BAK-01")
def test_dump_exists_and_is_not_empty(dump):
    backups.exists_and_not_empty(dump).expect()


@pytest.mark.criterion("BAK-02")
def test_dump_is_readable_by_pg_restore(dump, gate_target):
    backups.readable_by_pg_restore(dump, gate_target.backup_keys).expect()


@pytest.mark.criterion("BAK-03")
def test_restored_dump_holds_exactly_the_live_data_at_backup_time(dump, gate_target, gate_config):
    backups.restores_to_recorded_content(dump, gate_target.dsn, gate_target.backup_keys,
                                         gate_config.backup.workers).expect()


@pytest.mark.criterion("BAK-04")
def test_sha256_and_size_recorded_and_matching(dump):
    backups.record_matches(dump).expect()


@pytest.mark.criterion("BAK-05")
def test_dump_is_readable_by_its_owner_only_and_encrypted_at_rest(dump, gate_config):
    backups.owner_only(dump).expect()
    backups.encrypted_at_rest(dump, required=gate_config.backup.encrypt != "none").expect()
