"""The reference API over real HTTP against real databases, on the legacy and the refactored schema.

One server per schema is shared by the module (cloned from the seeded templates of conftest); tests that change
data put it back. Tests that need their own database or process (cut-over, start-up refusals) make one.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from psycopg import sql

from migration_gate.app import answers
from migration_gate.config import load_config
from migration_gate.core.phi import PhiCodec, is_v1, iv_of, search_hash
from migration_gate.db import migration
from migration_gate.db.embedded import EmbeddedPostgres
from sandbox.api import age_of
from sandbox.api_process import ROOT, ApiProcess
from sandbox.roles import as_role
from sandbox.synthetic import DEMO_USERS, SANDBOX_KEY

MIGRATION = ROOT / "sandbox" / "migrations" / "001_schema_refactor.sql"
SECRET = "test-api-secret-0123456789abcdef0123456789"
APP_ROLE = load_config().app_role.name
CODEC = PhiCodec(SANDBOX_KEY)
CIPHERTEXT = re.compile(r"v[12]:[0-9a-f]{32}:[0-9a-f]{32}:")
BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
RBAC_DENIED = {"error": "Insufficient permissions: Therapist role or above required"}
NOT_FOUND = {"error": "NOT_FOUND", "message": "API endpoint not found"}
PHI_GETS = ("/api/patients", "/api/clinical-sessions", "/api/therapists")


@dataclass
class Server:
    """A running API and the database behind it, with the schema-specific names tests need."""

    api: ApiProcess
    dsn: str
    hipaa: bool

    @property
    def patients(self) -> str:
        return "patients" if self.hipaa else "clients_hipaa"

    @property
    def owner(self) -> str:
        return "primary_therapist_id" if self.hipaa else "therapist_id"

    @property
    def email_column(self) -> str:
        return "patient_contact_email_encrypted" if self.hipaa else "email_encrypted"

    @property
    def dob_column(self) -> str:
        return "patient_dob_encrypted" if self.hipaa else "date_of_birth_encrypted"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.api.base_url, timeout=10, **kwargs)

    def patient_body(self, **fields: str) -> dict[str, str]:
        """A create body (name, email, phone, dob) by the names this side takes: the loma-org app's on the new
        schema (contactEmail, contactPhone, dob), the legacy app's before it (email, phone, dateOfBirth)."""
        names = ({"email": "contactEmail", "phone": "contactPhone"} if self.hipaa else {"dob": "dateOfBirth"})
        return {names.get(key, key): value for key, value in fields.items()}

    @contextlib.contextmanager
    def login(self, user: int = 1) -> Iterator[httpx.Client]:
        """A client holding the auth cookie of DEMO_USERS[user - 1]."""
        with self.client() as client:
            username, password = DEMO_USERS[user - 1]
            response = client.post("/api/login", json={"username": username, "password": password})
            assert response.status_code == 200, response.text
            yield client

    def query(self, query: str | sql.Composable, params: tuple | dict = ()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def scalar(self, query: str | sql.Composable, params: tuple | dict = ()) -> Any:
        return self.query(query, params)[0][0]

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.api.log_file.read_text(encoding="utf-8").splitlines()]


def _clone(pg: EmbeddedPostgres, template: str) -> str:
    """A module-private copy of a seeded template (conftest's per-test databases are function-scoped)."""
    name = f"api_{template}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return pg.dsn(name)


def _serve(dsn: str, hipaa: bool, folder: Path) -> ApiProcess:
    """The API as the app runs it: as its own role ([app_role]), not the owner of the schema."""
    return ApiProcess(as_role(dsn, APP_ROLE), SANDBOX_KEY, hipaa, folder / "api.log", folder / "maintenance.flag",
                      jwt_secret=SECRET)


@pytest.fixture(scope="module")
def legacy_server(pg, legacy_template, tmp_path_factory) -> Iterator[Server]:
    dsn = _clone(pg, legacy_template)
    with _serve(dsn, False, tmp_path_factory.mktemp("api_legacy")) as api:
        yield Server(api, dsn, hipaa=False)


