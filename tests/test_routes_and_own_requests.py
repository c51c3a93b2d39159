"""Issue 19 items 2 and 3 against the real reference API: the log check leaves out the lines the checks' own
forged-token requests caused (and no more); the debug routes are closed (POST-20), the routes returning the user
carry no password hash (POST-09), every configured route answers 2xx (POST-21). Green on the intact sandbox, red
with the route named on a sandbox broken through SANDBOX_API_FAULTS; never a value, token or hash in a message."""

from __future__ import annotations

import json
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from migration_gate.app import logsource, ownrequests
from migration_gate.app.logsource import LogSource
from migration_gate.checks import api as checks
from migration_gate.config import ConfigError, LogsConfig, load_config, load_logs
from sandbox.api_process import ApiProcess
from sandbox.roles import as_role
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import ROOT
from tests.support import api_sandbox
from tests.support.api_sandbox import CONFIG, PASSWORD, USER, Sandbox, green, red

hipaa = api_sandbox.hipaa  # the fixture: the migrated sandbox API
legacy = api_sandbox.legacy
sandbox = api_sandbox.sandbox  # both schemas
phi = api_sandbox.phi
PLAN_ROUTE = "/api/patient-treatment-plans/patient/<int:patient_id>"  # as the sandbox routes it
FAULTS = ",".join(["open-debug:/api/debug-jwt", "open-debug:/api/auth-test", "fail-route:/api/auth-test",
                   "user-hash:/api/user", "user-hash:/api/auth/status", "fail-route:/api/patient-treatment-plans",
                   f"fail-route:{PLAN_ROUTE}"])


@pytest.fixture(scope="module")
def broken(hipaa: Sandbox, tmp_path_factory) -> Iterator[Sandbox]:
    """A second API on the same migrated database, with a debug route open, another failing, the user routes
    returning the bcrypt hash and both treatment-plan routes answering 500."""
    folder = tmp_path_factory.mktemp("routes_broken")
    api = ApiProcess(as_role(hipaa.dsn, CONFIG.app_role.name), SANDBOX_KEY, True, folder / "api.log",
                     folder / "maintenance.flag")
    api.extra_env["SANDBOX_API_FAULTS"] = FAULTS
    box = Sandbox(api.start(), hipaa.dsn, True)
    with box.client() as client:
        box.token = checks.login(client, USER, PASSWORD)
    yield box
    api.stop()


def _routes(box: Sandbox) -> list:
    return [*(e.path for e in box.endpoints), *CONFIG.api.user_routes, *CONFIG.api.routes]


# -------------------------------------------------------------------------------------------- POST-20 debug routes


def test_the_shipped_debug_routes_are_closed_on_the_sandbox(hipaa: Sandbox, phi: list[str]) -> None:
    with hipaa.client() as client:
        result = green(checks.debug_endpoints_closed(client, CONFIG.api.debug_routes), phi)
    assert result.checked == len(CONFIG.api.debug_routes) >= 4 and "/api/debug-jwt" in CONFIG.api.debug_routes


def test_a_debug_route_answering_200_or_500_is_red_naming_it(broken: Sandbox, phi: list[str]) -> None:
    with broken.client() as client:
        result = checks.debug_endpoints_closed(client, CONFIG.api.debug_routes)
    red(result, phi, "GET /api/debug-jwt: answered 200 without a token: the debug route is open",
        "GET /api/auth-test: answered 500 without a token: the debug route exists and runs for anyone")
    assert len(result.problems) == 2, result.problems


def test_no_debug_routes_configured_checks_nothing_and_says_so(hipaa: Sandbox) -> None:
    with hipaa.client() as client:
        result = checks.debug_endpoints_closed(client, ())
    assert result.ok and result.checked == 0 and "nothing checked" in result.notes[0]


# ---------------------------------------------------------------------------------- POST-09 the routes of the user


def test_the_user_routes_carry_no_hash(sandbox: Sandbox, phi: list[str]) -> None:
    with sandbox.client() as client:
        result = green(checks.no_secrets_in_responses(client, sandbox.token, CONFIG.api.user_routes), phi)
        status = client.get("/api/auth/status", headers={"Authorization": f"Bearer {sandbox.token}"}).json()
        anonymous = client.get("/api/auth/status").json()
    assert result.checked == 2 and status["isAuthenticated"] and status["user"]["id"] == 1
    assert anonymous == {"isAuthenticated": False, "userId": None}


