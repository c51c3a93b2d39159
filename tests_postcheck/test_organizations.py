"""Post-migration: every therapist owns one solo practice, and every row sits in its therapist's practice."""

import pytest

from migration_gate.checks import organizations

pytestmark = pytest.mark.postmigration


@pytest.mark.criterion("POST-17")
def test_one_active_primary_business_owner_per_organization(db):
    organizations.one_primary_owner(db).expect()


@pytest.mark.criterion("POST-17")
def test_no_duplicate_memberships(db):
    organizations.no_duplicate_memberships(db).expect()


@pytest.mark.criterion("POST-17")
def test_therapists_own_their_practice_with_full_rights(db):
    organizations.owners_have_full_rights(db).expect()


@pytest.mark.criterion("POST-17")
def test_one_solo_practice_per_therapist_named_after_them(db):
    organizations.solo_practice_per_therapist(db).expect()
