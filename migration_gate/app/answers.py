"""The app gives the same answers before and after the cut-over (issue 13 item 5).

Shapes and counts (POST-09) say little about whether a patient still reads back as it did: a new API that drops a
field, or returns another patient's session for one record, passes them. So the pre-checks record, for each
configured login ([answers] logins), the answers of a configured set of read requests ([answers] requests) on the
legacy app, and the post-checks send the same requests to the new schema and compare them record by record.

Nothing readable is kept: each record's JSON is normalized (field renames of the new API applied, volatile fields
dropped, keys sorted, numbers and timestamps in one canonical form) and reduced to a keyed digest per field and one
for the whole record, HMAC-SHA256 under a key derived from the PHI key and a random nonce of the recording. A plain
hash of a short value (a date of birth) could be brute-forced from the file; this one cannot without the PHI key.
The recording (<run>/answers/<name>.json) holds request paths, record ids, field names and digests, and the
differences name the endpoint, the record id and the field: never a value, a username or a password.

The records the checks write themselves (the post-checks' probe patient) are noted in <run>/answers/own_writes.json
and left out of the comparison by id.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx

from migration_gate.app.client import body_of, send
from migration_gate.app.client import login as api_login
from migration_gate.config import AnswerLogin, AnswerRequest, AnswersConfig
from migration_gate.config.environment import variables
from migration_gate.core import rundir
from migration_gate.core.errors import MigrationGateError
from migration_gate.core.phi import derived_key
from migration_gate.core.result import Result

FOLDER = rundir.ANSWERS
OWN_WRITES = "own_writes.json"
MAINTENANCE = "maintenance"  # recorded by the gate once maintenance is on, before the dump
BEFORE = (MAINTENANCE, "premigration")  # the recordings the post-checks compare with, the newest first
TIMEOUT_S = 15.0
SHOWN = 50  # problem lines per check; the rest are counted
DECIMAL = re.compile(r"-?\d+\.\d+")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d(:?\d\d)?)?")


class AnswersError(MigrationGateError):
    """A recording cannot be made or read; the message names the file or the variable, never a value."""


# -- normalizing and digesting --------------------------------------------------------------------------------------


def canonical(value: Any) -> Any:
    """One form per meaning: numbers (and decimal strings, as node-postgres returns numeric) as normalized decimal
    strings, timestamps in UTC without an offset (a naive one is taken as UTC), nested keys sorted."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return _decimal(str(value))
    if isinstance(value, str):
        if DECIMAL.fullmatch(value):
            return _decimal(value)
        if TIMESTAMP.fullmatch(value):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return value
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC).replace(tzinfo=None)
            return moment.isoformat()
        return value
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return str(value)


def _decimal(text: str) -> str:
    try:
        number = Decimal(text).normalize()
    except InvalidOperation:
        return text
    return "0" if number.is_zero() else format(number, "f")


class Digester:
    """Keyed digests: HMAC-SHA256 under a key derived from the PHI key and the recording's nonce."""

    def __init__(self, phi_key: str | bytes, nonce: str) -> None:
        self.nonce = nonce
        self._key = derived_key(phi_key, b"migration-gate answers " + nonce.encode())

    def __call__(self, value: Any) -> str:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]


def matches(name: str, patterns: Iterable[str]) -> bool:
    """A field named by one of the patterns: an exact name, or a shell pattern ("*Encrypted", "therapist.*")."""
    return any(name == pattern or fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def normalize(record: Mapping[str, Any], settings: AnswersConfig, legacy: bool) -> dict[str, Any]:
    """The record's fields by the new API's names (renames on the legacy side), the ignored ones left out; a nested
    object named in [answers] nested becomes its own dotted fields (patient.name), each compared by itself."""
    out: dict[str, Any] = {}
    for name, value in record.items():
        name = settings.renames.get(name, name) if legacy else name
        if matches(name, settings.ignore):
            continue
        if name in settings.nested and isinstance(value, Mapping):
            for inner, inner_value in normalize(value, settings, legacy).items():
                dotted = f"{name}.{inner}"
                if not matches(dotted, settings.ignore):
                    out[dotted] = inner_value
        else:
            out[name] = canonical(value)
    return out


def digest_record(record: Mapping[str, Any], digest: Digester) -> dict[str, Any]:
    return {"record": digest(record), "fields": {name: digest(value) for name, value in sorted(record.items())}}


# -- recording ------------------------------------------------------------------------------------------------------


@dataclass
class Call:
    """One request's answer as recorded: its status, its records' digests by id, whether every page was read."""

    status: int | str
    records: dict[str, dict[str, Any]]
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "complete": self.complete, "records": self.records}


