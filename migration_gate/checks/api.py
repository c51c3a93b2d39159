"""The deployed app over HTTP: health, login, protection, response shapes and counts, audit rows, search,
latency and the app's log (target-app.md section 6; section 8 items 7, 13, 18-22).

Every check takes an ``httpx.Client`` the caller owns (``base_url`` set) and a token from ``login``. Requests
carry only the credentials a check names: cookies held by the client are stripped, the token goes in an
``Authorization: Bearer`` header. Problems name paths, statuses, counts and row ids, never response values,
tokens, usernames or passwords. Database connections should be autocommit (each count must see fresh rows).
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from psycopg import sql

from migration_gate.checks import CheckFailed, Result, first_ids
from migration_gate.config import Endpoint

COOKIE = "auth_token"
PAGE_LIMIT = 10  # rows asked of paginated endpoints: enough to check the page, cheap to decrypt
AUDIT_WAIT_S = 2.0  # the app writes audit rows "non-blocking": give them a moment to land
RETENTION_SLACK = "2 days"  # data_retention_date ~ now + 7 years, whatever the app's and our time zones
# Unauthenticated debug routes of the real app (target-app.md section 6); all must be gone in production.
# POST /api/auth/test-insert is left out on purpose: asking it would insert a user.
DEBUG_PATHS = ("/api/auth-test", "/api/debug-jwt", "/api/auth/test", "/api/db-diagnostic/session-tables",
               "/api/test/schema", "/api/test/health", "/api/diagnostic/database")

# What must never be in a response body or a log line, by description.
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
CIPHERTEXT = re.compile(r"\bv[12]:[0-9a-f]{32}:[0-9a-f]{32}:")
HEX64 = re.compile(r"\b[0-9a-fA-F]{64}\b")
LOG_LEAKS = {"an email address": EMAIL, "a JWT": JWT, "a bcrypt hash": BCRYPT, "PHI ciphertext": CIPHERTEXT,
             "a 64-hex value (key or search hash)": HEX64}
RESPONSE_LEAKS = {"PHI ciphertext": CIPHERTEXT, "a bcrypt hash": BCRYPT}
SECRET_KEYS = re.compile(r"(Encrypted|SearchHash|_encrypted|_search_hash)$|^(password|passwordHash|password_hash)$")
LOG_ERROR_TEXT = re.compile(r"failed to log|skipping audit log", re.IGNORECASE)
PLAIN_ERROR_LINE = re.compile(r"^\s*\[?(error|fatal)\b|\b[A-Za-z]*Error: ", re.IGNORECASE)
SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,60}$")  # event and exception class names are safe to repeat

# Rows of count_table the user may see, per schema: (physical table, SQL condition on alias t, uid = %(uid)s).
# New schema: an active membership of the row's org that sees the whole org, or a therapist's own rows
# (target-app.md section 6, visibility rules); the API also needs an active therapist-or-above membership.
_VISIBLE = (
    "EXISTS (SELECT 1 FROM organization_memberships m WHERE m.user_id = %(uid)s AND m.is_active"
    " AND m.organization_id = t.organization_id"
    " AND ((m.role IN ('business_owner', 'admin') AND m.can_view_all_patients)"
    " OR (m.role = 'therapist' AND t.{owner} = %(uid)s)"
    " OR (m.role = 'admin' AND m.can_view_selected_patients @> jsonb_build_array(t.{owner}))))"
)
NEW_COUNTS: dict[str, tuple[str, str, str | None]] = {
    # count_table: (table, visible condition, owner column: own rows must be among the visible ones)
    "patients": ("patients", _VISIBLE.replace("{owner}", "primary_therapist_id"), "primary_therapist_id"),
    "clinical_sessions": ("clinical_sessions", _VISIBLE.replace("{owner}", "therapist_id"), "therapist_id"),
    "therapist_profiles": ("therapist_profiles", "t.user_id = %(uid)s", None),
    "organization_memberships": ("organization_memberships", "t.user_id = %(uid)s AND t.is_active", None),
}
LEGACY_COUNTS: dict[str, tuple[str, str, str | None]] = {
    "patients": ("clients_hipaa", "t.therapist_id = %(uid)s", None),
    "clinical_sessions": ("sessions_hipaa", "t.therapist_id = %(uid)s", None),
    "therapist_profiles": ("therapist_profiles", "t.user_id = %(uid)s", None),
}


# ------------------------------------------------------------------------------------------------- helpers


def _send(client: httpx.Client, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    """One request with exactly the credentials given: the client's cookies are not sent."""
    request = client.build_request(method, path, **kwargs)
    request.headers.pop("Cookie", None)
    request.headers["Accept"] = "application/json"
    if token is not None:
        request.headers["Authorization"] = f"Bearer {token}"
    return client.send(request)


