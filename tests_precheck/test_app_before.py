"""Pre-migration: the app is up and still on the legacy schema."""

import pytest

from migration_gate.checks import api as app

pytestmark = [pytest.mark.premigration, pytest.mark.app]


@pytest.mark.criterion("PRE-11")
def test_api_is_healthy_and_on_the_legacy_schema(api):
    app.health(api, expect_hipaa=False).expect()


@pytest.mark.criterion("PRE-11")
def test_existing_users_can_log_in_before_the_cut_over(api, api_credentials, db, gate_config):
    app.login_works(api, *api_credentials, conn=db, users=gate_config.api.users).expect()
