"""Integrity: the new schema against the legacy data as it was at backup time, row by row. Every test runs for
each mapping of the migration description (`mapping`), so a table added there is counted, compared and
decrypted with no code change. `legacy` is the digests recorded in the backup's snapshot, with the backup
restored only when some key range differs."""

import pytest

from migration_gate.checks import integrity, organizations

pytestmark = pytest.mark.integrity


@pytest.mark.criterion("INT-01")
def test_exact_counts_including_soft_deleted_and_per_therapist(legacy, db, gate_config, mapping):
    integrity.counts(legacy, db, mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-02")
def test_every_legacy_row_maps_to_exactly_one_new_row(legacy, db, gate_config, mapping):
    integrity.rows_correspond(legacy, db, mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-03")
def test_every_non_phi_column_equal_after_the_mapping(legacy, db, gate_config, mapping):
    integrity.columns_equal(legacy, db, mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-03")
def test_new_columns_hold_what_their_rules_say(db, gate_config, ruled_mapping):
    integrity.new_column_rules(db, ruled_mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-04")
def test_every_phi_value_equal_after_decryption(legacy, db, codec, gate_config, phi_mapping):
    integrity.phi_equal(legacy, db, phi_mapping, codec, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-05")
def test_relationships_preserved(legacy, db, gate_config, linked_mapping):
    integrity.columns_equal(legacy, db, linked_mapping, only=gate_config.relationships(linked_mapping),
                            check=f"{linked_mapping.new}: relationships preserved", schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-05")
def test_each_row_belongs_to_its_owners_organization(db, gate_config, tenancy):
    organizations.rows_in_their_organization(db, tenancy, schema=gate_config.schema).expect()
