"""Integrity: the new schema against the legacy data as it was at backup time, row by row."""

import pytest

from migration_gate.checks import integrity, organizations

pytestmark = pytest.mark.integrity

TABLES = ("users_auth", "therapist_profiles", "therapist_phi", "patients", "clinical_sessions",
          "patient_treatment_plans", "audit_logs_hipaa")
RELATIONSHIPS = {
    "clinical_sessions": ["patient_id", "therapist_id"],
    "patient_treatment_plans": ["patient_id", "therapist_id"],
    "patients": ["primary_therapist_id"],
}


@pytest.mark.criterion("INT-01")
@pytest.mark.parametrize("table", TABLES)
def test_exact_counts_including_soft_deleted_and_per_therapist(baseline_db, db, gate_config, table):
    integrity.counts(baseline_db, db, gate_config.table(table)).expect()


@pytest.mark.criterion("INT-02")
@pytest.mark.parametrize("table", TABLES)
def test_every_legacy_row_maps_to_exactly_one_new_row(baseline_db, db, gate_config, table):
    integrity.rows_correspond(baseline_db, db, gate_config.table(table)).expect()


@pytest.mark.criterion("INT-03")
@pytest.mark.parametrize("table", TABLES)
def test_every_non_phi_column_equal_after_the_mapping(baseline_db, db, gate_config, table):
    integrity.columns_equal(baseline_db, db, gate_config.table(table)).expect()


@pytest.mark.criterion("INT-04")
@pytest.mark.parametrize("table", [t for t in TABLES if t in ("therapist_phi", "patients", "clinical_sessions",
                                                               "patient_treatment_plans")])
def test_every_phi_value_equal_after_decryption(baseline_db, db, codec, gate_config, table):
    integrity.phi_equal(baseline_db, db, gate_config.table(table), codec).expect()


@pytest.mark.criterion("INT-05")
@pytest.mark.parametrize("table", list(RELATIONSHIPS))
def test_relationships_preserved(baseline_db, db, gate_config, table):
    integrity.columns_equal(baseline_db, db, gate_config.table(table), only=RELATIONSHIPS[table],
                            check=f"{table}: relationships preserved").expect()


@pytest.mark.criterion("INT-05")
def test_each_row_belongs_to_its_therapists_practice(db):
    organizations.rows_in_their_therapists_practice(db).expect()
