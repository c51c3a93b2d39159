"""Rollback: the legacy schema and data are back exactly as they were at backup time."""

import pytest

from migration_gate.checks import api as app
from migration_gate.checks import rollback, schema

pytestmark = pytest.mark.rollback


@pytest.mark.criterion("RB-01")
def test_legacy_schema_is_back(db, gate_config):
    schema.matches(db, gate_config.legacy_schema, check="legacy schema after rollback").expect()
    schema.foreign_keys(db, gate_config.legacy_foreign_keys).expect()


@pytest.mark.criterion("RB-01")
def test_new_tables_are_gone(db):
    schema.absent_tables(db, ["organizations", "organization_memberships", "patients", "clinical_sessions",
                              "patient_treatment_plans"], check="new tables removed after rollback").expect()


@pytest.mark.criterion("RB-02")
def test_every_legacy_table_equals_its_state_at_backup_time(db, target, gate_config):
    rollback.data_as_at_backup(db, target.backup_file, list(gate_config.legacy_schema)).expect()


@pytest.mark.criterion("RB-03")
def test_app_is_healthy_on_the_legacy_schema(api):
    app.health(api, expect_hipaa=False).expect()