def _fetch(result: Result, client: httpx.Client, method: str, path: str, token: str | None = None,
           **kwargs: Any) -> httpx.Response | None:
    """_send, with a transport failure recorded as a problem (class name only) instead of raised."""
    try:
        return _send(client, method, path, token, **kwargs)
    except httpx.HTTPError as exc:
        result.add(f"{method} {path}: no answer ({type(exc).__name__})")
        return None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def _is_int(value: Any) -> bool:
    return type(value) is int


def _claims(token: str) -> dict[str, Any]:
    """The JWT's payload, unverified (we do not know the app's secret); {} when it is not a JWT."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged_tokens(token: str) -> dict[str, str]:
    """Tokens naming the same user that the app must refuse: signed with another secret, and unsigned."""
    claims = _claims(token) or {"userId": 1}
    claims = {**claims, "exp": int(time.time()) + 3600}
    return {
        "with a token signed with another secret": jwt.encode(claims, secrets.token_hex(32), algorithm="HS256"),
        "with an unsigned (alg none) token": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
    }


def p95(samples: list[float]) -> float:
    """Nearest-rank 95th percentile (no interpolation: it is one of the measured values)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _lines(numbers: list[int]) -> str:
    return first_ids(numbers).replace("first ids", "new lines")


# -------------------------------------------------------------------------------------------------- health


def health(client: httpx.Client, expect_hipaa: bool) -> Result:
    """GET /health is 200 and ok with the DB connected, the schema valid, encryption valid and the schema flag
    the deploy should have set (a deploy with the wrong USE_HIPAA_SCHEMA is caught here, before any data)."""
    result = Result("GET /health is ok with the expected schema flag")
    response = _fetch(result, client, "GET", "/health")
    result.checked = 1
    if response is not None:
        body = _json(response)
        if response.status_code != 200:
            result.add(f"/health: answered {response.status_code} (expected 200)")
        if not isinstance(body, dict):
            result.add("/health: the body is not a JSON object")
        else:
            _health_body(result, body, expect_hipaa)
    api = _fetch(Result("ignored"), client, "GET", "/api/health")
    result.notes.append(f"/api/health answers {api.status_code if api is not None else 'nothing'}"
                        " (the real app has no handler there: 404; Render's healthCheckPath points at it)")
    return result


def _health_body(result: Result, body: dict[str, Any], expect_hipaa: bool) -> None:
    status = body.get("status")
    if status != "ok":
        shown = status if status in ("degraded", "error") else "missing or unexpected"
        result.add(f"/health: status is {shown} (expected ok)")
    database = body.get("database") if isinstance(body.get("database"), dict) else {}
    encryption = body.get("encryption") if isinstance(body.get("encryption"), dict) else {}
    config = body.get("config") if isinstance(body.get("config"), dict) else {}
    if database.get("connected") is not True:
        result.add("/health: database.connected is not true")
    if database.get("schemaValid") is not True:
        errors = database.get("errors")
        count = f" ({len(errors)} schema errors reported)" if isinstance(errors, list) and errors else ""
        result.add(f"/health: database.schemaValid is not true{count}")
    if encryption.get("valid") is not True:
        result.add("/health: encryption.valid is not true")
    flag = config.get("useHipaaSchema")
    if flag is not expect_hipaa:
        shown = json.dumps(flag) if isinstance(flag, bool) else "missing"
        result.add(f"/health: config.useHipaaSchema is {shown} (expected {json.dumps(expect_hipaa)})")
    missing = sorted(k for k in ("databaseUrl", "sessionSecret", "phiEncryptionKey") if config.get(k) != "configured")
    if missing:
        result.add(f"/health: config not 'configured': {', '.join(missing)}")


# --------------------------------------------------------------------------------------------------- login


