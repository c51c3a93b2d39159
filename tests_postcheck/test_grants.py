"""Post-migration: the app's own role can do exactly what it needs on every new table."""

import pytest

from migration_gate.checks import grants

pytestmark = pytest.mark.postmigration


@pytest.mark.criterion("POST-18")
def test_the_app_role_has_exactly_its_configured_privileges(catalog, gate_config, granted_table):
    append_only = frozenset(m.new for m in gate_config.tables if m.append_only)
    grants.app_privileges(catalog, gate_config.app_role, [granted_table], schema=gate_config.schema,
                          append_only=append_only).expect()
