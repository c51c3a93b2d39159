"""Integrity: the new schema against the legacy data as it was at backup time, row by row. Every test runs for
each mapping of the migration description (`mapping`), so a table added there is counted, compared and
decrypted with no code change."""

import pytest

from migration_gate.checks import integrity, organizations

pytestmark = pytest.mark.integrity


@pytest.mark.criterion("INT-01")
def test_exact_counts_including_soft_deleted_and_per_therapist(baseline_db, db, gate_config, mapping):
    integrity.counts(baseline_db, db, mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-02")
def test_every_legacy_row_maps_to_exactly_one_new_row(baseline_db, db, gate_config, mapping):
    integrity.rows_correspond(baseline_db, db, mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-03")
def test_every_non_phi_column_equal_after_the_mapping(baseline_db, db, gate_config, mapping):
    integrity.columns_equal(baseline_db, db, mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-03")
def test_new_columns_hold_what_their_rules_say(db, gate_config, ruled_mapping):
    integrity.new_column_rules(db, ruled_mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-04")
def test_every_phi_value_equal_after_decryption(baseline_db, db, codec, gate_config, phi_mapping):
    integrity.phi_equal(baseline_db, db, phi_mapping, codec, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-05")
def test_relationships_preserved(baseline_db, db, gate_config, linked_mapping):
    integrity.columns_equal(baseline_db, db, linked_mapping, only=gate_config.relationships(linked_mapping),
                            check=f"{linked_mapping.new}: relationships preserved", schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-05")
def test_each_row_belongs_to_its_owners_organization(db, gate_config, tenancy):
    organizations.rows_in_their_organization(db, tenancy, schema=gate_config.schema).expect()
