"""Post-migration: tenancy as the description states it (one primary owner per organization, owners with
every right, the organizations derived per user)."""

import pytest

from migration_gate.checks import organizations

pytestmark = pytest.mark.postmigration


@pytest.mark.criterion("POST-17")
def test_one_active_primary_owner_per_organization(gate_db, gate_config, tenancy):
    organizations.one_primary_owner(gate_db, tenancy, schema=gate_config.schema).expect()


@pytest.mark.criterion("POST-17")
def test_no_duplicate_memberships(gate_db, gate_config, tenancy):
    organizations.no_duplicate_memberships(gate_db, tenancy, schema=gate_config.schema).expect()


@pytest.mark.criterion("POST-17")
def test_owners_own_their_organization_with_full_rights(gate_db, gate_config, tenancy):
    organizations.owners_have_full_rights(gate_db, tenancy, schema=gate_config.schema).expect()


@pytest.mark.criterion("POST-17")
def test_one_organization_per_user_named_after_its_owner(gate_db, gate_config, tenancy):
    organizations.derived_per_user(gate_db, tenancy, schema=gate_config.schema).expect()
