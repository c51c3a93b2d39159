"""The phase suites' fixtures and reports come from the migration-gate plugin."""

pytest_plugins = ["migration_gate.plugin"]