def test_a_user_route_returning_the_bcrypt_hash_is_red_naming_it(broken: Sandbox, phi: list[str]) -> None:
    bcrypt_hash = broken.run("SELECT password FROM users_auth WHERE id = 1")[0][0]
    with broken.client() as client:
        result = checks.no_secrets_in_responses(client, broken.token, CONFIG.api.user_routes)
    message = red(result, phi, "GET /api/user: a password field in what it returns of a user (password)",
                  "GET /api/user: 1 values look like a bcrypt hash",
                  "GET /api/auth/status: a password field in what it returns of a user (user.password)",
                  "GET /api/auth/status: 1 values look like a bcrypt hash")
    assert bcrypt_hash not in message


# ----------------------------------------------------------------------------------- POST-21 every route answers


def test_every_configured_route_answers_on_the_sandbox(sandbox: Sandbox, phi: list[str]) -> None:
    with sandbox.client() as client:
        result = green(checks.routes_answer(client, sandbox.token, _routes(sandbox)), phi)
    assert result.checked == len(_routes(sandbox))


def test_a_route_answering_500_is_red_naming_it(broken: Sandbox, phi: list[str]) -> None:
    with broken.client() as client:
        result = checks.routes_answer(client, broken.token, [*_routes(broken), "/api/no-such-route"])
    red(result, phi, "GET /api/patient-treatment-plans: answered 500 (expected 2xx)",
        "GET /api/patient-treatment-plans/patient/{id} (/api/patient-treatment-plans/patient/",
        "GET /api/no-such-route: answered 404 (expected 2xx)")
    assert len(result.problems) == 3, result.problems


def test_a_route_whose_id_cannot_be_found_is_red_not_skipped(hipaa: Sandbox, phi: list[str]) -> None:
    route = CONFIG.api.routes[1]
    assert route.ids_from == "/api/patients"
    with hipaa.client() as client:
        result = checks.routes_answer(client, hipaa.token, [type(route)(route.path, "/api/no-such-list")])
    red(result, phi, "GET /api/patient-treatment-plans/patient/{id}: could not be checked: GET /api/no-such-list "
                     "gave no record id")


# ------------------------------------------------------------------------------ POST-11 the checks' own requests


def _jsonl(path: Path) -> LogSource:
    return logsource.configured(LogsConfig(), {}, path)


def _forge(box: Sandbox, path: str = "/api/patients") -> None:
    """A forged-token request nobody records: an attacker's, as far as the log check knows."""
    token = checks.forged_tokens(box.token)["with a token signed with another secret"]
    with box.client() as client:
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_the_lines_our_own_forged_tokens_cause_are_left_out(hipaa: Sandbox, tmp_path: Path, phi: list[str]) -> None:
    source = _jsonl(hipaa.api.log_file)
    marker = logsource.mark(source)
    paths = [e.path for e in hipaa.endpoints]
    with hipaa.client() as client:
        checks.protected_routes(client, hipaa.token, paths, on_bad_request=ownrequests.recorder(tmp_path)).expect()
    lines = hipaa.api.log_file.read_bytes()[marker.offset:].decode().splitlines()
    failed = [json.loads(line) for line in lines if '"auth_failed"' in line]
    assert len(failed) == 2 * len(paths) and {f["error"] for f in failed} == {"JsonWebTokenError"}
    own = ownrequests.read(tmp_path)
    assert len(own) == 3 * len(paths) and {r.kind for r in own} == {"no token", "forged token"}
    record = (tmp_path / ownrequests.FILE)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600 and hipaa.token[:20] not in record.read_text()
    result = green(checks.logs_clean(source, marker, len(own), own_requests=own), phi)
    made = f"({len(own)} recorded in own-requests.jsonl: {2 * len(paths)} forged token, {len(paths)} no token)"
    assert any(n.startswith(f"{2 * len(paths)} error line(s) left out: they match [logs] own_request_pattern")
               and made in n for n in result.notes), result.notes
    # without the record the same lines count against the app
    red(checks.logs_clean(source, marker, len(own)), phi, f"api.log: {2 * len(paths)} error lines since the deploy",
        "auth_failed/JsonWebTokenError")