@pytest.fixture(scope="module")
def hipaa_server(pg, migrated_template, tmp_path_factory) -> Iterator[Server]:
    dsn = _clone(pg, migrated_template)
    with _serve(dsn, True, tmp_path_factory.mktemp("api_hipaa")) as api:
        yield Server(api, dsn, hipaa=True)


@pytest.fixture(scope="module", params=["legacy", "hipaa"])
def server(request) -> Server:
    return request.getfixturevalue(f"{request.param}_server")


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def _all_patients(client: httpx.Client, limit: int = 7) -> tuple[int, list[dict[str, Any]]]:
    """Walk every page; returns the reported total and the rows."""
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        body = client.get("/api/patients", params={"page": page, "limit": limit}).json()
        rows.extend(body["data"])
        assert body["pagination"]["totalPages"] == -(-body["pagination"]["total"] // limit)
        if not body["pagination"]["hasMore"]:
            return body["pagination"]["total"], rows
        page += 1


# ------------------------------------------------------------------------------------------------------- health


def test_an_api_whose_picked_port_another_api_holds_starts_on_its_own_port(legacy_server: Server,
                                                                           tmp_path: Path) -> None:
    """free_port()'s rare race (two sandboxes handed the same port): /health answered by the other process is not
    a start; the picked port is picked again, and a restart on a port taken meanwhile says so."""
    taken = legacy_server.api.port
    second = _serve(legacy_server.dsn, False, tmp_path)
    second.port = taken  # as if free_port() had handed it out twice
    with second:
        assert second.port != taken and second.running
        health = httpx.get(f"{second.base_url}/health", timeout=5)
        assert health.status_code == 200
        started = [json.loads(line) for line in (tmp_path / "api.log").read_text().splitlines() if '"startup"' in line]
        assert [line["pid"] for line in started][-1] == second.pid
        second.stop()
        second.port = taken
        with pytest.raises(RuntimeError, match="another process took it"):
            second.start()


def test_health_reports_schema_flag(server: Server) -> None:
    with server.client() as client:
        for path in ("/health", "/api/health"):
            response = client.get(path)
            body = response.json()
            assert response.status_code == 200, body
            assert body["status"] == "ok"
            assert body["database"] == {"connected": True, "schemaValid": True, "errors": [], "warnings": []}
            assert body["encryption"] == {"configured": True, "valid": True}
            assert body["config"] == {"databaseUrl": "configured", "sessionSecret": "configured",
                                      "phiEncryptionKey": "configured", "useHipaaSchema": server.hipaa}
            assert {"timestamp", "uptime", "environment"} <= body.keys()
            assert SANDBOX_KEY not in response.text and SECRET not in response.text


# -------------------------------------------------------------------------------------------------------- login


def test_login_sets_cookie_and_token_works_as_bearer(server: Server) -> None:
    with server.client() as client:
        username, password = DEMO_USERS[0]
        response = client.post("/api/login", json={"username": username, "password": password})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "username", "name", "title", "license", "specialties", "created_at",
                         "organizationId", "organizationMembershipId"}
    assert body["id"] == 1 and body["username"] == username and "password" not in response.text
    assert (body["organizationId"] is not None) is server.hipaa
    cookie = response.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=Lax", "Max-Age=86400", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie
    token = response.cookies["auth_token"]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert set(claims) == {"userId", "exp"} and claims["userId"] == 1
    assert abs(claims["exp"] - datetime.now(UTC).timestamp() - 86400) < 60
    with server.client(headers={"Authorization": f"Bearer {token}"}) as bearer:
        assert bearer.get("/api/patients", params={"limit": 1}).status_code == 200


def test_login_wrong_password_and_unknown_user_are_401(server: Server) -> None:
    with server.client() as client:
        for username, password in ((DEMO_USERS[0][0], "wrong-password"), ("nobody-here", "x")):
            response = client.post("/api/login", json={"username": username, "password": password})
            assert response.status_code == 401
            assert response.json() == {"error": "Invalid username or password"}
            assert "set-cookie" not in response.headers


@pytest.mark.parametrize("body", [{}, {"username": "demo_therapist1"}, {"password": "x"},
                                  {"username": "", "password": ""}, None])