def login(client: httpx.Client, username: str, password: str) -> str:
    """The fixture user's JWT (the auth_token cookie, or a token field in the body).

    The cookie is removed from the client again, so later checks send only the credentials they name.
    Raises CheckFailed with a generic message: the other API checks cannot run without a token.
    """
    try:
        response = _send(client, "POST", "/api/login", json={"username": username, "password": password})
    except httpx.HTTPError as exc:
        raise CheckFailed(f"login as the fixture user failed: no answer ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise CheckFailed(f"login as the fixture user failed: {response.status_code}")
    token = response.cookies.get(COOKIE)
    body = _json(response)
    if not token and isinstance(body, dict) and isinstance(body.get("token"), str):
        token = body["token"]
    client.cookies.delete(COOKIE)
    if not token:
        raise CheckFailed(f"login as the fixture user answered 200 without an {COOKIE} cookie or token")
    return token


def login_works(client: httpx.Client, username: str, password: str, conn: psycopg.Connection | None = None,
                probe_path: str = "/api/patients") -> Result:
    """Login answers 200 with a safe cookie naming the right user, a wrong password is refused, and the token
    works as a Bearer token (item 18: non-bcrypt hashes cannot log in; a token can name the wrong user id).

    With conn, also: the id in the body and the token is the users_auth id of that username, the account is
    active and the stored hash is bcrypt.
    """
    result = Result("the fixture user can log in and the token works")
    response = _fetch(result, client, "POST", "/api/login", json={"username": username, "password": password})
    result.checked = 1
    client.cookies.delete(COOKIE)
    if response is not None and response.status_code != 200:
        result.add(f"POST /api/login: answered {response.status_code} for the fixture user (expected 200)")
    if response is None or response.status_code != 200:
        if conn is not None:
            _login_matches_db(result, conn, username, None)
        return result
    body = _json(response)
    body = body if isinstance(body, dict) else {}
    token = response.cookies.get(COOKIE)
    _cookie_problems(result, response, client)
    if "password" in body or BCRYPT.search(response.text):
        result.add("POST /api/login: the body carries a password or password hash")
    if body.get("username") != username:
        result.add("POST /api/login: the body's username is not the one that logged in")
    body_id = body.get("id")
    claims = _claims(token) if token else {}
    if token and claims.get("userId") != body_id:
        result.add("POST /api/login: the token's userId differs from the body's id")
    if conn is not None:
        _login_matches_db(result, conn, username, body_id)
    wrong = _fetch(result, client, "POST", "/api/login", json={"username": username, "password": password + "-x"})
    if wrong is not None and (wrong.status_code != 401 or COOKIE in wrong.cookies):
        result.add(f"POST /api/login: a wrong password answered {wrong.status_code} (expected 401, no cookie)")
    client.cookies.delete(COOKIE)
    if token:
        probe = _fetch(result, client, "GET", probe_path, token, params={"limit": 1})
        if probe is not None and probe.status_code != 200:
            result.add(f"GET {probe_path}: answered {probe.status_code} with the login's Bearer token")
    return result


def _cookie_problems(result: Result, response: httpx.Response, client: httpx.Client) -> None:
    headers = [h for h in response.headers.get_list("set-cookie") if h.strip().startswith(f"{COOKIE}=")]
    if not headers:
        result.add(f"POST /api/login: no {COOKIE} cookie set")
        return
    attributes = {part.strip().lower() for part in headers[-1].split(";")[1:]}
    wanted = ["httponly", "samesite=lax", "path=/"] + (["secure"] if client.base_url.scheme == "https" else [])
    missing = [name for name in wanted if name not in attributes]
    if missing:
        result.add(f"POST /api/login: the {COOKIE} cookie lacks {', '.join(missing)}")


def _login_matches_db(result: Result, conn: psycopg.Connection, username: str, body_id: Any) -> None:
    row = conn.execute("SELECT id, account_status, password ~ '^\\$2[aby]\\$\\d\\d\\$' FROM users_auth"
                       " WHERE username = %s", (username,)).fetchone()
    if row is None:
        result.add("users_auth: the fixture user is not in the database the app uses")
        return
    user_id, status, bcrypt_hash = row
    if body_id is not None and body_id != user_id:
        result.add(f"POST /api/login: the body's id is not the users_auth id ({user_id}) of the fixture user")
    if status != "active":
        result.add(f"users_auth: the fixture user (id {user_id}) is not active")
    if not bcrypt_hash:
        result.add(f"users_auth: the fixture user's (id {user_id}) password is not a bcrypt hash")


# ----------------------------------------------------------------------------------------- protection, shape


def protected_routes(client: httpx.Client, token: str, paths: Iterable[str]) -> Result:
    """Each path answers 401 without a token and with a forged one, and 200 with the real token (item 19).
    A 500 is always a problem: it means the route broke, not that it refused."""
    result = Result("protected routes refuse missing and forged tokens and accept the real one")
    forged = forged_tokens(token)
    for path in paths:
        result.checked += 1
        attempts = [("without a token", None), *((label, value) for label, value in forged.items()),
                    ("with the Bearer token", token)]
        for label, value in attempts:
            response = _fetch(result, client, "GET", path, value)
            if response is None:
                continue
            expected = 200 if value == token else 401
            if response.status_code != expected:
                result.add(f"GET {path}: answered {response.status_code} {label} (expected {expected})")
    return result


def _shape(body: Any, shape: str, limit: int) -> tuple[int | None, list[str]]:
    """(total, what is wrong) for one body of the documented shape."""
    if not isinstance(body, dict):
        return None, ["the body is not a JSON object"]
    wrong = []
    if body.get("success") is not True:
        wrong.append("success is not true")
    data = body.get("data")
    if not isinstance(data, list):
        return None, [*wrong, "data is not a list"]
    if shape == "list":
        count = body.get("count")
        if not _is_int(count):
            return None, [*wrong, "count is missing or not an integer"]
        if count != len(data):
            wrong.append(f"count {count} differs from the {len(data)} items in data")
        return count, wrong
    page = body.get("pagination")
    keys = ("page", "limit", "total", "totalPages", "hasMore")
    if not isinstance(page, dict) or not all(k in page for k in keys):
        return None, [*wrong, f"pagination lacks some of {', '.join(keys)}"]
    total = page["total"]
    if not all(_is_int(page[k]) for k in keys[:4]) or not isinstance(page["hasMore"], bool):
        return None, [*wrong, "pagination values have the wrong types"]
    if (page["page"], page["limit"]) != (1, limit):
        wrong.append(f"pagination page/limit {page['page']}/{page['limit']} (asked 1/{limit})")
    if page["totalPages"] != math.ceil(total / limit):
        wrong.append(f"totalPages {page['totalPages']} is not ceil({total}/{limit})")
    if page["hasMore"] != (limit < total):
        wrong.append("hasMore disagrees with total")
    if len(data) != min(limit, total):
        wrong.append(f"{len(data)} items on page 1 of {total} at limit {limit}")
    return total, wrong


def visible_rows(conn: psycopg.Connection, count_table: str, user_id: int, hipaa: bool) -> tuple[int, int] | None:
    """(rows of count_table the user may see, own rows the user may not see); None when no rule is known.
    Soft-deleted patients count: the app does not filter them and 7-year retention keeps them."""
    rule = (NEW_COUNTS if hipaa else LEGACY_COUNTS).get(count_table)
    if rule is None:
        return None
    table, visible, owner = rule
    hidden_own = sql.SQL("count(*) FILTER (WHERE t.{} = %(uid)s AND NOT ({}))").format(
        sql.Identifier(owner), sql.SQL(visible)) if owner else sql.SQL("0")
    query = sql.SQL("SELECT count(*) FILTER (WHERE {}), {} FROM {} t").format(
        sql.SQL(visible), hidden_own, sql.Identifier(table))
    return conn.execute(query, {"uid": user_id}).fetchone()


def endpoint_shapes(client: httpx.Client, token: str, endpoints: Iterable[Endpoint], conn: psycopg.Connection,
                    user_id: int, use_hipaa_schema: bool) -> Result:
    """Each endpoint answers the documented shape, and its total equals the rows of count_table that the user
    may see in the database (item 7). Own patients and sessions hidden from their therapist are a problem
    even when the API agrees with the rules: a lost membership or can_view_all_patients gives 200 and nothing.
    On the legacy schema, endpoints whose table has no legacy twin (organizations) are skipped with a note."""
    result = Result("API endpoints answer the documented shape and the database's counts")
    for endpoint in endpoints:
        expected = None
        if endpoint.count_table:
            expected = visible_rows(conn, endpoint.count_table, user_id, use_hipaa_schema)
            if expected is None and not use_hipaa_schema and endpoint.count_table in NEW_COUNTS:
                result.notes.append(f"{endpoint.path}: skipped on the legacy schema ({endpoint.count_table} "
                                    "does not exist before cut-over)")
                continue
            if expected is None:
                result.add(f"{endpoint.path}: no visibility rule for count_table {endpoint.count_table}")
                continue
        if endpoint.shape not in ("list", "paginated"):
            result.add(f"{endpoint.path}: unknown shape {endpoint.shape!r} in the configuration")
            continue
        result.checked += 1
        if expected is not None and expected[1]:
            result.add(f"{endpoint.count_table}: {expected[1]} rows of user {user_id} are not visible to them "
                       "(inactive membership or can_view_all_patients false?)")
        params = {"page": 1, "limit": PAGE_LIMIT} if endpoint.shape == "paginated" else None
        response = _fetch(result, client, "GET", endpoint.path, token, params=params)
        if response is None:
            continue
        if response.status_code != 200:
            result.add(f"GET {endpoint.path}: answered {response.status_code} (expected 200)")
            continue
        total, wrong = _shape(_json(response), endpoint.shape, PAGE_LIMIT)
        for what in wrong:
            result.add(f"GET {endpoint.path}: {what}")
        if expected is None or total is None:
            continue
        if total != expected[0]:
            result.add(f"GET {endpoint.path}: total {total}, but the database has {expected[0]}"
                       f" {endpoint.count_table} rows visible to user {user_id}")
    return result


def totals(client: httpx.Client, token: str, endpoints: Iterable[Endpoint]) -> dict[str, int | None]:
    """path -> the total (paginated) or count (list) the app reports; None when it does not answer one.
    Taken before and after cut-over, for totals_unchanged."""
    found: dict[str, int | None] = {}
    scratch = Result("totals")
    for endpoint in endpoints:
        response = _fetch(scratch, client, "GET", endpoint.path, token, params={"limit": 1})
        total = None
        if response is not None and response.status_code == 200:
            total, _ = _shape(_json(response), endpoint.shape, 1)
        found[endpoint.path] = total
    return found


def totals_unchanged(before: Mapping[str, int | None], after: Mapping[str, int | None]) -> Result:
    """The same user sees as many patients, sessions and profiles after cut-over as before (items 7, 9).
    Paths only one side has (organizations is new) are noted, not compared."""
    result = Result("the app reports the same totals before and after cut-over")
    for path in sorted(set(before) | set(after)):
        if path not in before or path not in after:
            result.notes.append(f"{path}: only {'after' if path in after else 'before'} cut-over, not compared")
            continue
        result.checked += 1
        if after[path] is None:
            result.add(f"GET {path}: no total after cut-over")
        elif before[path] is None:
            result.notes.append(f"{path}: no total before cut-over, not compared")
        elif before[path] != after[path]:
            result.add(f"GET {path}: total {before[path]} before cut-over, {after[path]} after")
    return result


def no_secrets_in_responses(client: httpx.Client, token: str, paths: Iterable[str]) -> Result:
    """No ...Encrypted / ...SearchHash / password keys, ciphertext or bcrypt hashes in any answer (item 21:
    the real app returns ciphertexts beside the plaintext and the password hash from /api/user)."""
    result = Result("responses carry no ciphertext, search hash or password hash")
    for path in paths:
        response = _fetch(result, client, "GET", path, token, params={"limit": 100})
        if response is None:
            continue
        result.checked += 1
        if response.status_code != 200:
            result.add(f"GET {path}: answered {response.status_code}; could not be examined")
            continue
        keys = sorted({k for k in _keys(_json(response)) if SECRET_KEYS.search(k)})
        if keys:
            shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
            result.add(f"GET {path}: {len(keys)} secret-bearing keys in the body ({shown})")
        for label, pattern in RESPONSE_LEAKS.items():
            hits = len(pattern.findall(response.text))
            if hits:
                result.add(f"GET {path}: {hits} values look like {label}")
    return result


def debug_endpoints_closed(client: httpx.Client, paths: Iterable[str] = DEBUG_PATHS) -> Result:
    """The real app's unauthenticated debug routes must not answer 2xx (item 21). Only GETs are sent."""
    result = Result("unauthenticated debug endpoints are closed")
    for path in paths:
        result.checked += 1
        response = _fetch(result, client, "GET", path)
        if response is not None and (200 <= response.status_code < 300 or response.status_code >= 500):
            result.add(f"GET {path}: answered {response.status_code} without a token (expected 401, 403 or 404)")
    return result


# ------------------------------------------------------------------------------------------ latency, audit


def latency_p95(client: httpx.Client, token: str, paths: Iterable[str], samples: int, budget_ms: float) -> Result:
    """Sequential timed GETs per path after one untimed warm-up; p95 over the samples against the budget
    (item 22: the real app loads and decrypts every row on each page). Keep samples x paths under the
    production rate limit (100 requests per 15 min per IP) or disable it for the run."""
    result = Result(f"API p95 latency within {budget_ms:g} ms")
    for path in paths:
        result.checked += 1
        _fetch(result, client, "GET", path, token)
        times, statuses = [], Counter()
        for _ in range(samples):
            began = time.perf_counter()
            response = _fetch(result, client, "GET", path, token)
            elapsed = (time.perf_counter() - began) * 1000
            if response is None:
                break
            statuses[response.status_code] += 1
            times.append(elapsed)
        bad = {s: n for s, n in statuses.items() if s != 200}
        if bad:
            shown = ", ".join(f"{n}x {s}" for s, n in sorted(bad.items()))
            result.add(f"GET {path}: {shown} among {len(times)} samples (expected 200)")
        if not times:
            continue
        measured = p95(times)
        result.notes.append(f"GET {path}: p95 {measured:.1f} ms over {len(times)} samples (budget {budget_ms:g} ms)")
        if measured > budget_ms:
            result.add(f"GET {path}: p95 {measured:.1f} ms over {len(times)} samples exceeds {budget_ms:g} ms")
    return result


def _audit_counts(conn: psycopg.Connection, user_id: int, resource_type: str) -> tuple[int, int]:
    """(the user's audit rows, of them with this resource_type and data_retention_date ~ now + 7 years)."""
    return conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE resource_type = %s AND data_retention_date IS NOT NULL"
        " AND abs(extract(epoch FROM data_retention_date - (now() + interval '7 years')))"
        " < extract(epoch FROM %s::interval)) FROM audit_logs_hipaa WHERE user_id = %s",
        (resource_type, RETENTION_SLACK, user_id)).fetchone()


