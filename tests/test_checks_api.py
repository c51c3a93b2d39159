"""The API checks against the real reference API and real databases: green on healthy sandboxes, red with a
PHI-free message on sandboxes broken the way each check guards against.

One API per schema is shared by the module (databases cloned from conftest's seeded templates); tests that
break something put it back in a finally block.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from migration_gate.checks import api as checks
from migration_gate.config import Endpoint, Probe
from migration_gate.core.result import CheckFailed
from sandbox.synthetic import DEMO_USERS, SANDBOX_KEY
from tests.conftest import contract
from tests.support import api_sandbox
from tests.support.api_sandbox import CODEC, CONFIG, PASSWORD, PHI_PATHS, USER, Sandbox, green, red, start_api

hipaa = api_sandbox.hipaa  # the fixtures: the migrated and the legacy sandbox API, both, and the PHI and secrets
legacy = api_sandbox.legacy
sandbox = api_sandbox.sandbox
phi = api_sandbox.phi


@pytest.fixture(scope="module")
def wrong_flag(pg, hipaa, tmp_path_factory) -> Iterator[Sandbox]:
    """The deploy forgot USE_HIPAA_SCHEMA=true: the legacy-flag app on the migrated database."""
    sandbox = start_api(pg, "", False, tmp_path_factory.mktemp("chk_wrong_flag"), dsn=hipaa.dsn)
    yield sandbox
    sandbox.api.stop()


# ------------------------------------------------------------------------------------------------------ health


def test_health_green(sandbox: Sandbox, phi: list[str]) -> None:
    with sandbox.client() as client:
        result = green(checks.health(client, expect_hipaa=sandbox.hipaa), phi)
    assert any(note.startswith("/api/health answers 200") for note in result.notes)


def test_health_red_when_the_deploy_kept_the_legacy_flag(wrong_flag: Sandbox, phi: list[str]) -> None:
    with wrong_flag.client() as client:
        result = checks.health(client, expect_hipaa=True)
    red(result, phi, "/health: answered 503", "status is degraded", "schemaValid is not true",
        "config.useHipaaSchema is false (expected true)")


def test_endpoints_red_when_the_deploy_kept_the_legacy_flag(wrong_flag: Sandbox, phi: list[str]) -> None:
    with wrong_flag.client() as client, wrong_flag.connect() as conn:
        result = checks.endpoint_shapes(client, wrong_flag.token, CONFIG.api, conn, 1, use_hipaa_schema=True)
    red(result, phi, "GET /api/patients: answered 500", "GET /api/clinical-sessions: answered 500",
        "GET /api/organizations: answered 404")


# ------------------------------------------------------------------------------------------------------- login


def test_login_green(sandbox: Sandbox, phi: list[str]) -> None:
    with sandbox.client() as client, sandbox.connect() as conn:
        token = checks.login(client, USER, PASSWORD)
        assert checks.auth._claims(token)["userId"] == 1
        assert "auth_token" not in client.cookies, "login leaves the client without the cookie"
        green(checks.login_works(client, USER, PASSWORD, conn, CONFIG.api.users), phi)


def test_login_red_on_wrong_password(hipaa: Sandbox, phi: list[str]) -> None:
    with hipaa.client() as client:
        with pytest.raises(CheckFailed) as failed:
            checks.login(client, USER, "not-the-password")
        assert str(failed.value) == "login as the fixture user failed: 401"
        result = checks.login_works(client, USER, "not-the-password")
    message = red(result, phi, "POST /api/login: answered 401 for the fixture user")
    assert "not-the-password" not in message


def test_login_red_on_a_non_bcrypt_hash(hipaa: Sandbox, phi: list[str]) -> None:
    """Item 18: a scrypt 'hex.salt' hash copied from the legacy users table cannot log in."""
    username, password = DEMO_USERS[2]
    original = hipaa.run("SELECT password FROM users_auth WHERE id = 3")[0][0]
    update = "UPDATE users_auth SET password = %s WHERE id = 3"
    with hipaa.broken(update, update, ("ab12cd34.ef56",), (original,)), hipaa.client() as client, \
            hipaa.connect() as conn:
        result = checks.login_works(client, username, password, conn, CONFIG.api.users)
    message = red(result, phi, "answered 401 for the fixture user")
    assert original not in message


def test_login_red_on_a_suspended_account(hipaa: Sandbox, phi: list[str]) -> None:
    """Login does not look at account_status, but every PHI route then answers 403."""
    username, password = DEMO_USERS[2]
    update = "UPDATE users_auth SET account_status = %s WHERE id = 3"
    with hipaa.broken(update, update, ("suspended",), ("active",)), hipaa.client() as client, \
            hipaa.connect() as conn:
        result = checks.login_works(client, username, password, conn, CONFIG.api.users)
    red(result, phi, "the fixture user (id 3) is not active", "GET /api/patients: answered 403 with the login's")


# --------------------------------------------------------------------------------------------------- protection


def test_protected_routes_green(sandbox: Sandbox, phi: list[str]) -> None:
    with sandbox.client() as client:
        green(checks.protected_routes(client, sandbox.token, [e.path for e in sandbox.endpoints]), phi)


def test_protected_routes_red_on_an_open_or_missing_route(hipaa: Sandbox, phi: list[str]) -> None:
    """/health is unprotected by design: exactly what an unprotected PHI route would look like."""
    with hipaa.client() as client:
        result = checks.protected_routes(client, hipaa.token, ["/health", "/api/no-such-route"])
    red(result, phi, "GET /health: answered 200 without a token (expected 401)",
        "GET /health: answered 200 with a token signed with another secret",
        "GET /health: answered 200 with an unsigned (alg none) token",
        "GET /api/no-such-route: answered 404 with the Bearer token (expected 200)")


# ------------------------------------------------------------------------------------------ shapes and counts


def test_endpoint_shapes_green(sandbox: Sandbox, phi: list[str]) -> None:
    with sandbox.client() as client, sandbox.connect() as conn:
        for user in (1, 2):
            with sandbox.client() as login_client:
                token = checks.login(login_client, *DEMO_USERS[user - 1])
            result = green(checks.endpoint_shapes(client, token, CONFIG.api, conn, user, sandbox.hipaa), phi)
            assert result.checked == (4 if sandbox.hipaa else 3)
    assert any("skipped on the legacy schema" in n for n in result.notes) is not sandbox.hipaa


def test_visible_rows_include_soft_deleted(hipaa: Sandbox) -> None:
    with hipaa.connect() as conn:
        visible, hidden = checks.visible_rows(conn, CONFIG.api, "patients", 1, hipaa=True)
        owned, deleted = conn.execute("SELECT count(*), count(*) FILTER (WHERE deleted) FROM patients"
                                      " WHERE primary_therapist_id = 1").fetchone()
    assert (visible, hidden) == (owned, 0) and deleted >= 1


def test_endpoint_shapes_red_on_inactive_membership(hipaa: Sandbox, phi: list[str]) -> None:
    with hipaa.client() as client:
        token = checks.login(client, *DEMO_USERS[2])
    update = "UPDATE organization_memberships SET is_active = %s WHERE user_id = 3"
    with hipaa.broken(update, update, (False,), (True,)), hipaa.client() as client, hipaa.connect() as conn:
        result = checks.endpoint_shapes(client, token, CONFIG.api, conn, 3, use_hipaa_schema=True)
    red(result, phi, "GET /api/patients: answered 403", "GET /api/clinical-sessions: answered 403",
        "GET /api/therapists: answered 403", "patients: ", "rows of user 3 are not visible to them")


def test_endpoint_shapes_red_when_the_owner_cannot_view_all(hipaa: Sandbox, phi: list[str]) -> None:
    """200 with nothing in it: the API agrees with the rules, but a therapist no longer sees their patients."""
    with hipaa.client() as client:
        token = checks.login(client, *DEMO_USERS[1])
    update = "UPDATE organization_memberships SET can_view_all_patients = %s WHERE user_id = 2"
    with hipaa.broken(update, update, (False,), (True,)), hipaa.client() as client, hipaa.connect() as conn:
        result = checks.endpoint_shapes(client, token, CONFIG.api, conn, 2, use_hipaa_schema=True)
    red(result, phi, "patients: ", "clinical_sessions: ", "rows of user 2 are not visible to them")
    assert not any("answered" in p for p in result.problems)


def test_the_visibility_rule_is_the_descriptions(hipaa: Sandbox, phi: list[str]) -> None:
    """The counts follow [api.visibility] and [api.membership_rights]: described without the owners' "all" right,
    the database no longer shows the owner their own patients, and the same API answer is now red."""
    rights = tuple(r for r in CONFIG.api.rights if r.sees != "all")
    narrowed = dataclasses.replace(CONFIG.api, rights=rights)
    with hipaa.client() as client, hipaa.connect() as conn:
        green(checks.endpoint_shapes(client, hipaa.token, CONFIG.api, conn, 1, use_hipaa_schema=True), phi)
        result = checks.endpoint_shapes(client, hipaa.token, narrowed, conn, 1, use_hipaa_schema=True)
    red(result, phi, "patients: ", "rows of user 1 are not visible to them", "GET /api/patients: total ")


def test_endpoint_shapes_red_on_a_corrupt_ciphertext(hipaa: Sandbox, phi: list[str]) -> None:
    """Item 12: one v2: value on the first page makes the whole list a 500; protected_routes refuses it too."""
    patient_id, original = hipaa.run(
        "SELECT id, patient_contact_email_encrypted FROM patients WHERE primary_therapist_id = 1"
        " AND patient_contact_email_encrypted LIKE 'v1:%' ORDER BY id LIMIT 1")[0]
    offset = checks.log_offset(hipaa.api.log_file)
    update = "UPDATE patients SET patient_contact_email_encrypted = %s WHERE id = %s"
    with hipaa.broken(update, update, ("v2:" + original[3:], patient_id), (original, patient_id)), \
            hipaa.client() as client, hipaa.connect() as conn:
        shapes = checks.endpoint_shapes(client, hipaa.token, CONFIG.api, conn, 1, use_hipaa_schema=True)
        routes = checks.protected_routes(client, hipaa.token, ["/api/patients"])
    assert hipaa.run("SELECT patient_contact_email_encrypted FROM patients WHERE id = %s", (patient_id,))[0][0] \
        == original
    assert red(shapes, phi, "GET /api/patients: answered 500 (expected 200)").count("answered") == 1
    red(routes, phi, "GET /api/patients: answered 500 with the Bearer token (expected 200)")
    red(checks.log_clean(hipaa.api.log_file, offset), phi, "error lines after byte",
        "handler_failed/CiphertextFormatError")


def test_endpoint_shapes_red_on_wrong_shape_or_count(hipaa: Sandbox, phi: list[str]) -> None:
    """The comparison bites: a list read as paginated, and a total set against another table's count."""
    wrong = (Endpoint("/api/patients", "list", "patients"), Endpoint("/api/therapists", "paginated", None),
             Endpoint("/api/clinical-sessions", "paginated", "patients"),
             Endpoint("/api/patients", "table", "patients"), Endpoint("/api/patients", "paginated", "invoices"))
    with hipaa.client() as client, hipaa.connect() as conn:
        result = checks.endpoint_shapes(client, hipaa.token, CONFIG.api, conn, 1, use_hipaa_schema=True,
                                        endpoints=wrong)
    red(result, phi, "GET /api/patients: count is missing or not an integer",
        "GET /api/therapists: pagination lacks some of page, limit, total, totalPages, hasMore",
        "GET /api/clinical-sessions: total ", " patients rows visible to user 1",
        "unknown shape 'table'", "no visibility rule for count_table invoices")


