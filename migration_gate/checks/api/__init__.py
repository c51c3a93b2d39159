"""The deployed app over HTTP, one module per concern: ``client`` (requests and leak patterns), ``auth`` (login,
tokens, protected and debug routes), ``health`` (the app's health report, maintenance mode), ``endpoints``
(shapes, counts against the database's visibility rule, secrets in answers, latency, search), ``audit`` (audit
rows of PHI reads) and ``logs`` (the app's log).

Every check takes an ``httpx.Client`` the caller owns (``base_url`` set) and a token from ``login``. Problems
name paths, statuses, counts and row ids, never response values, tokens, usernames or passwords. Database
connections should be autocommit (each count must see fresh rows). The names below are the checks' API.
"""

from migration_gate.app.client import SECRET_KEYS, login
from migration_gate.checks.api.audit import audit_rows_written
from migration_gate.checks.api.auth import (
    DEBUG_PATHS,
    debug_endpoints_closed,
    forged_tokens,
    login_works,
    protected_routes,
)
from migration_gate.checks.api.endpoints import (
    endpoint_shapes,
    latency_p95,
    no_secrets_in_responses,
    p95,
    routes_answer,
    search_finds_patient,
    totals,
    totals_unchanged,
    visible_rows,
)
from migration_gate.checks.api.health import app_version, health, maintenance_active, wait_for_schema
from migration_gate.checks.api.logs import log_clean, log_offset, logs_clean

__all__ = ["DEBUG_PATHS", "SECRET_KEYS", "app_version", "audit_rows_written", "debug_endpoints_closed",
           "endpoint_shapes", "forged_tokens", "health", "latency_p95", "log_clean", "log_offset", "login",
           "login_works", "logs_clean", "maintenance_active", "no_secrets_in_responses", "p95", "protected_routes",
           "routes_answer", "search_finds_patient", "totals", "totals_unchanged", "visible_rows", "wait_for_schema"]
