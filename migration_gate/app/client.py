"""Requests to the deployed app with exactly the credentials a check names, and what must never appear in what
comes back (ciphertext, hashes, tokens).

Cookies the client holds are stripped from every request; a token goes in an ``Authorization: Bearer`` header.
A transport failure becomes a problem naming the request (class name only), never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from migration_gate.core.result import CheckFailed, Result

COOKIE = "auth_token"


# What must never be in a response body or a log line, by description.
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


CIPHERTEXT = re.compile(r"\bv[12]:[0-9a-f]{32}:[0-9a-f]{32}:")


HEX64 = re.compile(r"\b[0-9a-fA-F]{64}\b")


SECRET_KEYS = re.compile(r"(Encrypted|SearchHash|_encrypted|_search_hash)$|^(password|passwordHash|password_hash)$")


DEFAULT_TIMEOUT = 15.0


def http_client(base_url: str, *, headers: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT,
                event_hooks: Mapping[str, Sequence[Callable[..., Any]]] | None = None) -> httpx.Client:
    """The one way the gate builds a client for the app: base URL, the headers the description adds (the edge's
    or the API's), one timeout; the caller owns it (``with http_client(...) as client``)."""
    return httpx.Client(base_url=base_url, headers=dict(headers or {}), timeout=timeout,
                        event_hooks={k: list(v) for k, v in (event_hooks or {}).items()})


def send(client: httpx.Client, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    """One request with exactly the credentials given: the client's cookies are not sent."""
    request = client.build_request(method, path, **kwargs)
    request.headers.pop("Cookie", None)
    request.headers["Accept"] = "application/json"
    if token is not None:
        request.headers["Authorization"] = f"Bearer {token}"
    return client.send(request)


def fetch(result: Result, client: httpx.Client, method: str, path: str, token: str | None = None,
           **kwargs: Any) -> httpx.Response | None:
    """send, with a transport failure recorded as a problem (class name only) instead of raised."""
    try:
        return send(client, method, path, token, **kwargs)
    except httpx.HTTPError as exc:
        result.add(f"{method} {path}: no answer ({type(exc).__name__})")
        return None


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def keys_of(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from keys_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_of(item)


def is_int(value: Any) -> bool:
    return type(value) is int


def login(client: httpx.Client, username: str, password: str) -> str:
    """The fixture user's JWT (the auth_token cookie, or a token field in the body).

    The cookie is removed from the client again, so later checks send only the credentials they name.
    Raises CheckFailed with a generic message: the other API checks cannot run without a token.
    """
    try:
        response = send(client, "POST", "/api/login", json={"username": username, "password": password})
    except httpx.HTTPError as exc:
        raise CheckFailed(f"login as the fixture user failed: no answer ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise CheckFailed(f"login as the fixture user failed: {response.status_code}")
    token = response.cookies.get(COOKIE)
    body = body_of(response)
    if not token and isinstance(body, dict) and isinstance(body.get("token"), str):
        token = body["token"]
    client.cookies.delete(COOKIE)
    if not token:
        raise CheckFailed(f"login as the fixture user answered 200 without an {COOKIE} cookie or token")
    return token