def test_totals_unchanged_across_cut_over(legacy: Sandbox, hipaa: Sandbox, phi: list[str]) -> None:
    """User 2: the probe patients other tests create belong to user 1 (or are refused, user 3)."""
    with legacy.client() as client:
        before = checks.totals(client, checks.login(client, *DEMO_USERS[1]), CONFIG.endpoints)
    with hipaa.client() as client:
        token = checks.login(client, *DEMO_USERS[1])
        after = checks.totals(client, token, CONFIG.endpoints)
        assert before["/api/organizations"] is None and after["/api/organizations"] == 1
        assert before["/api/patients"] > 0
        result = green(checks.totals_unchanged(before, after), phi)
        assert any("/api/organizations: no total before" in n for n in result.notes)
        with hipaa.broken("UPDATE organization_memberships SET can_view_all_patients = false WHERE user_id = 2",
                          "UPDATE organization_memberships SET can_view_all_patients = true WHERE user_id = 2"):
            broken = checks.totals(client, token, CONFIG.endpoints)
    red(checks.totals_unchanged(before, broken), phi, f"GET /api/patients: total {before['/api/patients']} before"
        " cut-over, 0 after")


# ------------------------------------------------------------------------------------------------- leaks, debug


def test_no_secrets_in_responses_green(sandbox: Sandbox, phi: list[str]) -> None:
    with sandbox.client() as client:
        green(checks.no_secrets_in_responses(client, sandbox.token, [e.path for e in sandbox.endpoints]), phi)


