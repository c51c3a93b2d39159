"""The configured endpoints: their documented shapes, totals that agree with the rows the database says the
user may see ([api.visibility]), no secrets in answers, latency, and search (section 6; section 8 items 7, 13,
21, 22).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import httpx
import psycopg
from psycopg import sql

from migration_gate.app.client import BCRYPT, CIPHERTEXT, SECRET_KEYS, body_of, fetch, is_int, keys_of
from migration_gate.config import ApiRoute, ApiRules, Endpoint, Probe, Visibility
from migration_gate.core.result import Result

PAGE_LIMIT = 10  # rows asked of paginated endpoints: enough to check the page, cheap to decrypt


RESPONSE_LEAKS = {"PHI ciphertext": CIPHERTEXT, "a bcrypt hash": BCRYPT}


def p95(samples: list[float]) -> float:
    """Nearest-rank 95th percentile (no interpolation: it is one of the measured values)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


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
        if not is_int(count):
            return None, [*wrong, "count is missing or not an integer"]
        if count != len(data):
            wrong.append(f"count {count} differs from the {len(data)} items in data")
        return count, wrong
    page = body.get("pagination")
    keys = ("page", "limit", "total", "totalPages", "hasMore")
    if not isinstance(page, dict) or not all(k in page for k in keys):
        return None, [*wrong, f"pagination lacks some of {', '.join(keys)}"]
    total = page["total"]
    if not all(is_int(page[k]) for k in keys[:4]) or not isinstance(page["hasMore"], bool):
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


def _visible(rule: Visibility, api: ApiRules) -> sql.Composable:
    """The condition on alias t under which the user %(uid)s sees a row of rule.table."""
    own = sql.SQL("t.{} = %(uid)s").format(sql.Identifier(rule.owner))
    if rule.active:
        own = sql.SQL("{} AND t.{}").format(own, sql.Identifier(rule.active))
    if not rule.organization:
        return own
    t = api.memberships
    grants = []
    for right in api.rights:
        role = sql.SQL("m.{} = ANY({})").format(sql.Identifier(t.role_column), sql.Literal(list(right.roles)))
        if right.sees == "all":
            grant = sql.SQL("m.{}").format(sql.Identifier(right.flag)) if right.flag else sql.SQL("true")
        elif right.sees == "own":
            grant = own
        else:
            grant = sql.SQL("m.{} @> jsonb_build_array(t.{})").format(sql.Identifier(right.list),
                                                                      sql.Identifier(rule.owner))
        grants.append(sql.SQL("({} AND {})").format(role, grant))
    return sql.SQL("EXISTS (SELECT 1 FROM {m} m WHERE m.{user} = %(uid)s AND m.{active} AND m.{org} = t.{row_org}"
                   " AND ({grants}))").format(
        m=sql.Identifier(api.schema, t.memberships), user=sql.Identifier(t.membership_user),
        active=sql.Identifier(t.active), org=sql.Identifier(t.membership_organization),
        row_org=sql.Identifier(rule.organization), grants=sql.SQL(" OR ").join(grants) if grants else sql.SQL("false"))


def visible_rows(conn: psycopg.Connection, api: ApiRules, count_table: str, user_id: object,
                 hipaa: bool) -> tuple[int, int] | None:
    """(rows of count_table the user may see, own rows the user may not see); None when the description has no
    rule for this side. Soft-deleted rows count: the app does not filter them and 7-year retention keeps them.
    Own rows hidden only arise under an organization rule (a lost membership or right)."""
    rule = api.visibility.get(count_table, {}).get("new" if hipaa else "legacy")
    if rule is None:
        return None
    visible = _visible(rule, api)
    hidden_own = sql.SQL("count(*) FILTER (WHERE t.{} = %(uid)s AND NOT ({}))").format(
        sql.Identifier(rule.owner), visible) if rule.organization else sql.SQL("0")
    query = sql.SQL("SELECT count(*) FILTER (WHERE {}), {} FROM {} t").format(
        visible, hidden_own, sql.Identifier(api.schema, rule.table))
    return conn.execute(query, {"uid": user_id}).fetchone()