def test_login_missing_fields_is_400(server: Server, body: dict | None) -> None:
    with server.client() as client:
        response = (client.post("/api/login", json=body) if body is not None
                    else client.post("/api/login", content=b"not json"))
    assert response.status_code == 400
    assert response.json() == {"error": "Username and password are required"}


def test_protected_routes_need_a_valid_token(server: Server) -> None:
    expired = jwt.encode({"userId": 1, "exp": 1}, SECRET, algorithm="HS256")
    forged = jwt.encode({"userId": 1, "exp": 4_000_000_000}, "another-secret-" + "0" * 32, algorithm="HS256")
    with server.client() as client:
        for path in PHI_GETS:
            assert client.get(path).status_code == 401
            assert client.get(path).json() == {"error": "No token provided"}
            for token in ("garbage", expired, forged):
                response = client.get(path, headers={"Authorization": f"Bearer {token}"})
                assert (response.status_code, response.json()) == (401, {"error": "Invalid token"})
            with server.client(cookies={"auth_token": forged}) as cookie_client:
                response = cookie_client.get(path)
            assert (response.status_code, response.json()) == (401, {"error": "Invalid token"})
        response = client.post("/api/patients", json={"name": "Nobody"})
        assert (response.status_code, response.json()) == (401, {"error": "No token provided"})


def test_inactive_account_is_403(server: Server) -> None:
    with server.login(3) as client:
        server.query("UPDATE users_auth SET account_status = 'suspended' WHERE id = 3")
        try:
            response = client.get("/api/patients")
            assert (response.status_code, response.json()) == (403, {"error": "Account is not active"})
        finally:
            server.query("UPDATE users_auth SET account_status = 'active' WHERE id = 3")
        assert client.get("/api/patients").status_code == 200


def test_unknown_api_route_is_404(server: Server) -> None:
    with server.login() as client:
        assert (client.get("/api/no-such-thing").status_code, client.get("/api/no-such-thing").json()) == \
            (404, NOT_FOUND)
        response = client.delete("/api/patients")
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
        response = client.get("/api/organizations")
    if server.hipaa:
        assert response.status_code == 200
        body = response.json()
        assert body["success"] is True and body["count"] == len(body["data"]) == 1
        membership = body["data"][0]
        assert membership["userId"] == 1 and membership["role"] == "business_owner" and membership["isActive"]
        assert {"id", "name", "type"} <= membership["organization"].keys()
    else:
        assert (response.status_code, response.json()) == (404, NOT_FOUND)


# ----------------------------------------------------------------------------------------------------- patients


def test_pagination_total_includes_soft_deleted(server: Server) -> None:
    owned = sql.SQL("SELECT count(*), count(*) FILTER (WHERE deleted) FROM {} WHERE {} = 1").format(
        sql.Identifier(server.patients), sql.Identifier(server.owner))
    with server.login() as client:
        total, rows = _all_patients(client)
        expected, deleted = server.query(owned)[0]
        assert deleted >= 1, "the seed must give therapist 1 a soft-deleted patient"
        assert total == expected == len(rows)
        assert any(row["deleted"] for row in rows)
        ids = [row["id"] for row in rows]
        assert ids == sorted(set(ids))
        assert all(row["primaryTherapistId"] == 1 for row in rows)
        body = client.get("/api/patients", params={"limit": 1000}).json()
        assert body["pagination"]["limit"] == 100
        body = client.get("/api/patients", params={"page": 999, "limit": 10}).json()
        assert body["data"] == [] and body["pagination"]["hasMore"] is False
        assert client.get("/api/patients").json()["pagination"]["limit"] == 50


def test_decrypted_fields_equal_db_values(server: Server) -> None:
    query = sql.SQL("SELECT id, name, {email}, {dob} FROM {table} WHERE {owner} = 1 AND {email} IS NOT NULL"
                    " AND {dob} IS NOT NULL AND {email} <> '' AND {dob} <> '' ORDER BY id LIMIT 1").format(
        email=sql.Identifier(server.email_column), dob=sql.Identifier(server.dob_column),
        table=sql.Identifier(server.patients), owner=sql.Identifier(server.owner))
    patient_id, name, email_ct, dob_ct = server.query(query)[0]
    with server.login() as client:
        _, rows = _all_patients(client, limit=100)
    patient = next(row for row in rows if row["id"] == patient_id)
    assert patient["name"] == name
    assert patient["patientContactEmail"] == CODEC.decrypt(email_ct)
    assert patient["patientDob"] == CODEC.decrypt(dob_ct)
    assert patient["patientAge"] == age_of(CODEC.decrypt(dob_ct))