def test_no_secrets_red_on_ciphertext_or_hash_in_a_plain_column(hipaa: Sandbox, phi: list[str]) -> None:
    """A name encrypted into the plain column, and a password hash copied into a profile field."""
    patient_id, name = hipaa.run("SELECT id, name FROM patients WHERE primary_therapist_id = 1 ORDER BY id"
                                 " LIMIT 1")[0]
    title = hipaa.run("SELECT title FROM therapist_profiles WHERE user_id = 1")[0][0]
    bcrypt_hash = hipaa.run("SELECT password FROM users_auth WHERE id = 1")[0][0]
    rename = "UPDATE patients SET name = %s WHERE id = %s"
    retitle = "UPDATE therapist_profiles SET title = %s WHERE user_id = 1"
    with hipaa.broken(rename, rename, (CODEC.encrypt(name), patient_id), (name, patient_id)), \
            hipaa.broken(retitle, retitle, (bcrypt_hash,), (title,)), hipaa.client() as client:
        result = checks.no_secrets_in_responses(client, hipaa.token, ["/api/patients", "/api/therapists",
                                                                      "/api/no-such-route"])
    message = red(result, phi, "GET /api/patients: 1 values look like PHI ciphertext",
                  "GET /api/therapists: 1 values look like a bcrypt hash",
                  "GET /api/no-such-route: answered 404; could not be examined")
    assert bcrypt_hash not in message
    assert checks.SECRET_KEYS.search("patientContactEmailEncrypted") and checks.SECRET_KEYS.search("password")


