"""The deploy's diagnosis, piece by piece, without a cluster: what the app reports is filtered to flags and counts,
the version a deploy hook printed is read, the decision between a redeploy and the rollback says why, and a
[deploy] section that is wrong is one line. (A whole cut-over whose app never turns healthy: tests/test_gate.py.)"""

from __future__ import annotations

import socket

import pytest

from migration_gate.app.client import http_client
from migration_gate.config import ConfigError
from migration_gate.config.load import _section
from migration_gate.config.model import DeployConfig
from migration_gate.run import diagnosis
from migration_gate.run.diagnosis import Diagnosis, DiagnosisStep


def test_what_the_app_reports_is_kept_to_flags_states_counts_and_names() -> None:
    health = {"status": "degraded", "environment": "production", "timestamp": "2026-12-08T02:00:00Z",
              "database": {"connected": True, "schemaValid": False, "errors": ["relation patients: jane@x.org"]},
              "encryption": {"configured": True, "valid": True},
              "config": {"databaseUrl": "postgres://app:hunter22@db/x", "sessionSecret": "configured",
                         "phiEncryptionKey": "missing", "useHipaaSchema": False}}
    facts = diagnosis.reported_environment(health, {"commit": "3a47a85", "env": "production", "uptimeSec": 12,
                                                    "buildTime": "secret build"})
    assert facts == {"status": "degraded", "environment": "production", "database.connected": True,
                     "database.schemaValid": False, "database.errors": 1, "encryption.configured": True,
                     "encryption.valid": True, "config.sessionSecret": "configured",
                     "config.phiEncryptionKey": "missing", "config.useHipaaSchema": False,
                     "api/status.env": "production", "api/status.commit": "3a47a85", "api/status.uptimeSec": 12}


def test_an_app_that_does_not_answer_is_recorded_as_such() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with http_client(f"http://127.0.0.1:{port}", timeout=2) as client:
        step = diagnosis.environment(client)
    assert step.ok is False and step.detail.startswith("the app does not answer: /health no answer (ConnectError)")


@pytest.mark.parametrize(("printed", "version"), [
    ('{"id": "dep-1", "status": "live", "commit": {"id": "3a47a85", "message": "x"}}\n', "3a47a85"),
    ("deploying...\n3a47a85\n\n", "3a47a85"),
    ('{"version": "1.4.2"}', "1.4.2"),
    ("deploy done, see https://dashboard", None),
    (None, None),
])
def test_the_version_a_deploy_hook_printed_is_read(printed: str | None, version: str | None) -> None:
    assert diagnosis.hook_version(printed) == version


def test_the_version_step_names_the_previous_release_still_answering() -> None:
    step = diagnosis.version("v1", None, "not known", "v1")
    assert step.ok is False and "the version expected is not known" in step.detail
    assert "it is the previous release (v1): the deploy did not replace the running app" in step.detail
    assert diagnosis.version("v2", "v2", "[deploy] expected_version", "v1").ok is True
    assert diagnosis.version(None, "v2", "[deploy] expected_version", "v1").ok is False


def _found(attempt: int, database_ok: bool | None = True) -> Diagnosis:
    return Diagnosis(attempt, "t", "not healthy", [DiagnosisStep("database", database_ok, "")])


def test_the_decision_redeploys_once_where_retries_allow_and_says_why() -> None:
    first, again, no_retry, no_db = _found(1), _found(2), _found(1), _found(1, database_ok=False)
    diagnosis.decide(first, retries=1)
    diagnosis.decide(again, retries=1)
    diagnosis.decide(no_retry, retries=0)
    diagnosis.decide(no_db, retries=1)
    assert (first.decision, first.why) == ("redeploy", "redeploying once ([deploy] retries = 1, 0 used): the "
                                           "database answers the app's role, so the app's start may not have "
                                           "been its last")
    assert (again.decision, again.why) == ("rollback", "rolling back: still not healthy after 1 redeploy(s) "
                                           "([deploy] retries = 1)")
    assert (no_retry.decision, no_retry.why) == ("rollback", "rolling back: [deploy] retries = 0 (no redeploy "
                                                 "allowed)")
    assert no_db.decision == "rollback" and "a redeploy of the app cannot change" in no_db.why


@pytest.mark.parametrize(("spec", "line"), [
    ({"smoke_queries": ["DELETE FROM patients"]}, "m.toml [deploy]: smoke_queries item 1 is not one SELECT"),
    ({"smoke_queries": ["SELECT 1; DROP TABLE patients"]}, "m.toml [deploy]: smoke_queries item 1 is not one"),
    ({"retries": 2}, "m.toml [deploy]: retries must be 0 or 1"),
    ({"expected_version": "a b"}, "m.toml [deploy]: expected_version must be a version or commit"),
])
def test_a_wrong_deploy_section_is_one_line(spec: dict, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _section(spec, DeployConfig, "m.toml [deploy]")
    assert str(caught.value).startswith(line) and "\n" not in str(caught.value), str(caught.value)
    assert _section({"smoke_queries": ["select 1;", " WITH x AS (SELECT 1) SELECT * FROM x"]}, DeployConfig,
                    "m.toml [deploy]").smoke_queries
