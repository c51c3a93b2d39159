"""Login and tokens: the fixture user logs in, the token names the right user, forged or missing tokens are
refused, and the real app's unauthenticated debug routes are closed (target-app.md section 8, items 18, 19, 21).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import jwt
import psycopg
from psycopg import sql

from migration_gate.app.client import BCRYPT, COOKIE, body_of, fetch
from migration_gate.app.logsource import utc_now
from migration_gate.app.ownrequests import OwnRequest
from migration_gate.config import UserTable
from migration_gate.core.result import Result

# Unauthenticated debug routes of the real app (target-app.md section 6); all must be gone in production.
# POST /api/auth/test-insert is left out on purpose: asking it would insert a user.
DEBUG_PATHS = ("/api/auth-test", "/api/debug-jwt", "/api/auth/test", "/api/db-diagnostic/session-tables",
               "/api/test/schema", "/api/test/health", "/api/diagnostic/database")


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


def login_works(client: httpx.Client, username: str, password: str, conn: psycopg.Connection | None = None,
                users: UserTable | None = None, probe_path: str = "/api/patients") -> Result:
    """Login answers 200 with a safe cookie naming the right user, a wrong password is refused, and the token
    works as a Bearer token (item 18: non-bcrypt hashes cannot log in; a token can name the wrong user id).

    With conn, also: the id in the body and the token is the key of that username in the users table
    ([api.users]), the account is active and the stored hash is bcrypt.
    """
    result = Result("the fixture user can log in and the token works")
    response = fetch(result, client, "POST", "/api/login", json={"username": username, "password": password})
    result.checked = 1
    client.cookies.delete(COOKIE)
    if response is not None and response.status_code != 200:
        result.add(f"POST /api/login: answered {response.status_code} for the fixture user (expected 200)")
    if response is None or response.status_code != 200:
        if conn is not None:
            _login_matches_db(result, conn, users, username, None)
        return result
    body = body_of(response)
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
        _login_matches_db(result, conn, users, username, body_id)
    wrong = fetch(result, client, "POST", "/api/login", json={"username": username, "password": password + "-x"})
    if wrong is not None and (wrong.status_code != 401 or COOKIE in wrong.cookies):
        result.add(f"POST /api/login: a wrong password answered {wrong.status_code} (expected 401, no cookie)")
    client.cookies.delete(COOKIE)
    if token:
        probe = fetch(result, client, "GET", probe_path, token, params={"limit": 1})
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


def _login_matches_db(result: Result, conn: psycopg.Connection, users: UserTable | None, username: str,
                      body_id: Any) -> None:
    if users is None:
        result.add("the description has no [api] users table: the login cannot be matched with the database")
        return
    status = sql.Identifier(users.status) if users.status else sql.Literal(users.active_value)
    row = conn.execute(sql.SQL("SELECT {key}, {status}, {password} ~ '^\\$2[aby]\\$\\d\\d\\$' FROM {table}"
                               " WHERE {username} = %s").format(
        key=sql.Identifier(users.key), status=status, password=sql.Identifier(users.password),
        table=sql.Identifier(users.schema, users.table), username=sql.Identifier(users.username)),
        (username,)).fetchone()
    where = users.table
    if row is None:
        result.add(f"{where}: the fixture user is not in the database the app uses")
        return
    user_id, status_value, bcrypt_hash = row
    if body_id is not None and body_id != user_id:
        result.add(f"POST /api/login: the body's id is not the {where} {users.key} ({user_id}) of the fixture user")
    if status_value != users.active_value:
        result.add(f"{where}: the fixture user ({users.key} {user_id}) is not {users.active_value}")
    if not bcrypt_hash:
        result.add(f"{where}: the fixture user's ({users.key} {user_id}) password is not a bcrypt hash")


def protected_routes(client: httpx.Client, token: str, paths: Iterable[str],
                     on_bad_request: Callable[[OwnRequest], None] | None = None) -> Result:
    """Each path answers 401 without a token and with a forged one, and 200 with the real token (item 19).
    A 500 is always a problem: it means the route broke, not that it refused. Each deliberate bad request (no
    token, a forged one) is handed to `on_bad_request` once answered (migration_gate.app.ownrequests: the app's log
    lines about them are then not held against it)."""
    result = Result("protected routes refuse missing and forged tokens and accept the real one")
    forged = forged_tokens(token)
    for path in paths:
        result.checked += 1
        attempts = [("without a token", None), *((label, value) for label, value in forged.items()),
                    ("with the Bearer token", token)]
        for label, value in attempts:
            started = utc_now()
            response = fetch(result, client, "GET", path, value)
            if value != token and on_bad_request is not None:
                on_bad_request(OwnRequest("no token" if value is None else "forged token", "GET", path, started,
                                          utc_now()))
            if response is None:
                continue
            expected = 200 if value == token else 401
            if response.status_code != expected:
                result.add(f"GET {path}: answered {response.status_code} {label} (expected {expected})")
    return result


# What a closed route answers without a token: refused, not found, or not served for GET.
CLOSED = (401, 403, 404, 405, 410)


def debug_endpoints_closed(client: httpx.Client, paths: Iterable[str] = DEBUG_PATHS) -> Result:
    """The real app's unauthenticated debug routes must not answer without a token (item 21). Only GETs are sent.
    Closed is 401, 403, 404 (or 405, 410); a 2xx is open; a 5xx means the route exists and runs, failing, for
    anyone (not closed); any other answer (a redirect, a rate limit) does not show it closed."""
    result = Result("unauthenticated debug endpoints are closed", unit="routes")
    for path in paths:
        result.checked += 1
        response = fetch(result, client, "GET", path)
        if response is None:
            continue
        status = response.status_code
        if 200 <= status < 300:
            result.add(f"GET {path}: answered {status} without a token: the debug route is open (expected 401, "
                       "403 or 404)")
        elif status >= 500:
            result.add(f"GET {path}: answered {status} without a token: the debug route exists and runs for anyone"
                       " (expected 401, 403 or 404)")
        elif status not in CLOSED:
            result.add(f"GET {path}: answered {status} without a token: not shown to be closed (expected 401, "
                       "403 or 404)")
    if result.checked == 0:
        result.notes.append("no debug routes configured ([api] debug_routes): nothing checked")
    return result