def test_debug_endpoints_closed(hipaa: Sandbox, phi: list[str]) -> None:
    with hipaa.client() as client:
        green(checks.debug_endpoints_closed(client), phi)
        result = checks.debug_endpoints_closed(client, ["/health", "/api/no-such-route"])
    red(result, phi, "GET /health: answered 200 without a token")
    assert len(result.problems) == 1


# ------------------------------------------------------------------------------------------------------ latency


def test_latency_green_within_the_configured_budget(sandbox: Sandbox, phi: list[str]) -> None:
    with sandbox.client() as client:
        result = green(checks.latency_p95(client, sandbox.token, PHI_PATHS, 5, CONFIG.api_p95_ms), phi)
    assert len(result.notes) == 3 and all("p95" in n and "over 5 samples" in n for n in result.notes)


def test_latency_red_over_a_tiny_budget_or_on_errors(hipaa: Sandbox, phi: list[str]) -> None:
    with hipaa.client() as client:
        result = checks.latency_p95(client, hipaa.token, ["/api/patients", "/api/no-such-route"], 3, 0.001)
    red(result, phi, "GET /api/patients: p95 ", "exceeds 0.001 ms", "GET /api/no-such-route: 3x 404 among 3 samples")
    assert checks.p95([5.0, 1.0, 3.0]) == 5.0 and checks.p95(list(map(float, range(1, 101)))) == 95.0


