"""Integrity: the new schema against the legacy data as it was at backup time, row by row. Every test runs for
each mapping of the migration description (`mapping`), so a table added there is counted, compared and
decrypted with no code change. `legacy` is the digests recorded in the backup's snapshot, with the backup
restored only when some key range differs."""

import pytest

from migration_gate.checks import integrity, organizations

pytestmark = pytest.mark.integrity


@pytest.mark.criterion("INT-01")
def test_exact_counts_including_soft_deleted_and_per_therapist(gate_legacy, gate_db, gate_config, mapping):
    integrity.counts(gate_legacy, gate_db, mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-02")
def test_every_legacy_row_maps_to_exactly_one_new_row(gate_legacy, gate_db, gate_config, mapping):
    integrity.rows_correspond(gate_legacy, gate_db, mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-03")
def test_every_non_phi_column_equal_after_the_mapping(gate_legacy, gate_db, gate_config, mapping):
    integrity.columns_equal(gate_legacy, gate_db, mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-03")
def test_new_columns_hold_what_their_rules_say(gate_db, gate_config, ruled_mapping):
    integrity.new_column_rules(gate_db, ruled_mapping, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-04")
def test_every_phi_value_equal_after_decryption(gate_legacy, gate_db, gate_codec, gate_config, phi_mapping):
    integrity.phi_equal(gate_legacy, gate_db, phi_mapping, gate_codec, schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-05")
def test_relationships_preserved(gate_legacy, gate_db, gate_config, linked_mapping):
    integrity.columns_equal(gate_legacy, gate_db, linked_mapping, only=gate_config.relationships(linked_mapping),
                            check=f"{linked_mapping.new}: relationships preserved", schema=gate_config.schema).expect()


@pytest.mark.criterion("INT-05")
def test_each_row_belongs_to_its_owners_organization(gate_db, gate_config, tenancy):
    organizations.rows_in_their_organization(gate_db, tenancy, schema=gate_config.schema).expect()
