"""Rollback: the legacy schema and data are back exactly as they were at backup time (with the rows written since
the migration, where a SQL rollback carried them back)."""

import pytest

from migration_gate.checks import api as app
from migration_gate.checks import carried as carried_rows
from migration_gate.checks import rollback, schema
from migration_gate.db import writes

pytestmark = pytest.mark.rollback


@pytest.mark.criterion("RB-01")
def test_legacy_schema_is_back(gate_catalog, gate_config):
    schema.matches(gate_catalog, gate_config.legacy_schema, gate_config.legacy_objects, schema=gate_config.schema,
                   check="legacy schema after rollback").expect()
    schema.foreign_keys(gate_catalog, gate_config.legacy_foreign_keys, schema=gate_config.schema).expect()


@pytest.mark.criterion("RB-01")
def test_no_object_of_the_schema_but_what_the_legacy_description_declares(gate_catalog, gate_config):
    if gate_config.legacy_catalog is None:
        pytest.skip("[legacy_catalog] is not in the description: the schema's other objects were not compared "
                    "(scripts/describe-schema legacy --catalog writes it)")
    schema.only_declared_objects(gate_catalog, gate_config.legacy_catalog, gate_config.app_tables,
                                 schema=gate_config.schema, label="[legacy_catalog]").expect()


@pytest.mark.criterion("RB-01")
def test_legacy_schema_equals_its_full_fingerprint_at_backup_time(gate_catalog, gate_target, gate_config):
    rollback.schema_as_at_backup(gate_catalog, gate_target.backup_file, list(gate_config.legacy_schema),
                                 schema=gate_config.schema).expect()


@pytest.mark.criterion("RB-01")
def test_new_tables_are_gone(gate_catalog, gate_config):
    schema.absent_tables(gate_catalog, gate_config.removed_tables(), schema=gate_config.schema,
                         check="new tables removed after rollback").expect()


@pytest.mark.criterion("RB-02")
def test_every_legacy_table_equals_its_state_at_backup_time(gate_db, gate_target, gate_config, request):
    carried = writes.Carried.load(gate_target.carried_rows) if gate_target.carried_rows else None
    if carried is None or not carried.changed:  # restored from the backup, or nothing written since the migration
        # a table that differs is drilled into against the backup restored (only then): rows by key, columns
        rollback.data_as_at_backup(gate_db, gate_target.backup_file, list(gate_config.legacy_schema),
                                   schema=gate_config.schema,
                                   baseline=lambda: request.getfixturevalue("gate_baseline_db")).expect()
        return
    # a SQL rollback carried the rows written since the migration back: those, and only those, may differ
    baseline = request.getfixturevalue("gate_baseline_db")
    rollback.data_as_at_backup_but_carried(gate_db, baseline, gate_target.backup_file, carried,
                                           list(gate_config.legacy_schema), schema=gate_config.schema).expect()


@pytest.mark.app
@pytest.mark.criterion("RB-03")
def test_app_is_healthy_on_the_legacy_schema(gate_api):
    app.health(gate_api, expect_hipaa=False).expect()


@pytest.mark.criterion("RB-04")
def test_rows_carried_back_pass_the_phi_checks(gate_db, gate_codec, gate_target, gate_config):
    carried = writes.Carried.load(gate_target.carried_rows) if gate_target.carried_rows else None
    carried_rows.check(gate_db, gate_codec, carried, gate_config.legacy_phi_columns()).result.expect()