# -------------------------------------------------------------------------------------------------------- audit


def test_audit_rows_green(sandbox: Sandbox, phi: list[str]) -> None:
    with sandbox.client() as client, sandbox.connect() as conn:
        result = green(checks.audit_rows_written(client, sandbox.token, conn, 1, CONFIG.audited, CONFIG.api.audit),
                       phi)
    assert result.checked == len(CONFIG.audited) >= 2


def test_audit_rows_red_when_inserts_fail_and_the_log_shows_it(hipaa: Sandbox, phi: list[str]) -> None:
    """Item 4/20: audit_logs_hipaa.id without its default; the app keeps serving, the audit trail is lost."""
    default = hipaa.run("SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a ON"
                        " a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = 'audit_logs_hipaa'::regclass"
                        " AND a.attname = 'id'")[0][0]
    offset = checks.log_offset(hipaa.api.log_file)
    restore = sql.SQL("ALTER TABLE audit_logs_hipaa ALTER COLUMN id SET DEFAULT {}").format(sql.SQL(default))
    with hipaa.broken("ALTER TABLE audit_logs_hipaa ALTER COLUMN id DROP DEFAULT", restore), hipaa.client() as client, \
            hipaa.connect() as conn:
        result = checks.audit_rows_written(client, hipaa.token, conn, 1, CONFIG.audited, CONFIG.api.audit,
                                           wait_s=0.3)
    red(result, phi, "audit_logs_hipaa: GET /api/patients added 0 rows for user 1 with resource_type PATIENT",
        "GET /api/clinical-sessions added 0 rows")
    red(checks.log_clean(hipaa.api.log_file, offset), phi, "error lines after byte", "audit_failed/NotNullViolation")


def test_audit_rows_red_on_the_wrong_resource_type(hipaa: Sandbox, phi: list[str]) -> None:
    with hipaa.client() as client, hipaa.connect() as conn:
        result = checks.audit_rows_written(client, hipaa.token, conn, 1, {"/api/patients": "CLINICAL_SESSION"},
                                           CONFIG.api.audit, wait_s=0.3)
    red(result, phi, "added 0 rows for user 1 with resource_type CLINICAL_SESSION", "2 rows of any kind")


# ------------------------------------------------------------------------------------------------------- search


def _probe(box: Sandbox) -> Probe:
    """POST-16's requests as each side takes them: the legacy app's body says email/phone (the classic contract),
    the new app's contactEmail/contactPhone (migration.toml [api.probe])."""
    return CONFIG.api.probe if box.hipaa else contract()[0]


def test_search_green(sandbox: Sandbox, phi: list[str]) -> None:
    with sandbox.client() as client:
        result = green(checks.search_finds_patient(client, sandbox.token, probe=_probe(sandbox)), phi)
    patient_id = int(result.notes[0].split()[3])
    table, owner = ("patients", "primary_therapist_id") if sandbox.hipaa else ("clients_hipaa", "therapist_id")
    query = sql.SQL("SELECT {} FROM {} WHERE id = %s").format(sql.Identifier(owner), sql.Identifier(table))
    assert sandbox.run(query, (patient_id,)) == [(1,)]


