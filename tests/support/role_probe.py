"""A pytest plugin for a phase-suite run (``-p tests.support.role_probe``, ROLE_PROBE_FILE set): for every test that
connects to the target, one JSON line with the role it connected as, whether that role is a superuser, and the
roles the app's sessions on that database run as. tests/test_roles.py reads it."""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture(autouse=True)
def _role_probe(request: pytest.FixtureRequest) -> None:
    if "gate_db" not in request.fixturenames or not os.environ.get("ROLE_PROBE_FILE"):
        return
    db = request.getfixturevalue("gate_db")
    role, superuser = db.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    apps = sorted(name for (name,) in db.execute(
        "SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = 'sandbox-api' "
        "AND datname = current_database()"))
    with open(os.environ["ROLE_PROBE_FILE"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"test": request.node.nodeid, "role": role, "superuser": superuser,
                                 "app_roles": apps}) + "\n")