def endpoint_shapes(client: httpx.Client, token: str, api: ApiRules, conn: psycopg.Connection, user_id: object,
                    use_hipaa_schema: bool, endpoints: Iterable[Endpoint] | None = None) -> Result:
    """Each endpoint answers the documented shape, and its total equals the rows of count_table that the user
    may see in the database (item 7). Own rows hidden from their owner are a problem even when the API agrees
    with the rules: a lost membership or can_view_all_patients gives 200 and nothing.
    Endpoints whose count_table has no rule for the legacy side (organizations) are skipped there with a note."""
    result = Result("API endpoints answer the documented shape and the database's counts")
    for endpoint in api.endpoints if endpoints is None else endpoints:
        expected = None
        if endpoint.count_table:
            expected = visible_rows(conn, api, endpoint.count_table, user_id, use_hipaa_schema)
            if expected is None and not use_hipaa_schema and endpoint.count_table in api.visibility:
                result.notes.append(f"{endpoint.path}: skipped on the legacy schema ({endpoint.count_table} "
                                    "has no legacy rule: it does not exist before cut-over)")
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
                       "(inactive membership, or a right such as can_view_all_patients false?)")
        params = {"page": 1, "limit": PAGE_LIMIT} if endpoint.shape == "paginated" else None
        response = fetch(result, client, "GET", endpoint.path, token, params=params)
        if response is None:
            continue
        if response.status_code != 200:
            result.add(f"GET {endpoint.path}: answered {response.status_code} (expected 200)")
            continue
        total, wrong = _shape(body_of(response), endpoint.shape, PAGE_LIMIT)
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
        response = fetch(scratch, client, "GET", endpoint.path, token, params={"limit": 1})
        total = None
        if response is not None and response.status_code == 200:
            total, _ = _shape(body_of(response), endpoint.shape, 1)
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


PASSWORD_KEYS = re.compile(r"^(password|passwordHash|password_hash)$")


