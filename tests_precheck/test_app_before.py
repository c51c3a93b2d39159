"""Pre-migration: the app is up and still on the legacy schema."""

import pytest

from migration_gate.app import answers
from migration_gate.checks import api as app

pytestmark = [pytest.mark.premigration, pytest.mark.app]


@pytest.mark.criterion("PRE-11")
def test_api_is_healthy_and_on_the_legacy_schema(gate_api):
    app.health(gate_api, expect_hipaa=False).expect()


@pytest.mark.criterion("PRE-11")
def test_existing_users_can_log_in_before_the_cut_over(gate_api, gate_api_credentials, gate_db, gate_config):
    app.login_works(gate_api, *gate_api_credentials, conn=gate_db, users=gate_config.api.users).expect()


@pytest.mark.criterion("PRE-14")
def test_the_apps_answers_are_recorded_on_the_legacy_schema(gate_api, gate_api_credentials, gate_config, gate_session,
                                                             gate_run_dir):
    if not gate_config.answers.requests:
        pytest.skip("[answers] lists no requests: the app's answers are not recorded")
    answers.record_before(gate_api, gate_config.answers, gate_session.key, gate_run_dir, "premigration",
                          answers.environment(*gate_api_credentials)).expect()