def _records_at(body: Any, where: str) -> list[Any] | None:
    for part in where.split(".") if where else []:
        body = body.get(part) if isinstance(body, dict) else None
    if isinstance(body, dict):
        return [body]
    return body if isinstance(body, list) else None


def _get(client: httpx.Client, token: str, path: str, params: dict[str, int] | None = None) -> tuple[int | str, Any]:
    try:
        response = send(client, "GET", path, token, params=params)
    except httpx.HTTPError as exc:
        return f"no answer ({type(exc).__name__})", None
    return response.status_code, body_of(response) if response.status_code == 200 else None


def _call(client: httpx.Client, token: str, path: str, request: AnswerRequest, settings: AnswersConfig,
          digest: Digester, legacy: bool) -> Call:
    """One request (every page of a paginated one, up to max_pages) reduced to digests per record id."""
    call = Call(status=200, records={})
    pages = settings.max_pages if request.paginated else 1
    for page in range(1, pages + 1):
        params = {"page": page, "limit": settings.page_size} if request.paginated else None
        status, body = _get(client, token, path, params)
        records = _records_at(body, request.records) if status == 200 else None
        if records is None:
            call.status = status if status != 200 else "200 without records"
            return call
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                continue
            rid = str(record.get(request.id, f"#{(page - 1) * settings.page_size + index}"))
            call.records[rid] = digest_record(normalize(record, settings, legacy), digest)
        if not request.paginated or len(records) < settings.page_size:
            return call
    call.complete = False
    return call


def sample_ids(ids: list[str], count: int) -> list[str]:
    """At most count ids spread evenly over the list (all when count is 0): the same ones on every run."""
    if count == 0 or len(ids) <= count:
        return ids
    step = len(ids) / count
    return [ids[int(i * step)] for i in range(count)]


