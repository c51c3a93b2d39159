"""The installed pytest plugin's entry point (pyproject.toml `pytest11`): the phase suites' plugin
(migration_gate.suite.plugin) when this interpreter has the project's dependencies, else one line saying what to run
(migration_gate.core.deps), as the root conftest.py says it for a pytest the project is not installed in. Installed,
the plugin's options are known wherever pytest starts (`--gate-run-dir PATH` from any folder)."""

from migration_gate.core.deps import setup_hint

_SETUP_HINT = setup_hint()
pytest_plugins = [] if _SETUP_HINT else ["migration_gate.suite.plugin"]

if _SETUP_HINT:
    def pytest_addoption(parser, pluginmanager) -> None:
        import pytest

        raise pytest.UsageError(_SETUP_HINT)
