"""The app's own health report (database, schema, encryption, the USE_HIPAA_SCHEMA flag) and maintenance mode."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from migration_gate.app.client import body_of, fetch, send
from migration_gate.core.result import Result

SAFE_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")  # a commit hash or a version: safe to record


def health(client: httpx.Client, expect_hipaa: bool) -> Result:
    """GET /health is 200 and ok with the DB connected, the schema valid, encryption valid and the schema flag
    the deploy should have set (a deploy with the wrong USE_HIPAA_SCHEMA is caught here, before any data)."""
    result = Result("GET /health is ok with the expected schema flag")
    response = fetch(result, client, "GET", "/health")
    result.checked = 1
    if response is not None:
        body = body_of(response)
        if response.status_code != 200:
            result.add(f"/health: answered {response.status_code} (expected 200)")
        if not isinstance(body, dict):
            result.add("/health: the body is not a JSON object")
        else:
            _health_body(result, body, expect_hipaa)
    api = fetch(Result("ignored"), client, "GET", "/api/health")
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


def maintenance_active(client: httpx.Client, probe_path: str = "/api/patients") -> Result:
    """Maintenance mode is on: the app answers 503 with Retry-After, while health still answers."""
    result = Result("maintenance mode on")
    response = send(client, "GET", probe_path)
    if response.status_code != 503:
        result.add(f"GET {probe_path}: {response.status_code}, expected 503 in maintenance mode")
    elif not response.headers.get("Retry-After"):
        result.add(f"GET {probe_path}: 503 without a Retry-After header")
    health_status = send(client, "GET", "/health").status_code
    if health_status != 200:
        result.add(f"GET /health: {health_status} during maintenance, expected 200")
    return result



def app_version(client: httpx.Client) -> str | None:
    """The build the app says it runs: GET /api/status's commit (the real app), else a version in /health."""
    for path, keys in (("/api/status", ("commit", "version")), ("/health", ("version", "commit"))):
        try:
            body = body_of(send(client, "GET", path))
        except httpx.HTTPError:
            continue
        if isinstance(body, dict):
            for key in keys:
                value = body.get(key)
                if isinstance(value, str) and SAFE_VERSION.match(value):
                    return value
    return None


def wait_for_schema(client: httpx.Client, expect_hipaa: bool, timeout_s: float,
                    on_wait: Callable[[float, str], None] | None = None, interval_s: float = 2.0) -> Result:
    """After a deploy: poll /health until the app answers ok with the expected schema flag, or time out. A host
    takes a while to build and swap instances; checking once right after the hook would judge the old one."""
    began = time.monotonic()
    last = "no answer"
    polls = 0
    while True:
        result = health(client, expect_hipaa)
        if result.ok:
            result.notes.append(f"the app reported the expected schema after {time.monotonic() - began:.0f} s")
            return result
        last = result.problems[0] if result.problems else last
        waited = time.monotonic() - began
        if waited >= timeout_s:
            flag = "true" if expect_hipaa else "false"
            result.problems.insert(0, f"the app did not report useHipaaSchema {flag} and status ok within "
                                      f"{timeout_s:g} s of the deploy (last: {last})")
            return result
        if on_wait:
            on_wait(waited, last)
        # ask again soon, then less often: a local restart answers in a moment, a host's build takes minutes
        time.sleep(min(interval_s, 0.25 * 2 ** polls, max(0.1, timeout_s - waited)))
        polls += 1