def _locations(value: Any, pattern: re.Pattern[str], where: str = "") -> Iterator[str]:
    """The places (data[].therapist.password) where a key matching `pattern` sits in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            place = f"{where}.{key}" if where else str(key)
            if pattern.search(str(key)):
                yield place
            yield from _locations(item, pattern, place)
    elif isinstance(value, list):
        for item in value:
            yield from _locations(item, pattern, f"{where}[]")


def no_secrets_in_responses(client: httpx.Client, token: str, paths: Iterable[str],
                            check: str = "responses carry no ciphertext, search hash or password hash") -> Result:
    """No ...Encrypted / ...SearchHash / password keys, ciphertext or bcrypt hashes in any answer (item 21:
    the real app returns ciphertexts beside the plaintext and the password hash from /api/user, /api/auth/status
    and the users nested in its answers). A password field is named by where it sits (user.password,
    data[].therapist.password), so a nested user is told apart from the top-level record."""
    result = Result(check, unit="responses")
    for path in paths:
        response = fetch(result, client, "GET", path, token, params={"limit": 100})
        if response is None:
            continue
        result.checked += 1
        if response.status_code != 200:
            result.add(f"GET {path}: answered {response.status_code}; could not be examined")
            continue
        body = body_of(response)
        keys = sorted({k for k in keys_of(body) if SECRET_KEYS.search(k)})
        if keys:
            shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
            result.add(f"GET {path}: {len(keys)} secret-bearing keys in the body ({shown})")
        places = Counter(_locations(body, PASSWORD_KEYS))
        if places:
            shown = ", ".join(f"{place}" + (f" x{n}" if n > 1 else "") for place, n in places.most_common(5))
            result.add(f"GET {path}: a password field in what it returns of a user ({shown})")
        for label, pattern in RESPONSE_LEAKS.items():
            hits = len(pattern.findall(response.text))
            if hits:
                result.add(f"GET {path}: {hits} values look like {label}")
    if result.checked == 0 and not result.problems:
        result.notes.append("no routes configured: nothing checked")
    return result


def routes_answer(client: httpx.Client, token: str, routes: Iterable[ApiRoute | str]) -> Result:
    """Every configured authenticated GET answers 2xx with the fixture user's token (a 500 is a broken route, a
    404 a missing one). A route with {id} takes the first record id its ids_from list answers; when there is
    none, the route could not be checked (red, never skipped)."""
    result = Result("every configured route answers 2xx", unit="routes")
    ids: dict[str, str | None] = {}
    for route in routes:
        route = ApiRoute(route) if isinstance(route, str) else route
        path = route.path
        if route.ids_from is not None:
            if route.ids_from not in ids:
                ids[route.ids_from] = _first_id(result, client, token, route.ids_from)
            if ids[route.ids_from] is None:
                result.add(f"GET {route.path}: could not be checked: GET {route.ids_from} gave no record id")
                continue
            path = route.path.replace("{id}", ids[route.ids_from])
        result.checked += 1
        response = fetch(result, client, "GET", path, token)
        if response is not None and not 200 <= response.status_code < 300:
            shown = path if path == route.path else f"{route.path} ({path})"
            result.add(f"GET {shown}: answered {response.status_code} (expected 2xx)")
    if result.checked == 0 and not result.problems:
        result.notes.append("no routes configured ([api] routes): nothing checked")
    return result


def _first_id(result: Result, client: httpx.Client, token: str, path: str) -> str | None:
    response = fetch(result, client, "GET", path, token, params={"limit": 1})
    if response is None or response.status_code != 200:
        return None
    body = body_of(response)
    data = body.get("data") if isinstance(body, dict) else None
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
    return str(first["id"]) if is_int(first.get("id")) else None


def latency_p95(client: httpx.Client, token: str, paths: Iterable[str], samples: int, budget_ms: float) -> Result:
    """Sequential timed GETs per path after one untimed warm-up; p95 over the samples against the budget
    (item 22: the real app loads and decrypts every row on each page). Keep samples x paths under the
    production rate limit (100 requests per 15 min per IP) or disable it for the run."""
    result = Result(f"API p95 latency within {budget_ms:g} ms")
    for path in paths:
        result.checked += 1
        fetch(result, client, "GET", path, token)
        times, statuses = [], Counter()
        for _ in range(samples):
            began = time.perf_counter()
            response = fetch(result, client, "GET", path, token)
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


def search_finds_patient(client: httpx.Client, token: str,
                         on_created: Callable[[int], None] | None = None, probe: Probe | None = None) -> Result:
    """Create a synthetic patient, read it back (its email decrypted as sent), then search its email upper-cased
    and space-padded: exactly that patient comes back (item 13: search hashes must be sha256(lower(trim(plaintext)))
    of what the app stores). probe: the app's routes and body field names ([api.probe]; the loma-org app's by
    default, whose create answer is the stored row, ciphertexts and all, not the decrypted patient).

    This WRITES one patient row (fake name and email, random per run) owned by the token's user: an accepted
    post-migration smoke write on the sandbox or a staging rehearsal, not for a production target.
    """
    probe = probe or Probe()
    result = Result("search by normalised email finds a newly created patient")
    tag = uuid.uuid4().hex[:12]
    email = f"Gate.Probe.{tag}@Example.org"
    body = {probe.name: f"Gate Probe {tag}", probe.email: email, probe.phone: f"555-01{tag[:2]}-{tag[2:6]}"}
    created = fetch(result, client, "POST", probe.create, token, json=body)
    result.checked = 1
    if created is None:
        return result
    answer = body_of(created)
    data = answer.get("data") if isinstance(answer, dict) else None
    patient_id = data.get("id") if isinstance(data, dict) else None
    if created.status_code != 201 or not is_int(patient_id):
        result.add(f"POST {probe.create}: answered {created.status_code} without a new patient id (expected 201)")
        return result
    result.notes.append(f"probe patient id {patient_id} created")
    if on_created is not None:  # the caller notes it as the checks' own write (migration_gate.app.answers)
        on_created(patient_id)
    read = probe.read.replace("{id}", str(patient_id))
    shown = fetch(result, client, "GET", read, token)
    if shown is None:
        return result
    answer = body_of(shown)
    record = answer.get("data") if isinstance(answer, dict) else None
    if shown.status_code != 200 or not isinstance(record, dict):
        result.add(f"GET {read}: answered {shown.status_code} without the probe patient (expected 200)")
    elif record.get(probe.email_field) != email:
        result.add(f"GET {read}: the probe patient's email does not read back as it was sent (field "
                   f"{probe.email_field}; the create body named it {probe.email}: [api.probe])")
    found = fetch(result, client, "POST", probe.search, token, json={probe.term: f"  {email.upper()} "})
    if found is None:
        return result
    if found.status_code != 200:
        result.add(f"POST {probe.search}: answered {found.status_code} (expected 200)")
        return result
    answer = body_of(found)
    rows = answer.get("data") if isinstance(answer, dict) else None
    ids = [row.get("id") for row in rows if isinstance(row, dict)] if isinstance(rows, list) else None
    if ids != [patient_id]:
        shown = "no list" if ids is None else f"{len(ids)} patients"
        result.add(f"POST {probe.search}: the probe patient's email found {shown} (expected exactly"
                   f" patient {patient_id})")
    return result