def audit_rows_written(client: httpx.Client, token: str, conn: psycopg.Connection, user_id: int,
                       audited: Mapping[str, str], wait_s: float = AUDIT_WAIT_S) -> Result:
    """Reading PHI writes at least 2 audit_logs_hipaa rows for the caller, with the path's resource_type and a
    7-year retention date (item 20: a missing id default makes every audit insert fail, silently)."""
    result = Result("PHI reads write audit rows")
    for path, resource_type in audited.items():
        result.checked += 1
        all_before, good_before = _audit_counts(conn, user_id, resource_type)
        response = _fetch(result, client, "GET", path, token, params={"limit": 1})
        if response is None:
            continue
        if response.status_code != 200:
            result.add(f"GET {path}: answered {response.status_code} (expected 200)")
        deadline = time.monotonic() + wait_s
        while True:
            all_after, good_after = _audit_counts(conn, user_id, resource_type)
            if good_after - good_before >= 2 or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if good_after - good_before < 2:
            result.add(f"audit_logs_hipaa: GET {path} added {good_after - good_before} rows for user {user_id} with"
                       f" resource_type {resource_type} and a 7-year retention date (expected at least 2;"
                       f" {all_after - all_before} rows of any kind)")
    return result


# --------------------------------------------------------------------------------------------------- search


