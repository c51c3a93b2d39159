"""A pytest plugin for our tests (loaded in a gate's suite child through PYTEST_PLUGINS): runs only the phase
tests named in GATE_DECOY_KEEP and, after pytest's own summary, prints lines that look like failures and a
summary that are all false. A gate that reads the suite's text instead of its results is fooled by them."""

import os

import pytest

DECOY = ("FAILED tests_precheck/test_premigration.py::test_decoy_that_never_ran - AssertionError\n"
         "  999 rows missing in decoy_table (first ids: 1)\n"
         "==================== 99 passed in 0.01s ====================\n")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep = set(os.environ.get("GATE_DECOY_KEEP", "").split(","))
    dropped = [item for item in items if item.originalname not in keep]
    items[:] = [item for item in items if item.originalname in keep]
    config.hook.pytest_deselected(items=dropped)


def pytest_unconfigure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write(DECOY)
