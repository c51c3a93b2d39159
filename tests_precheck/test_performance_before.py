"""Pre-migration: the app's performance on the legacy schema, recorded as the run's baseline."""

import pytest

from migration_gate.app import performance

pytestmark = [pytest.mark.premigration, pytest.mark.app]


@pytest.mark.criterion("PRE-12")
def test_performance_baseline_is_measured_on_the_legacy_schema_and_recorded(gate_api, gate_api_credentials, gate_config,
                                                                             gate_session, gate_run_dir):
    plan = performance.plan(gate_config, str(gate_api.base_url), *gate_api_credentials, gate_session.env.api_headers)
    performance.record_baseline(plan, gate_run_dir).expect()