def test_more_such_lines_than_we_caused_still_count(hipaa: Sandbox, tmp_path: Path, phi: list[str]) -> None:
    """The sandbox's lines carry their time: one outside every recorded request's window counts."""
    source = _jsonl(hipaa.api.log_file)
    marker = logsource.mark(source)
    with hipaa.client() as client:
        checks.protected_routes(client, hipaa.token, ["/api/patients"],
                                on_bad_request=ownrequests.recorder(tmp_path)).expect()
    time.sleep(ownrequests.SLACK.total_seconds() + 0.5)
    _forge(hipaa)
    result = checks.logs_clean(source, marker, 4, own_requests=ownrequests.read(tmp_path))
    red(result, phi, "api.log: 1 error lines since the deploy", "auth_failed/JsonWebTokenError x1")
    assert any(n.startswith("2 error line(s) left out") and "1 more matching line(s) count" in n
               for n in result.notes), result.notes


def test_text_lines_without_times_are_bounded_by_the_number_recorded(tmp_path: Path, phi: list[str]) -> None:
    """The real app's console: no time on its lines, so at most one line per recorded request is left out, and
    every other error line counts."""
    log = tmp_path / "app.log"
    log.write_text("old line\n")
    source = logsource.configured(LogsConfig(source="text", format="text"), {}, log)
    marker = logsource.mark(source)
    now = logsource.utc_now()
    for _ in range(2):
        ownrequests.note(tmp_path, ownrequests.OwnRequest("forged token", "GET", "/api/patients", now, now))
    jwt_line = "Authentication error: JsonWebTokenError: invalid signature"
    with log.open("a") as stream:
        stream.write(f"{jwt_line}\n    at verify (node_modules/jsonwebtoken/verify.js:171:19)\n{jwt_line}\n")
    green(checks.logs_clean(source, marker, 2, own_requests=ownrequests.read(tmp_path)), phi)
    with log.open("a") as stream:
        stream.write(f"{jwt_line}\nAudit logs table not available, skipping audit log\n")
    result = checks.logs_clean(source, marker, 2, own_requests=ownrequests.read(tmp_path))
    red(result, phi, "app.log: 2 error lines since the deploy (new lines: 4, 5;")
    assert "2 error line(s) left out" in result.notes[-1] and "1 more matching line(s) count" in result.notes[-1]
    # requests answered before the deploy's marker excuse nothing
    early = logsource.LogMarker(since="2999-01-01T00:00:00.000Z", offset=marker.offset)
    red(checks.logs_clean(source, early, 2, own_requests=ownrequests.read(tmp_path)), phi,
        "app.log: 4 error lines since the deploy")


def test_own_request_pattern_is_validated() -> None:
    assert load_logs({}, {}, Path("."), "[logs]").own_request_pattern == r"\bJsonWebTokenError\b"
    assert load_logs({"own_request_pattern": ""}, {}, Path("."), "[logs]").own_request_pattern is None
    with pytest.raises(ConfigError, match=r"\[logs\]: own_request_pattern is not a valid regular expression"):
        load_logs({"own_request_pattern": "(unclosed"}, {}, Path("."), "[logs]")


def test_the_sandbox_logs_one_line_per_bad_token_and_none_without_one(hipaa: Sandbox) -> None:
    offset = hipaa.api.log_file.stat().st_size
    with httpx.Client(base_url=hipaa.api.base_url, timeout=10) as client:
        client.get("/api/patients")
        client.get("/api/patients", headers={"Authorization": "Bearer garbage"})
    lines = [json.loads(line) for line in hipaa.api.log_file.read_bytes()[offset:].decode().splitlines()]
    assert [(line["level"], line.get("error")) for line in lines if line["level"] == "error"] == \
        [("error", "JsonWebTokenError")]


@pytest.mark.parametrize(("old", "new", "line"), [
    ('{ path = "/api/patient-treatment-plans/patient/{id}", ids_from = "/api/patients" }',
     '{ path = "/api/patient-treatment-plans/patient/{id}" }', " routes[1]: a path with {id} needs ids_from"),
    ('    "/api/patient-treatment-plans",\n', '    { path = "/api/x", method = "POST" },\n',
     " routes[0]: unknown key method"),
    ('user_routes = ["/api/user"', 'user_routes = ["api/user"', ": user_routes must be a list of paths"),
    ('debug_routes = ["/api/auth-test"', 'debug_routes = [1', ": debug_routes must be a list of paths"),
])
def test_a_bad_route_list_is_one_configuration_line(tmp_path: Path, old: str, new: str, line: str) -> None:
    text = (ROOT / "migration.toml").read_text().replace('"sandbox/migrations/', f'"{ROOT}/sandbox/migrations/')
    assert old in text
    (tmp_path / "migration.toml").write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=re.escape(f"migration.toml [api]{line}")):
        load_config(tmp_path / "migration.toml")