def search_finds_patient(client: httpx.Client, token: str) -> Result:
    """Create a synthetic patient, then search its email upper-cased and space-padded: exactly that patient
    comes back (item 13: search hashes must be sha256(lower(trim(plaintext))) of what the app stores).

    This WRITES one patient row (fake name and email, random per run) owned by the token's user: an accepted
    post-migration smoke write on the sandbox or a staging rehearsal, not for a production target.
    """
    result = Result("search by normalised email finds a newly created patient")
    tag = uuid.uuid4().hex[:12]
    email = f"Gate.Probe.{tag}@Example.org"
    created = _fetch(result, client, "POST", "/api/patients", token,
                     json={"name": f"Gate Probe {tag}", "email": email, "phone": f"555-01{tag[:2]}-{tag[2:6]}"})
    result.checked = 1
    if created is None:
        return result
    body = _json(created)
    data = body.get("data") if isinstance(body, dict) else None
    patient_id = data.get("id") if isinstance(data, dict) else None
    if created.status_code != 201 or not _is_int(patient_id):
        result.add(f"POST /api/patients: answered {created.status_code} without a new patient id (expected 201)")
        return result
    result.notes.append(f"probe patient id {patient_id} created")
    if data.get("patientContactEmail") != email:
        result.add(f"POST /api/patients: patient {patient_id}'s email does not read back as it was sent")
    found = _fetch(result, client, "POST", "/api/patients/search", token, json={"searchTerm": f"  {email.upper()} "})
    if found is None:
        return result
    if found.status_code != 200:
        result.add(f"POST /api/patients/search: answered {found.status_code} (expected 200)")
        return result
    answer = _json(found)
    rows = answer.get("data") if isinstance(answer, dict) else None
    ids = [row.get("id") for row in rows if isinstance(row, dict)] if isinstance(rows, list) else None
    if ids != [patient_id]:
        shown = "no list" if ids is None else f"{len(ids)} patients"
        result.add(f"POST /api/patients/search: the probe patient's email found {shown} (expected exactly"
                   f" patient {patient_id})")
    return result


