"""PHI reads leave audit rows: the append-only audit table ([api.audit]) gains rows for the caller, with the
read's resource type and a retention date (section 8 item 20)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx
import psycopg
from psycopg import sql

from migration_gate.app.client import fetch
from migration_gate.config import AuditTable
from migration_gate.core.result import Result

AUDIT_WAIT_S = 2.0  # the app writes audit rows "non-blocking": give them a moment to land


RETENTION_SLACK = "2 days"  # the retention date ~ now + the period, whatever the app's and our time zones


def _audit_counts(conn: psycopg.Connection, audit: AuditTable, user_id: object,
                  resource_type: str) -> tuple[int, int]:
    """(the user's audit rows, of them with this resource_type and a retention date ~ now + the period)."""
    retained = sql.SQL("true")
    if audit.retention:
        retained = sql.SQL("{r} IS NOT NULL AND abs(extract(epoch FROM {r} - (now() + {period}::interval)))"
                           " < extract(epoch FROM {slack}::interval)").format(
            r=sql.Identifier(audit.retention), period=sql.Literal(audit.retention_period),
            slack=sql.Literal(RETENTION_SLACK))
    query = sql.SQL("SELECT count(*), count(*) FILTER (WHERE {kind} = %s AND {retained}) FROM {table}"
                    " WHERE {user} = %s").format(
        kind=sql.Identifier(audit.resource_type), retained=retained, table=sql.Identifier(audit.schema, audit.table),
        user=sql.Identifier(audit.user))
    return conn.execute(query, (resource_type, user_id)).fetchone()


def audit_rows_written(client: httpx.Client, token: str, conn: psycopg.Connection, user_id: object,
                       audited: Mapping[str, str], audit: AuditTable | None, wait_s: float = AUDIT_WAIT_S) -> Result:
    """Reading PHI writes at least 2 rows to the audit table for the caller, with the path's resource_type and
    a retention date (item 20: a missing id default makes every audit insert fail, silently)."""
    result = Result("PHI reads write audit rows", unit="PHI reads")
    if audit is None:
        result.add("the description has no [api] audit table: audit rows of PHI reads cannot be checked")
        return result
    for path, resource_type in audited.items():
        result.checked += 1
        all_before, good_before = _audit_counts(conn, audit, user_id, resource_type)
        response = fetch(result, client, "GET", path, token, params={"limit": 1})
        if response is None:
            continue
        if response.status_code != 200:
            result.add(f"GET {path}: answered {response.status_code} (expected 200)")
        deadline = time.monotonic() + wait_s
        while True:
            all_after, good_after = _audit_counts(conn, audit, user_id, resource_type)
            if good_after - good_before >= 2 or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if good_after - good_before < 2:
            kept = f" and a {audit.retention_period} retention date" if audit.retention else ""
            result.add(f"{audit.table}: GET {path} added {good_after - good_before} rows for user {user_id} with"
                       f" resource_type {resource_type}{kept} (expected at least 2; {all_after - all_before} rows"
                       " of any kind)")
    return result