def credentials(login: AnswerLogin, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The login's username and password from the environment; a missing variable is named, never its value."""
    env = variables() if env is None else env
    username = login.username or env.get(login.username_env)
    password = env.get(login.password_env)
    if not username:
        raise AnswersError(f"{login.username_env} is not set: [answers] logins names it for a username")
    if not password:
        raise AnswersError(f"{login.password_env} is not set: [answers] logins names it for a password")
    return username, password


def environment(username: str, password: str) -> dict[str, str]:
    """The process environment with the gate's own login in the default variables ([answers] logins' default),
    as the phase fixtures know it even when the sandbox, not the environment, supplied it."""
    return {**variables(), "GATE_API_USERNAME": username, "GATE_API_PASSWORD": password}


def login_label(index: int, login: AnswerLogin) -> str:
    return f"login {index + 1} ({login.password_env})"


def record(client: httpx.Client, settings: AnswersConfig, logins: Iterable[tuple[str, str]], phi_key: str | bytes,
           legacy: bool, ids: Mapping[str, Mapping[str, list[str]]] | None = None,
           nonce: str | None = None) -> dict[str, Any]:
    """Every configured request for every login, as digests. ids: per login label, per request path, the ids
    to request a {id} path with, and nonce: the key's (the post-checks pass the recording's, so both sides ask the
    same and their digests compare); else sampled from the ids_from request's records, under a fresh nonce."""
    digest = Digester(phi_key, nonce or secrets.token_hex(16))
    recording: dict[str, Any] = {"version": 1, "nonce": digest.nonce, "schema": "legacy" if legacy else "new",
                                 "taken_at": datetime.now(UTC).isoformat(timespec="seconds"), "logins": {}}
    for index, (login, (username, password)) in enumerate(zip(settings.logins, logins, strict=True)):
        label = login_label(index, login)
        entry: dict[str, Any] = {"requests": {}}
        recording["logins"][label] = entry
        try:
            token = api_login(client, username, password)
        except Exception as exc:  # noqa: BLE001 - reported by class name: the login's text may echo the input
            entry["error"] = f"login failed ({type(exc).__name__})"
            continue
        for request in settings.requests:
            calls: dict[str, Any] = {}
            if not (legacy or request.on_new):
                continue  # the new app has no such route ([answers] new_path = false)
            route = request.path if legacy else request.new_path or request.path
            if request.ids_from is None:
                calls[""] = _call(client, token, route, request, settings, digest, legacy).to_json()
            else:
                chosen = (ids or {}).get(label, {}).get(request.path)
                if chosen is None:
                    source = entry["requests"].get(request.ids_from, {}).get("calls", {})
                    chosen = sample_ids([rid for call in source.values() for rid in call["records"]],
                                        settings.sample)
                for rid in chosen:
                    path = route.replace("{id}", rid)
                    calls[rid] = _call(client, token, path, request, settings, digest, legacy).to_json()
            entry["requests"][request.path] = {"calls": calls}
    return recording


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / FOLDER


def save(recording: dict[str, Any], run_dir: Path, name: str) -> Path:
    """<run>/answers/<name>.json, written atomically, readable by its owner only."""
    path = folder(run_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(recording, indent=1, sort_keys=True))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def load(run_dir: Path, name: str) -> dict[str, Any] | None:
    path = folder(run_dir) / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise AnswersError(f"{FOLDER}/{path.name} cannot be read") from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise AnswersError(f"{FOLDER}/{path.name} is not a recording of the app's answers")
    return data


def latest_before(run_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """The newest recording on the legacy app: the one the gate made in maintenance (nothing written since), else
    the pre-checks'."""
    for name in BEFORE:
        found = load(run_dir, name)
        if found is not None and not _unanswered(found):
            return name, found
    return None


def _unanswered(recording: Mapping[str, Any]) -> bool:
    """A recording with a login that failed or a request not answered 200 (the app in maintenance without the
    bypass...): no baseline to compare with."""
    return any(entry.get("error") or any(c["status"] != 200 for request in entry["requests"].values()
                                         for c in request["calls"].values())
               for entry in recording["logins"].values())


def note_own_write(run_dir: Path, path: str, record_id: object) -> None:
    """A record the checks wrote (e.g. the probe patient, in the answers of path): left out of the comparison."""
    file = folder(run_dir) / OWN_WRITES
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        noted = json.loads(file.read_text())
    except (OSError, ValueError):
        noted = []
    noted.append({"path": path, "id": str(record_id)})
    file.write_text(json.dumps(noted, indent=1))
    file.chmod(0o600)


def own_writes(run_dir: Path) -> dict[str, set[str]]:
    """The ids the checks wrote, per request path."""
    try:
        noted = json.loads((folder(run_dir) / OWN_WRITES).read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, set[str]] = {}
    for item in noted if isinstance(noted, list) else []:
        if isinstance(item, dict):
            found.setdefault(str(item.get("path")), set()).add(str(item.get("id")))
    return found


# -- comparing ------------------------------------------------------------------------------------------------------


def _compare_call(result: Result, where: str, before: Mapping[str, Any], after: Mapping[str, Any],
                  settings: AnswersConfig, excluded: set[str], null: str | None = None) -> None:
    if before["status"] != 200:
        result.notes.append(f"GET {where}: answered {before['status']} before the cut-over: not compared")
        return
    if after["status"] != 200:
        result.add(f"GET {where}: answered {after['status']} (before: 200)")
        return
    old, new = before["records"], after["records"]
    for rid, was in old.items():
        if rid in excluded:
            continue
        now = new.get(rid)
        if now is None:
            if after["complete"]:
                result.add(f"GET {where} record {rid}: missing")
            continue
        result.checked += 1
        if was["record"] == now["record"]:
            continue
        fields_before, fields_after = described(was["fields"], settings, True), described(now["fields"], settings)
        for name in sorted(set(fields_before) | set(fields_after)):
            if name not in fields_after:
                if null is None or fields_before[name] != null:  # absent equals null ([answers] absent_equals_null)
                    result.add(f"GET {where} record {rid}: field {name} missing")
            elif name not in fields_before:
                if (null is None or fields_after[name] != null) and not matches(name, settings.added):
                    result.add(f"GET {where} record {rid}: field {name} appears that was not there before")
            elif fields_before[name] != fields_after[name]:
                result.add(f"GET {where} record {rid}: field {name} differs")
    if before["complete"]:
        for rid in sorted(set(new) - set(old) - excluded, key=_id_order):
            result.add(f"GET {where} record {rid}: appears that was not there before")
    if not (before["complete"] and after["complete"]):
        result.notes.append(f"GET {where}: more than {settings.max_pages} pages: records beyond them not compared")


def described(fields: Mapping[str, str], settings: AnswersConfig, legacy: bool = False) -> dict[str, str]:
    """A recording's field digests under the description as it is now: renames (on the legacy side) and ignore
    applied to the field names again, so a recording made before the description changed still compares (a
    digest is of the value alone; names are kept in the clear)."""
    out = {}
    for name, value in fields.items():
        name = settings.renames.get(name, name) if legacy else name
        if not matches(name, settings.ignore):
            out[name] = value
    return out


def _id_order(rid: str) -> tuple[int, int | str]:
    return (0, int(rid)) if rid.isdigit() else (1, rid)


def compare(before: Mapping[str, Any], after: Mapping[str, Any], settings: AnswersConfig,
            own: Mapping[str, set[str]] | None = None, null: str | None = None) -> Result:
    """Record by record: a record missing or appearing, a field missing, appearing (unless [answers] added names
    it) or with another digest is a problem naming the endpoint (the new app's route), the record id and the
    field. null: the digest of null under the recordings' key, when a field left out on one side equals null on
    the other. The checks' own writes (own: ids per request path) are left out, from that path and from the {id}
    requests drawn from it. A request the new app has no route for (new_path = false) is noted, not compared."""
    result = Result("the app gives the same answers as before the cut-over", unit="records")
    own = own or {}
    if before["nonce"] != after["nonce"]:  # digests under two keys never match: every field would "differ"
        result.add("the two recordings were digested under different keys: not comparable")
        return result
    for label, was in before["logins"].items():
        now = after["logins"].get(label)
        if was.get("error"):
            result.add(f"{label}: {was['error']} before the cut-over: nothing recorded to compare")
            continue
        if now is None or now.get("error"):
            result.add(f"{label}: {now.get('error') if now else 'not requested'} after the cut-over")
            continue
        for path, request in was["requests"].items():
            spec = next((r for r in settings.requests if r.path == path), None)
            if spec is not None and not spec.on_new:
                result.notes.append(f"{label}: GET {path}: the new app has no such route ([answers] new_path = "
                                    f"false): {len(request['calls'])} request(s) recorded before, not compared")
                continue
            route = spec.new_path or path if spec else path
            excluded = own.get(path, set())
            drawn = own.get(spec.ids_from, set()) if spec and spec.ids_from else set()
            calls_after = now["requests"].get(path, {}).get("calls", {})
            for rid, call in request["calls"].items():
                if rid in drawn:
                    continue
                where = route.replace("{id}", rid) if rid else route
                if rid not in calls_after:
                    result.add(f"GET {where}: not requested after the cut-over")
                    continue
                _compare_call(result, where, call, calls_after[rid], settings, excluded, null)
    result.problems[:] = fold(result.problems)
    if len(result.problems) > SHOWN:
        more = len(result.problems) - SHOWN
        result.problems[SHOWN:] = [f"... and {more} more differences"]
    return result


RECORD = re.compile(r"^GET (?P<path>\S+) record (?P<id>\S+): (?P<what>.*)$")
FOLD_AFTER = 3  # lines kept per endpoint and kind of difference; the rest are counted in one line


def fold(problems: list[str]) -> list[str]:
    """The same difference in many records (a field dropped from every patient) is named for the first few
    records, then counted: "GET /api/patients/{id} record ...: field patientDob missing in 17 more records"."""
    seen: dict[tuple[str, str], int] = {}
    kept: list[str] = []
    for line in problems:
        match = RECORD.match(line)
        if match is None:
            kept.append(line)
            continue
        key = (re.sub(r"/\d+(?=/|$)", "/{id}", match["path"]), match["what"])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= FOLD_AFTER:
            kept.append(line)
    for (path, what), count in seen.items():
        if count > FOLD_AFTER:
            kept.append(f"GET {path} record ...: {what} in {count - FOLD_AFTER} more records")
    return kept


def ids_of(recording: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Per login, per {id} request, the ids the recording asked for: the other side asks for the same."""
    return {label: {path: list(request["calls"]) for path, request in entry.get("requests", {}).items()
                    if "{id}" in path}
            for label, entry in recording["logins"].items()}


# -- the phases' parts ----------------------------------------------------------------------------------------------


def record_before(client: httpx.Client, settings: AnswersConfig, phi_key: str | bytes, run_dir: Path, name: str,
                  env: Mapping[str, str] | None = None) -> Result:
    """The pre-checks' part, and the gate's once maintenance is on: record the legacy app's answers as
    <run>/answers/<name>.json. The one in maintenance (just before the dump) is the one the post-checks use."""
    result = Result("the app's answers recorded on the legacy schema", unit="records")
    if not settings.requests:
        result.notes.append("[answers] lists no requests: nothing recorded")
        return result
    try:
        logins = [credentials(login, env) for login in settings.logins]
    except AnswersError as exc:
        result.add(str(exc))
        return result
    recording = record(client, settings, logins, phi_key, legacy=True)
    path = save(recording, run_dir, name)
    for label, entry in recording["logins"].items():
        if entry.get("error"):
            result.add(f"{label}: {entry['error']}")
            continue
        for request_path, request in entry["requests"].items():
            calls = request["calls"]
            records = sum(len(c["records"]) for c in calls.values())
            result.checked += records
            failed = [rid for rid, c in calls.items() if c["status"] != 200]
            result.notes.append(f"{label}: GET {request_path}: {len(calls)} request(s), {records} records"
                                + (f", {len(failed)} not answered 200" if failed else ""))
            if failed:  # a request the legacy app does not answer proves nothing after the cut-over
                result.add(f"{label}: GET {request_path}: {len(failed)} request(s) not answered 200 (first: "
                           f"{calls[failed[0]]['status']})")
            elif not records and "{id}" not in request_path:
                result.add(f"{label}: GET {request_path}: no records recorded, nothing to compare after the cut-over")
    result.notes.insert(0, f"recorded in {FOLDER}/{path.name}: digests only")
    return result


def check_after(client: httpx.Client, settings: AnswersConfig, phi_key: str | bytes, run_dir: Path,
                env: Mapping[str, str] | None = None, name: str = "postmigration") -> Result:
    """The post-checks' part: the same requests (the same ids) on the new schema, recorded as <name>.json under
    the recording's key, compared per record with the newest legacy recording."""
    if not settings.requests:
        result = Result("the app gives the same answers as before the cut-over")
        result.notes.append("[answers] lists no requests: nothing compared")
        return result
    try:
        found = latest_before(run_dir)
        logins = [credentials(login, env) for login in settings.logins]
    except AnswersError as exc:
        result = Result("the app gives the same answers as before the cut-over")
        result.add(str(exc))
        return result
    if found is None:
        result = Result("the app gives the same answers as before the cut-over")
        result.add(f"no recording of the legacy app's answers in {FOLDER}/ (the pre-checks record it): nothing to "
                   "compare with")
        return result
    source, before = found
    after = record(client, settings, logins, phi_key, legacy=False, ids=ids_of(before), nonce=before["nonce"])
    save(after, run_dir, name)
    null = Digester(phi_key, before["nonce"])(None) if settings.absent_equals_null else None
    result = compare(before, after, settings, own_writes(run_dir), null)
    result.notes.insert(0, f"compared with {FOLDER}/{source}.json ({before['taken_at']}); recorded in "
                           f"{FOLDER}/{name}.json")
    return result
