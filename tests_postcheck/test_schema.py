"""Post-migration: the new schema is what the app needs."""

import pytest

from migration_gate.checks import schema

pytestmark = pytest.mark.postmigration

ORG_SCOPED = ("patients", "clinical_sessions", "patient_treatment_plans")


@pytest.mark.criterion("POST-01")
def test_every_new_table_has_its_columns_and_types_and_no_leftovers(db, gate_config):
    schema.matches(db, gate_config.new_schema, check="new schema").expect()


@pytest.mark.criterion("POST-02")
@pytest.mark.parametrize("table", ORG_SCOPED)
def test_organization_id_is_set_on_every_row(db, gate_config, table):
    schema.not_null(db, table, "organization_id").expect()
    schema.matches(db, gate_config.new_schema, only=[table], check=f"{table} column types").expect()


@pytest.mark.criterion("POST-03")
def test_every_foreign_key_points_at_the_right_table_with_the_right_on_delete(db, gate_config):
    schema.foreign_keys(db, gate_config.new_foreign_keys).expect()


@pytest.mark.criterion("POST-03")
def test_no_orphans_for_any_foreign_key(db, gate_config):
    schema.orphans(db, gate_config.new_foreign_keys).expect()


@pytest.mark.criterion("POST-04")
def test_an_index_covers_every_foreign_key_column(db, gate_config):
    schema.index_coverage(db, gate_config.new_foreign_keys).expect()


@pytest.mark.criterion("POST-05")
def test_sequences_are_owned_and_ahead_of_max_id(db, gate_config):
    schema.sequences(db, list(gate_config.new_schema)).expect()
