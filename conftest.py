"""The phase suites' fixtures and reports come from the migration-gate plugin. A pytest that lacks the project's
dependencies (a system pytest, not the .venv's) stops with one line saying what to run, not a traceback: the
line is raised while this file's options are registered, before pytest would reject the plugin's options."""

from migration_gate.core.deps import setup_hint

_SETUP_HINT = setup_hint()
pytest_plugins = [] if _SETUP_HINT else ["migration_gate.suite.plugin"]

if _SETUP_HINT:
    def pytest_addoption(parser, pluginmanager) -> None:
        import pytest

        raise pytest.UsageError(_SETUP_HINT)