def test_age_is_safe_harbor_capped() -> None:
    today = date(2025, 6, 1)
    assert age_of("1935-06-02", today) == 89
    assert age_of("1935-06-01", today) == "90+"
    assert age_of(None, today) is None and age_of("not a date", today) is None


def test_responses_carry_no_ciphertext(server: Server) -> None:
    with server.login() as client:
        paths = [*PHI_GETS, "/api/organizations"] if server.hipaa else list(PHI_GETS)
        for path in paths:
            response = client.get(path, params={"limit": 100})
            assert response.status_code == 200, path
            bad = [key for key in _keys(response.json()) if key.endswith(("Encrypted", "SearchHash"))
                   or key == "password"]
            assert bad == [], path
            assert not CIPHERTEXT.search(response.text) and not BCRYPT.search(response.text), path
        search = client.post("/api/patients/search", json={"searchTerm": "patient1@example.com"})
        assert not CIPHERTEXT.search(search.text)


def test_the_new_schema_answers_with_the_loma_org_apps_contract(hipaa_server: Server) -> None:
    """target-app.md section 12: professionalTitle, no legalBusinessName, a decrypted field absent where its
    ciphertext is NULL, nested organization/patient/therapist and user (without secrets), timestamps with Z."""
    with hipaa_server.login() as client:
        profile = client.get("/api/therapists").json()["data"][0]
        sessions = client.get("/api/clinical-sessions", params={"limit": 5}).json()["data"]
        patients = client.get("/api/patients", params={"limit": 100}).json()["data"]
        one = client.get(f"/api/patients/{patients[0]['id']}").json()["data"]
        own = client.get(f"/api/clinical-sessions/patient/{sessions[0]['patientId']}").json()
    assert "professionalTitle" in profile and "title" not in profile and "legalBusinessName" not in profile
    assert profile["user"]["id"] == profile["userId"] and "password" not in profile["user"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", profile["createdAt"])
    session = sessions[0]
    assert (session["organization"]["id"], session["patient"]["id"], session["therapist"]["id"]) == \
        (session["organizationId"], session["patientId"], session["therapistId"])
    assert session["therapist"]["therapistProfile"]["professionalTitle"] == profile["professionalTitle"]
    assert not {"patientDob", "patientContactEmail", "patientClinicalNotes"} & set(session["patient"])  # no PHI
    assert {s["id"] for s in own["data"]} >= {session["id"]} and own["count"] == len(own["data"])
    assert (one["organization"]["id"], one["primaryTherapist"]["id"]) == (one["organizationId"],
                                                                          one["primaryTherapistId"])
    nulls = hipaa_server.query("SELECT id FROM patients WHERE primary_therapist_id = 1 AND"
                               " patient_ethnicity_encrypted IS NULL")
    assert nulls and not any("patientEthnicity" in p for p in patients if p["id"] in {i for (i,) in nulls})


def test_create_patient_then_search_by_padded_mixed_case_email(server: Server) -> None:
    tag = uuid.uuid4().hex[:10]
    email, phone = f"Zed.Quill.{tag}@Example.org", f"(555) 777-{tag[:4]}"
    with server.login() as client:
        created = client.post("/api/patients", json=server.patient_body(name="Zed Quill", email=email, phone=phone,
                                                                        dob="1990-02-03"))
        twin = client.post("/api/patients", json=server.patient_body(name="Zed Twin", phone=phone))
        assert created.status_code == twin.status_code == 201, created.text
        assert created.json()["success"] is True
        data = client.get(f"/api/patients/{created.json()['data']['id']}").json()["data"]  # decrypted, read back
        assert (data["patientContactEmail"], data["patientDob"], data["primaryTherapistId"]) == \
            (email, "1990-02-03", 1)
        if server.hipaa:  # the loma-org app answers a create with the stored row, no decrypted PHI
            assert "patientContactEmail" not in created.json()["data"]
        found = client.post("/api/patients/search", json={"searchTerm": f"   {email.upper()}  "}).json()
        assert found["success"] is True and found["count"] == 1
        assert [row["id"] for row in found["data"]] == [data["id"]]
        by_phone = client.post("/api/patients/search", json={"searchTerm": phone}).json()
        assert sorted(row["id"] for row in by_phone["data"]) == sorted([data["id"], twin.json()["data"]["id"]])
        missing = client.post("/api/patients", json=server.patient_body(email="no-name@example.org"))
        assert missing.status_code == 400
    with server.login(2) as other:  # another therapist's patient is not visible to a search
        assert other.post("/api/patients/search", json={"searchTerm": email}).json()["count"] == 0
    phone_column = "patient_contact_phone_encrypted" if server.hipaa else "phone_encrypted"
    hash_column = "patient_contact_email_search_hash" if server.hipaa else "email_search_hash"
    rows = server.query(sql.SQL("SELECT {}, {}, {} FROM {} WHERE id = ANY(%s) ORDER BY id").format(
        sql.Identifier(server.email_column), sql.Identifier(hash_column), sql.Identifier(phone_column),
        sql.Identifier(server.patients)), ([data["id"], twin.json()["data"]["id"]],))
    (email_ct, email_hash, phone_ct), (_, _, twin_phone_ct) = rows
    assert is_v1(email_ct) and CODEC.decrypt(email_ct) == email and email_hash == search_hash(email)
    assert CODEC.decrypt(phone_ct) == CODEC.decrypt(twin_phone_ct) == phone
    assert iv_of(phone_ct) != iv_of(twin_phone_ct), "the same plaintext must not reuse an IV"
    if server.hipaa:
        name_hash, org = server.query("SELECT patient_name_search_hash, organization_id FROM patients WHERE id = %s",
                                      (data["id"],))[0]
        assert name_hash == search_hash("Zed Quill") and org == 1


def test_decrypt_failure_is_a_bare_500(server: Server) -> None:
    victim = sql.SQL("SELECT id, {col} FROM {t} WHERE {owner} = 1 AND {col} LIKE 'v1:%%' ORDER BY id LIMIT 1").format(
        col=sql.Identifier(server.email_column), t=sql.Identifier(server.patients), owner=sql.Identifier(server.owner))
    patient_id, original = server.query(victim)[0]
    update = sql.SQL("UPDATE {} SET {} = %s WHERE id = %s").format(sql.Identifier(server.patients),
                                                                    sql.Identifier(server.email_column))
    server.query(update, ("v2:" + original[3:], patient_id))
    try:
        with server.login() as client:
            response = client.get("/api/patients", params={"limit": 100})
        assert (response.status_code, response.json()) == (500, {"error": "Failed to fetch patients"})
    finally:
        server.query(update, (original, patient_id))
    errors = [line for line in server.log_lines() if line["level"] == "error"]
    assert errors[-1]["error"] == "CiphertextFormatError"
    assert original[3:40] not in server.api.log_file.read_text(encoding="utf-8")


# -------------------------------------------------------------------------------------------------------- RBAC


def test_inactive_membership_is_403(hipaa_server: Server) -> None:
    with hipaa_server.login(3) as client:
        assert client.get("/api/patients").status_code == 200
        hipaa_server.query("UPDATE organization_memberships SET is_active = false WHERE user_id = 3")
        try:
            for path in PHI_GETS:
                response = client.get(path)
                assert (response.status_code, response.json()) == (403, RBAC_DENIED), path
            response = client.post("/api/patients", json={"name": "Not Allowed"})
            assert (response.status_code, response.json()) == (403, RBAC_DENIED)
        finally:
            hipaa_server.query("UPDATE organization_memberships SET is_active = true WHERE user_id = 3")
        assert client.get("/api/patients").status_code == 200


def test_owner_without_view_all_sees_nothing(hipaa_server: Server) -> None:
    with hipaa_server.login(2) as client:
        assert client.get("/api/patients").json()["pagination"]["total"] > 0
        hipaa_server.query("UPDATE organization_memberships SET can_view_all_patients = false WHERE user_id = 2")
        try:
            body = client.get("/api/patients").json()
            assert body["data"] == [] and body["pagination"]["total"] == 0
            assert client.get("/api/clinical-sessions").json()["pagination"]["total"] == 0
        finally:
            hipaa_server.query("UPDATE organization_memberships SET can_view_all_patients = true WHERE user_id = 2")


# The new schema's visibility rule as one predicate (a correlated EXISTS): the reference the API's two-step,
# index-friendly filter (memberships first, then equalities on organization_id and the owner) must equal.
VISIBLE_BY_RULE = (
    "SELECT t.id FROM {table} t WHERE EXISTS (SELECT 1 FROM organization_memberships m WHERE m.user_id = %(uid)s"
    " AND m.is_active AND m.organization_id = t.organization_id"
    " AND ((m.role IN ('business_owner', 'admin') AND m.can_view_all_patients)"
    " OR (m.role = 'therapist' AND t.{owner} = %(uid)s)"
    " OR (m.role = 'admin' AND m.can_view_selected_patients @> jsonb_build_array(t.{owner})))) ORDER BY t.id"
)


def _listed_ids(client: httpx.Client, path: str) -> list[int]:
    ids, page = [], 1
    while True:
        body = client.get(path, params={"page": page, "limit": 100}).json()
        ids.extend(row["id"] for row in body["data"])
        if not body["pagination"]["hasMore"]:
            assert body["pagination"]["total"] == len(ids)
            return ids
        page += 1


def test_lists_show_exactly_what_the_membership_rule_allows(migrated_db: str, tmp_path: Path) -> None:
    """Every branch of the rule (view-all owner and admin, therapist's own rows, an admin's selected therapists
    with jsonb values that do and do not match, inactive and view-all-less memberships) on rows moved across
    organizations so that owners and organizations differ."""
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("UPDATE patients SET organization_id = 1 WHERE id IN (2, 4, 5, 7, 9, 10)")
        conn.execute("UPDATE patients SET organization_id = 3 WHERE id IN (1, 6)")
        conn.execute("UPDATE clinical_sessions s SET organization_id = p.organization_id FROM patients p"
                     " WHERE p.id = s.patient_id")
        conn.execute("DELETE FROM organization_memberships WHERE user_id = 3")
        conn.execute(
            "INSERT INTO organization_memberships (organization_id, user_id, role, can_view_all_patients,"
            " can_view_selected_patients, is_active) VALUES"
            " (3, 3, 'therapist', true, '[]', true),"  # own rows of org 3 only, view-all notwithstanding
            " (1, 3, 'admin', false, '[2, \"4\", 5.0, [1], {\"a\": 1}, 99999999999999999999]', true),"
            " (2, 3, 'admin', false, '2', true),"  # a scalar contains no array: nothing
            " (4, 3, 'business_owner', null, '[]', true),"  # view-all unknown: nothing
            " (5, 3, 'admin', true, '[]', true),"  # every row of org 5
            " (6, 3, 'business_owner', true, '[]', false)")  # inactive: nothing
    with _serve(migrated_db, True, tmp_path) as api:
        server = Server(api, migrated_db, hipaa=True)
        with server.login(3) as client:
            for path, table, owner in (("/api/patients", "patients", "primary_therapist_id"),
                                       ("/api/clinical-sessions", "clinical_sessions", "therapist_id")):
                expected = [row[0] for row in server.query(
                    sql.SQL(VISIBLE_BY_RULE).format(table=sql.Identifier(table), owner=sql.Identifier(owner)),
                    {"uid": 3})]
                listed = _listed_ids(client, path)
                assert listed == expected, path
                orgs = set(server.query(sql.SQL("SELECT DISTINCT organization_id FROM {} WHERE id = ANY(%s)").format(
                    sql.Identifier(table)), (listed,)))
                assert orgs == {(1,), (3,), (5,)}, path  # every kind of branch contributed
            shown = set(_listed_ids(client, "/api/patients"))
            for pid, email in server.query("SELECT id, patient_contact_email_encrypted FROM patients WHERE id IN"
                                           " (1, 2, 4, 5, 6, 7) AND patient_contact_email_encrypted IS NOT NULL"):
                found = client.post("/api/patients/search", json={"searchTerm": CODEC.decrypt(email)}).json()
                assert (pid in [row["id"] for row in found["data"]]) is (pid in shown), pid


def test_org_therapists_need_membership_of_that_org(hipaa_server: Server) -> None:
    with hipaa_server.login() as client:
        own = client.get("/api/therapists", params={"organizationId": 1}).json()
        assert own["success"] is True and [row["userId"] for row in own["data"]] == [1]
        other = client.get("/api/therapists", params={"organizationId": 2})
        assert (other.status_code, other.json()) == (403, RBAC_DENIED)
        assert client.get("/api/therapists", params={"organizationId": "x"}).status_code == 400


# ------------------------------------------------------------------------------------------ maintenance, audit


def test_maintenance_switches_without_restart(server: Server) -> None:
    pid = server.api.pid
    with server.login() as client:
        server.api.maintenance(True)
        try:
            response = client.get("/api/patients")
            assert response.status_code == 503 and response.headers["retry-after"] == "600"
            assert "text/html" in response.headers["content-type"] and "maintenance" in response.text.lower()
            response = client.get("/api/patients", headers={"Accept": "application/json"})
            assert (response.status_code, response.json()) == (503, {"error": "MAINTENANCE"})
            assert client.post("/api/login", json={"username": "a", "password": "b"}).status_code == 503
            assert client.get("/health").status_code == 200
            assert client.get("/api/health").status_code == 200
        finally:
            server.api.maintenance(False)
        assert client.get("/api/patients").status_code == 200
    assert server.api.pid == pid


@pytest.mark.parametrize(("path", "resource"), [("/api/patients", "PATIENT"),
                                                ("/api/clinical-sessions", "CLINICAL_SESSION"),
                                                ("/api/therapists", "THERAPIST_PHI")])
def test_phi_reads_write_two_audit_rows(server: Server, path: str, resource: str) -> None:
    last = server.scalar("SELECT coalesce(max(id), 0) FROM audit_logs_hipaa")
    with server.login() as client:
        assert client.get(path, params={"page": 1, "limit": 5}).status_code == 200
    rows = server.query(
        "SELECT user_id, action, resource_type, request_method, request_path, response_status, ip_address,"
        " abs(extract(epoch FROM data_retention_date - (now() + interval '7 years'))) < 120,"
        " created_at > now() - interval '1 minute'"
        " FROM audit_logs_hipaa WHERE id > %s ORDER BY id", (last,))
    assert len(rows) == 2
    for row in rows:
        assert row[:5] == (1, "READ", resource, "GET", path)
        assert row[6] == "127.0.0.1" and row[7] is True and row[8] is True
    assert [row[5] for row in rows] == [None, 200]


def test_search_writes_audit_rows(server: Server) -> None:
    last = server.scalar("SELECT coalesce(max(id), 0) FROM audit_logs_hipaa")
    with server.login() as client:
        assert client.post("/api/patients/search", json={"searchTerm": "x@example.org"}).status_code == 200
    assert server.query("SELECT action, resource_type, request_method, request_path FROM audit_logs_hipaa"
                        " WHERE id > %s", (last,)) == [("READ", "PATIENT", "POST", "/api/patients/search")] * 2


def test_concurrent_requests_share_the_pool(server: Server) -> None:
    """More parallel callers than pooled connections (8): every one is served, none sees another's page."""
    with server.login() as client:
        token = client.cookies["auth_token"]

    def first_id(page: int) -> int:
        with server.client(headers={"Authorization": f"Bearer {token}"}) as bearer:
            response = bearer.get("/api/patients", params={"page": page, "limit": 1})
            assert response.status_code == 200
            return response.json()["data"][0]["id"]

    with ThreadPoolExecutor(max_workers=16) as workers:
        ids = list(workers.map(first_id, [1 + n % 8 for n in range(32)]))
    assert len(set(ids)) == 8 and ids[:8] == sorted(ids[:8])


# ------------------------------------------------------------------------------------------------------ the log


def test_log_is_json_lines_without_phi_or_secrets(server: Server) -> None:
    email = f"Log.Probe.{uuid.uuid4().hex[:8]}@Example.org"
    with server.login() as client:
        token = client.cookies["auth_token"]
        client.post("/api/patients", json=server.patient_body(name="Probe Person", email=email, dob="1980-01-01"))
        client.post("/api/patients/search", json={"searchTerm": email})
        client.get("/api/patients", params={"page": 2, "limit": 3})
        client.get(f"/api/{email}")
        client.post("/api/login", json={"username": DEMO_USERS[0][0], "password": "a-wrong-password"})
    text = server.api.log_file.read_text(encoding="utf-8")
    lines = server.log_lines()
    assert lines[0]["event"] == "startup"
    requests = [line for line in lines if line["event"] == "request"]
    assert requests, "every request is logged"
    for line in requests:
        assert {"ts", "level", "method", "path", "status", "ms", "userId"} <= line.keys()
        assert "?" not in line["path"]
    assert any(line["path"] == "/api/patients" and line["status"] == 201 for line in requests)
    for secret in (email, email.lower(), "Probe Person", "1980-01-01", token, SECRET, SANDBOX_KEY,
                   "a-wrong-password", DEMO_USERS[0][1], "limit=3", search_hash(email)):
        assert secret not in text


# ---------------------------------------------------------------------------------------- start-up and cut-over


@pytest.mark.rehearsal
@pytest.mark.parametrize(("key", "secret"), [(None, SECRET), ("ab" * 31 + "c", SECRET),
                                             ("zq" * 32, SECRET), (SANDBOX_KEY, None)],
                         ids=["missing-key", "63-char-key", "non-hex-key", "missing-secret"])
def test_refuses_to_start_with_bad_configuration(tmp_path: Path, key: str | None, secret: str | None) -> None:
    api = _serve("postgresql://nobody@127.0.0.1:1/none", False, tmp_path)
    env = api.child_env()
    for name, value in (("PHI_ENCRYPTION_KEY", key), ("JWT_SECRET", secret)):
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    env.pop("SESSION_SECRET", None)
    result = subprocess.run([sys.executable, "-m", "sandbox.api"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert key is None or key not in result.stderr + result.stdout
    assert ("PHI_ENCRYPTION_KEY" in lines[0]) is (secret is not None)


@pytest.mark.sandbox
def test_start_raises_with_the_child_error_line(tmp_path: Path) -> None:
    api = ApiProcess("postgresql://nobody@127.0.0.1:1/none", "ab" * 31 + "c", False, tmp_path / "log",
                     tmp_path / "flag")
    with pytest.raises(RuntimeError, match="PHI_ENCRYPTION_KEY must be 64 hex characters"):
        api.start()
    assert not api.running


def test_cutover_deploy_keeps_the_same_answers(legacy_db: str, tmp_path: Path) -> None:
    """Legacy app -> maintenance -> migrate -> redeploy with the flag: same patients, same decrypted values."""
    server = Server(_serve(legacy_db, False, tmp_path), legacy_db, hipaa=False)
    with server.api:
        with server.login() as client:
            before_total, before = _all_patients(client, limit=100)
        server.api.restart(use_hipaa_schema=True)  # flag flipped before the migration: health must say so
        with server.client() as client:
            response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["status"] == "degraded" and response.json()["database"]["schemaValid"] is False
        server.api.maintenance(True)
        migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
        server.api.restart(use_hipaa_schema=True)
        with server.client() as client:
            assert client.get("/api/patients").status_code == 503
            health = client.get("/health").json()
            assert health["status"] == "ok" and health["config"]["useHipaaSchema"] is True
        server.api.maintenance(False)
        with server.login() as client:
            after_total, after = _all_patients(client, limit=100)
    assert after_total == before_total
    legacy_keys = set(before[0])  # the new app's contract: a field absent where null, timestamps with Z
    assert [{k: answers.canonical(row.get(k)) for k in legacy_keys} for row in after] == \
        [answers.canonical(row) for row in before]
