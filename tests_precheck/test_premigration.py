"""Pre-migration: on the legacy target, before cut-over."""

import pytest

from migration_gate.checks import accounting, data, encryption, environment, schema
from migration_gate.checks.lint import lint_gate
from migration_gate.db.binaries import find_binaries
from migration_gate.rehearsal.scratch import rehearse_on_copy

pytestmark = pytest.mark.premigration


@pytest.mark.criterion("PRE-01")
def test_database_is_reachable_and_its_version_recorded(gate_db):
    environment.server_reachable(gate_db).expect()


@pytest.mark.criterion("PRE-02")
def test_pg_dump_is_present_and_not_older_than_the_server(gate_db):
    environment.pg_dump_compatible(gate_db, find_binaries()).expect()


@pytest.mark.criterion("PRE-03")
def test_phi_key_is_present_and_64_hex_characters(gate_session):
    environment.key_configured(gate_session.key).expect()


@pytest.mark.criterion("PRE-04")
def test_key_decrypts_existing_ciphertext_in_every_legacy_phi_column(gate_db, gate_codec, gate_config):
    encryption.decrypts(gate_db, gate_codec, gate_config.legacy_phi_columns(), sample=200, schema=gate_config.schema,
                        check="the key decrypts a sample of every legacy PHI column").expect()


@pytest.mark.criterion("PRE-05")
def test_every_legacy_phi_value_is_well_formed_v1_ciphertext(gate_db, gate_config):
    encryption.well_formed(gate_db, gate_config.legacy_phi_columns(), schema=gate_config.schema).expect()


@pytest.mark.criterion("PRE-05")
def test_no_legacy_phi_value_is_double_encrypted(gate_db, gate_codec, gate_config, gate_run_dir):
    """Every legacy value decrypted, outside the window; what was proven is recorded (digests only) in the run
    folder, so the post-check decrypts only ciphertext that changed since."""
    encryption.decrypts(gate_db, gate_codec, gate_config.legacy_phi_columns(), schema=gate_config.schema,
                        check="no legacy PHI value decrypts to ciphertext again", record_to=gate_run_dir).expect()


@pytest.mark.criterion("PRE-06")
def test_legacy_schema_is_what_the_migration_expects(gate_catalog, gate_config):
    schema.matches(gate_catalog, gate_config.legacy_schema, gate_config.legacy_objects, schema=gate_config.schema,
                   check="legacy schema (no drift)").expect()


@pytest.mark.criterion("PRE-06")
def test_no_object_of_the_legacy_schema_but_what_the_description_declares(gate_catalog, gate_config):
    if gate_config.legacy_catalog is None:
        pytest.skip("[legacy_catalog] is not in the description: the schema's other objects were not compared "
                    "(scripts/describe-schema legacy --catalog writes it)")
    schema.only_declared_objects(gate_catalog, gate_config.legacy_catalog, schema=gate_config.schema,
                                 label="[legacy_catalog]").expect()


@pytest.mark.criterion("PRE-06")
def test_legacy_foreign_keys_are_what_the_migration_expects(gate_catalog, gate_config):
    schema.foreign_keys(gate_catalog, gate_config.legacy_foreign_keys, schema=gate_config.schema).expect()


@pytest.mark.criterion("PRE-06")
def test_every_column_is_accounted_for_in_the_description(gate_config):
    accounting.columns_accounted_for(gate_config).expect()


@pytest.mark.criterion("PRE-07")
def test_no_orphans_in_the_legacy_data(gate_db, gate_catalog, gate_config):
    schema.orphans(gate_db, gate_config.legacy_foreign_keys, schema=gate_config.schema, catalog=gate_catalog).expect()


@pytest.mark.criterion("PRE-07")
def test_no_duplicates_on_natural_keys(gate_db, gate_config):
    data.duplicates(gate_db, gate_config.unique_keys, schema=gate_config.schema).expect()


@pytest.mark.criterion("PRE-07")
def test_money_values_fit_the_new_types(gate_db, gate_config):
    data.money_fits(gate_db, gate_config.money, schema=gate_config.schema).expect()


@pytest.mark.criterion("PRE-08")
def test_migration_and_rollback_rehearsed_on_a_scratch_copy(gate_target, gate_config, gate_session, gate_run_dir):
    """Each statement's time on the copy is kept in the run folder for PRE-13."""
    rehearse_on_copy(gate_target.dsn, gate_config, gate_session.key, record_to=gate_run_dir,
                     sha256=gate_session.migration_sha256).expect()


@pytest.mark.criterion("PRE-13")
def test_the_migrations_locks_and_rewrites_are_allowed_at_the_live_table_sizes(gate_db, gate_config, gate_run_dir,
                                                                                gate_session):
    """After PRE-08 (pytest runs a file's tests in order), whose rehearsal recorded each statement's time."""
    lint_gate(gate_db, gate_config, gate_run_dir, sha256=gate_session.migration_sha256).expect()


@pytest.mark.criterion("PRE-09")
def test_backup_folder_is_writable_with_room_for_the_dump(gate_db, gate_session):
    environment.backup_folder_ready(gate_session.env.reports_dir, gate_db).expect()


@pytest.mark.criterion("PRE-10")
def test_no_long_running_transactions(gate_db):
    environment.no_long_transactions(gate_db).expect()
