"""Post-migration: PHI at rest is well-formed, readable with the key, unique per value, never in the clear."""

import pytest

from migration_gate.checks import encryption
from migration_gate.scan import proven

pytestmark = pytest.mark.postmigration


@pytest.mark.criterion("POST-13")
def test_every_encrypted_value_is_well_formed(gate_db, gate_codec, gate_config, gate_run_dir):
    """Buckets byte-identical to ciphertext the pre-checks decrypted (by digest) are v1 by that proof."""
    encryption.well_formed(gate_db, gate_config.new_encrypted_columns(), schema=gate_config.schema,
                           proof=proven.load(gate_run_dir, gate_config, gate_codec)).expect()


@pytest.mark.criterion("POST-13")
def test_every_encrypted_value_decrypts_and_is_not_ciphertext_again(gate_db, gate_codec, gate_config, gate_run_dir):
    """Ciphertext byte-identical to what the pre-checks decrypted (per key bucket, by digest) is not decrypted
    again; every other value is."""
    encryption.decrypts(gate_db, gate_codec, gate_config.new_encrypted_columns(), schema=gate_config.schema,
                        proof=proven.load(gate_run_dir, gate_config, gate_codec)).expect()


@pytest.mark.criterion("POST-14")
def test_no_two_encrypted_values_share_an_iv(gate_db, gate_config):
    encryption.unique_ivs(gate_db, gate_config.new_encrypted_columns(), schema=gate_config.schema).expect()


@pytest.mark.criterion("POST-15")
def test_no_plaintext_looking_phi_in_encrypted_columns(gate_db, gate_codec, gate_config, gate_run_dir):
    encryption.no_plaintext(gate_db, gate_config.new_encrypted_columns(), schema=gate_config.schema,
                            proof=proven.load(gate_run_dir, gate_config, gate_codec)).expect()


@pytest.mark.criterion("POST-16")
def test_search_hashes_equal_the_hash_of_the_decrypted_value(gate_db, gate_codec, gate_config):
    encryption.search_hashes(gate_db, gate_codec, gate_config.search_hashes, schema=gate_config.schema).expect()
