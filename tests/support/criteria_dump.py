"""A pytest plugin for our tests: dumps each collected phase test's phase and criterion markers as JSON."""

import json
import os

from migration_gate.run.target import PHASES


def pytest_collection_finish(session):
    items = {item.nodeid: ([p for p in PHASES if item.get_closest_marker(p)],
                           [m.args[0] for m in item.iter_markers("criterion")]) for item in session.items}
    with open(os.environ["CRITERIA_DUMP"], "w") as handle:
        json.dump(items, handle)