# ------------------------------------------------------------------------------------------------------ log


def log_offset(log_file: Path) -> int:
    """The log's size now: pass it to log_clean later so only lines written since count."""
    try:
        return Path(log_file).stat().st_size
    except FileNotFoundError:
        return 0


def _log_error(line: str) -> tuple[bool, str | None]:
    """(is this an error line, a safe name for it: the JSON event and exception class, when they are names)."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict):
        level = record.get("level")
        is_error = (isinstance(level, str) and level.lower() in ("error", "fatal", "critical")
                    or _is_int(level) and level >= 50)  # pino: 50 error, 60 fatal
        parts = [record[k] for k in ("event", "error") if isinstance(record.get(k), str) and SAFE_NAME.match(record[k])]
        return is_error or bool(LOG_ERROR_TEXT.search(line)), "/".join(parts) or None
    return bool(LOG_ERROR_TEXT.search(line) or PLAIN_ERROR_LINE.search(line)), None


def log_clean(log_file: Path, since_offset: int = 0) -> Result:
    """No error lines ("Failed to log", "skipping audit log", level error) in the app's log after the offset
    (taken at deploy), and nothing that looks like an email, JWT, bcrypt hash, ciphertext or key/hash."""
    log_file = Path(log_file)
    result = Result("the app's log has no errors and no PHI or secrets since the deploy")
    try:
        with log_file.open("rb") as stream:
            stream.seek(since_offset)
            text = stream.read().decode("utf-8", "replace")
    except FileNotFoundError:
        result.add(f"{log_file.name}: not found")
        return result
    errors: list[int] = []
    kinds: Counter[str] = Counter()
    leaks: dict[str, list[int]] = {label: [] for label in LOG_LEAKS}
    for number, line in enumerate(text.splitlines(), 1):
        result.checked += 1
        is_error, kind = _log_error(line)
        if is_error:
            errors.append(number)
            kinds[kind or "unnamed"] += 1
        for label, pattern in LOG_LEAKS.items():
            if pattern.search(line):
                leaks[label].append(number)
    if errors:
        shown = ", ".join(f"{kind} x{n}" for kind, n in kinds.most_common(5))
        result.add(f"{log_file.name}: {len(errors)} error lines after byte {since_offset} ({_lines(errors)};"
                   f" {shown})")
    for label, numbers in leaks.items():
        if numbers:
            result.add(f"{log_file.name}: {len(numbers)} lines hold what looks like {label} ({_lines(numbers)})")
    return result


def maintenance_active(client: httpx.Client, probe_path: str = "/api/patients") -> Result:
    """Maintenance mode is on: the app answers 503 with Retry-After, while health still answers."""
    result = Result("maintenance mode on")
    response = _send(client, "GET", probe_path)
    if response.status_code != 503:
        result.add(f"GET {probe_path}: {response.status_code}, expected 503 in maintenance mode")
    elif not response.headers.get("Retry-After"):
        result.add(f"GET {probe_path}: 503 without a Retry-After header")
    health_status = _send(client, "GET", "/health").status_code
    if health_status != 200:
        result.add(f"GET /health: {health_status} during maintenance, expected 200")
    return result