def test_search_red_when_hashes_are_not_written(hipaa: Sandbox, phi: list[str]) -> None:
    """Item 13, 'search not working': a trigger drops the email and phone hashes of every new patient."""
    make = """
        CREATE FUNCTION chk_drop_hash() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
          NEW.patient_contact_email_search_hash := NULL; NEW.patient_contact_phone_search_hash := NULL;
          RETURN NEW; END $$;
        CREATE TRIGGER chk_drop_hash BEFORE INSERT ON patients FOR EACH ROW EXECUTE FUNCTION chk_drop_hash();"""
    undo = "DROP TRIGGER chk_drop_hash ON patients; DROP FUNCTION chk_drop_hash()"
    with hipaa.broken(make, undo), hipaa.client() as client:
        result = checks.search_finds_patient(client, hipaa.token)
    message = red(result, phi, "POST /api/patients/search: the probe patient's email found 0 patients (expected"
                  " exactly patient ")
    assert "Gate Probe" not in message and "Gate.Probe" not in message


def test_search_red_when_creating_is_refused(hipaa: Sandbox, phi: list[str]) -> None:
    with hipaa.client() as client:
        token = checks.login(client, *DEMO_USERS[2])
    flag = "UPDATE organization_memberships SET can_create_patients = %s WHERE user_id = 3"
    with hipaa.broken(flag, flag, (False,), (True,)), hipaa.client() as client:
        result = checks.search_finds_patient(client, token)
    red(result, phi, "POST /api/patients: answered 403 without a new patient id (expected 201)")


# ---------------------------------------------------------------------------------------------------------- log


def test_log_clean_green_after_ordinary_traffic(sandbox: Sandbox, phi: list[str]) -> None:
    offset = checks.log_offset(sandbox.api.log_file)
    with sandbox.client() as client, sandbox.connect() as conn:
        checks.login_works(client, USER, PASSWORD, conn, CONFIG.api.users).expect()
        checks.search_finds_patient(client, sandbox.token, probe=_probe(sandbox)).expect()
        checks.endpoint_shapes(client, sandbox.token, CONFIG.api, conn, 1, sandbox.hipaa).expect()
        client.get(f"/api/{uuid.uuid4().hex}@example.org")  # client text in a path never reaches the log
    result = green(checks.log_clean(sandbox.api.log_file, offset), phi)
    assert result.checked >= 5


def test_log_clean_red_on_errors_and_leaks(hipaa: Sandbox, tmp_path: Path, phi: list[str]) -> None:
    """The real app logs to the console in text: its audit failures and leaks are caught the same way."""
    email = "Zed.Quill@Example.org"
    bcrypt_hash = hipaa.run("SELECT password FROM users_auth WHERE id = 1")[0][0]
    lines: list[Any] = [
        {"level": "info", "event": "startup"},
        {"level": "error", "event": "audit_failed", "error": "NotNullViolation"},
        {"level": 50, "msg": "boom"},
        "Failed to log PHI access: null value in column id",
        "Audit logs table not available, skipping audit log",
        "TypeError: Cannot read properties of undefined",
        f"login for {email}",
        f"Authorization: Bearer {hipaa.token}",
        f"user row password={bcrypt_hash}",
        f"value {CODEC.encrypt('x')}",
        f"key {SANDBOX_KEY}",
    ]
    log = tmp_path / "app.log"
    skipped = "Error: an old line before the deploy\n"
    log.write_text(skipped + "\n".join(json.dumps(line) if isinstance(line, dict) else line for line in lines) + "\n",
                   encoding="utf-8")
    result = checks.log_clean(log, len(skipped))
    message = red(result, phi, f"app.log: 5 error lines after byte {len(skipped)} (new lines: 2, 3, 4, 5, 6;",
                  "audit_failed/NotNullViolation x1", "1 lines hold what looks like an email address (new lines: 7)",
                  "what looks like a JWT (new lines: 8)", "a bcrypt hash (new lines: 9)",
                  "PHI ciphertext (new lines: 10)", "a 64-hex value (key or search hash) (new lines: 11)")
    assert email not in message and bcrypt_hash not in message
    red(checks.log_clean(tmp_path / "missing.log"), phi, "missing.log: not found")
    assert checks.log_offset(tmp_path / "missing.log") == 0
