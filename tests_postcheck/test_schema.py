"""Post-migration: the new schema is what the app needs."""

import pytest

from migration_gate.checks import schema

pytestmark = pytest.mark.postmigration


@pytest.mark.criterion("POST-01")
def test_every_new_table_has_its_columns_and_types_and_no_leftovers(gate_catalog, gate_config):
    schema.matches(gate_catalog, gate_config.new_schema, gate_config.new_objects, schema=gate_config.schema,
                   check="new schema").expect()


@pytest.mark.criterion("POST-01")
def test_no_table_but_the_new_schema_and_what_the_deploy_declares(gate_catalog, gate_config):
    schema.only_described_tables(gate_catalog, list(gate_config.new_schema), list(gate_config.app_tables),
                                 schema=gate_config.schema).expect()


@pytest.mark.criterion("POST-01")
def test_no_object_of_the_schema_but_what_the_description_declares(gate_catalog, gate_config):
    if gate_config.new_catalog is None:
        pytest.skip("[new_catalog] is not in the description: the schema's other objects were not compared "
                    "(scripts/describe-schema new --catalog writes it)")
    schema.only_declared_objects(gate_catalog, gate_config.new_catalog, gate_config.app_tables,
                                 schema=gate_config.schema,
                                 label="[new_catalog]").expect()


@pytest.mark.criterion("POST-02")
def test_the_organization_column_is_set_on_every_row(gate_db, gate_catalog, gate_config, tenant_row):
    schema.not_null(gate_db, tenant_row.table, tenant_row.column, schema=gate_config.schema,
                    catalog=gate_catalog).expect()
    schema.matches(gate_catalog, gate_config.new_schema, only=[tenant_row.table], schema=gate_config.schema,
                   check=f"{tenant_row.table} column types").expect()


@pytest.mark.criterion("POST-03")
def test_every_foreign_key_points_at_the_right_table_with_the_right_on_delete(gate_catalog, gate_config):
    schema.foreign_keys(gate_catalog, gate_config.new_foreign_keys, schema=gate_config.schema).expect()


@pytest.mark.criterion("POST-03")
def test_no_orphans_for_any_foreign_key(gate_db, gate_catalog, gate_config):
    schema.orphans(gate_db, gate_config.new_foreign_keys, schema=gate_config.schema, catalog=gate_catalog).expect()


@pytest.mark.criterion("POST-04")
def test_an_index_covers_every_foreign_key_column(gate_catalog, gate_config):
    schema.index_coverage(gate_catalog, gate_config.new_foreign_keys, schema=gate_config.schema).expect()


@pytest.mark.criterion("POST-05")
def test_sequences_are_owned_and_ahead_of_max_id(gate_db, gate_catalog, gate_config):
    schema.sequences(gate_db, list(gate_config.new_schema), schema=gate_config.schema, catalog=gate_catalog).expect()
