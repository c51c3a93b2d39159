"""Post-migration: the app's own role can do exactly what it needs on every new table."""

import pytest

from migration_gate.checks import grants

pytestmark = pytest.mark.postmigration


@pytest.mark.criterion("POST-18")
def test_the_app_role_has_exactly_its_configured_privileges(gate_catalog, gate_config, granted_table):
    append_only = frozenset(m.new for m in gate_config.tables if m.append_only)
    grants.app_privileges(gate_catalog, gate_config.app_role, [granted_table], schema=gate_config.schema,
                          append_only=append_only).expect()


@pytest.mark.criterion("POST-18")
def test_the_app_role_has_its_privileges_on_the_tables_the_deploy_created(gate_catalog, gate_config):
    if gate_config.app_role is None or not gate_config.app_tables:
        pytest.skip("the description has no [app_role] or declares no [deploy] app_tables")
    grants.deploy_privileges(gate_catalog, gate_config.app_role, list(gate_config.app_tables),
                             schema=gate_config.schema).expect()
