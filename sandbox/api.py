"""The reference API: a small, real HTTP server that behaves like the app's PHI routes (target-app.md section 6).

It exists so the gate can test a deployed application before and after cut-over: the same process serves the
legacy tables (``USE_HIPAA_SCHEMA`` not ``true``) or the refactored schema (``true``) with the same routes and
response shapes. Deliberate differences from the real app: ``/api/health`` exists, responses never carry the
``...Encrypted`` ciphertexts or search hashes, and nothing it logs carries PHI, bodies, query strings or secrets.

Run with ``python -m sandbox.api``; configuration comes from the environment, read once at start.

On the new schema it answers with the loma-org app's contract (target-app.md section 12): the therapist profile's
``professionalTitle`` (not ``title``, no ``legalBusinessName``), a decrypted field left out when its ciphertext is
NULL or empty, sessions nesting their ``organization``, ``patient`` and ``therapist`` (the user with its
``therapistProfile``), a therapist profile its ``user``, one patient its ``organization`` and ``primaryTherapist``
(never a ciphertext, hash or password in them), ``/api/clinical-sessions/patient/<id>`` in place of the
``/api/patients/<id>/sessions`` and ``/treatment-plans`` it does not have, a create body of ``contactEmail``,
``contactPhone``... (other keys ignored, silently) answered with the stored row (no decrypted PHI), and
timestamps in ISO 8601 with ``Z``. SANDBOX_API_CONTRACT=classic keeps the contract this API had before (the
legacy side's, on both schemas): a second app for the tests.

Tests break it on purpose through SANDBOX_API_FAULTS (comma-separated; applied only on the new schema, as a new API
that answers differently from the legacy one would):
  drop-field:<path>:<field>   the field is left out of every record (``data`` items) of answers to <path> and the
                              paths under it (drop-field:/api/patients:patientDob also drops it from one patient)
  swap-session:<session id>   wherever that session would be listed, another patient's session comes instead
  change-field:<path>:<field> the field's value (a dotted name reaches into a nested object: patient.name) is
                              changed in every record of answers to <path> and the paths under it
  open-debug:<path>           a debug GET route at <path> that answers 200 without a token (the real app's)
  user-hash:<path>            the user route at <path> (/api/user, /api/auth/status) returns the bcrypt hash
  fail-route:<path>           the GET route at <path> (as routed: /api/x/<int:patient_id>) answers 500
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from migration_gate.core.phi import PhiCodec, PhiKeyError, parse_key, search_hash

HOST = "127.0.0.1"
TOKEN_TTL = timedelta(hours=24)
COOKIE = "auth_token"
THERAPIST_ROLES = ("business_owner", "admin", "therapist")
ENC = "_encrypted"
MAX_LIMIT, DEFAULT_LIMIT = 100, 50
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_PAGE = 10**9  # keeps OFFSET inside bigint whatever a client sends
SELF_TEST_TEXT = "phi-encryption-self-test"
# SANDBOX_API_CONTRACT: the new schema answers as the loma-org app does, or as this API did before (classic)
CONTRACTS = ("loma", "classic")

NOT_FOUND = {"error": "NOT_FOUND", "message": "API endpoint not found"}
RBAC_DENIED = {"error": "Insufficient permissions: Therapist role or above required"}
BYPASS_HEADER = "X-Maintenance-Bypass"
MAINTENANCE_HTML = (
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>Maintenance</title></head>"
    "<body><h1>Down for maintenance</h1><p>We are upgrading the system. Please try again in a few minutes.</p>"
    "</body></html>"
)
# A bcrypt hash of a random string: unknown usernames still cost one checkpw, so timing does not reveal them.
_DUMMY_HASH = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds=4))


# --------------------------------------------------------------------------------------------- configuration


class ConfigError(Exception):
    """A start-up problem, reported as one line on stderr; the message never contains a secret value."""


@dataclass(frozen=True)
class Config:
    database_url: str
    phi_key: bytes
    use_hipaa_schema: bool
    jwt_secret: str
    maintenance_file: Path | None
    log_file: Path | None
    port: int
    environment: str
    maintenance_bypass: str | None = None  # a secret header value that lets the gate check the app in maintenance
    delay_ms: dict[str, float] = field(default_factory=dict)  # path -> extra latency (SANDBOX_API_DELAY_MS)
    faults: Faults = field(default_factory=lambda: Faults())  # deliberate wrong answers (SANDBOX_API_FAULTS)
    contract: str = "loma"  # how the new schema answers (SANDBOX_API_CONTRACT; see the module docstring)


@dataclass(frozen=True)
class Faults:
    """SANDBOX_API_FAULTS, parsed: the new-schema API's deliberate mistakes (see the module docstring)."""

    drop_fields: tuple[tuple[str, str], ...] = ()  # (path, field)
    swap_sessions: frozenset[int] = frozenset()
    change_fields: tuple[tuple[str, str], ...] = ()  # (path, field)
    paths: frozenset[tuple[str, str]] = frozenset()  # (open-debug | user-hash | fail-route, path)

    def at(self, kind: str) -> set[str]:
        return {path for k, path in self.paths if k == kind}

    def dropped(self, path: str) -> list[str]:
        return [name for prefix, name in self.drop_fields if path == prefix or path.startswith(prefix + "/")]

    def changed(self, path: str) -> list[str]:
        return [name for prefix, name in self.change_fields if path == prefix or path.startswith(prefix + "/")]


PATH_FAULTS = ("open-debug", "user-hash", "fail-route")


def parse_faults(text: str) -> Faults:
    """SANDBOX_API_FAULTS="drop-field:/api/patients:patientDob,swap-session:12"; empty: none."""
    drops, swaps, changes, paths = [], set(), [], set()
    usage = ("SANDBOX_API_FAULTS must be drop-field:PATH:FIELD, change-field:PATH:FIELD, swap-session:ID, "
             "open-debug:PATH, user-hash:PATH or fail-route:PATH[,...]")
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, rest = part.partition(":")
        if kind in ("drop-field", "change-field"):
            path, _, name = rest.rpartition(":")
            if not path.startswith("/") or not name:
                raise ConfigError(usage)
            (drops if kind == "drop-field" else changes).append((path, name))
        elif kind == "swap-session" and rest.isdigit():
            swaps.add(int(rest))
        elif kind in PATH_FAULTS and rest.startswith("/"):
            paths.add((kind, rest))
        else:
            raise ConfigError(usage)
    return Faults(tuple(drops), frozenset(swaps), tuple(changes), frozenset(paths))


def load_config(env: Mapping[str, str]) -> Config:
    """Read and validate the environment once, so a bad deploy fails at start, not on the first request."""
    database_url = env.get("DATABASE_URL", "")
    if not database_url:
        raise ConfigError("DATABASE_URL is not set")
    try:
        phi_key = parse_key(env.get("PHI_ENCRYPTION_KEY"))
    except PhiKeyError as exc:
        raise ConfigError(str(exc)) from None
    secret = env.get("JWT_SECRET") or env.get("SESSION_SECRET")
    if not secret:
        raise ConfigError("JWT_SECRET or SESSION_SECRET must be set")
    contract = env.get("SANDBOX_API_CONTRACT") or "loma"
    if contract not in CONTRACTS:
        raise ConfigError(f"SANDBOX_API_CONTRACT must be one of {', '.join(CONTRACTS)}")
    port_text = env.get("PORT", "5000")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError("PORT must be an integer between 1 and 65535")
    return Config(
        database_url=database_url,
        phi_key=phi_key,
        use_hipaa_schema=env.get("USE_HIPAA_SCHEMA") == "true",
        jwt_secret=secret,
        maintenance_file=Path(env["MAINTENANCE_FLAG_FILE"]) if env.get("MAINTENANCE_FLAG_FILE") else None,
        log_file=Path(env["API_LOG_FILE"]) if env.get("API_LOG_FILE") else None,
        port=int(port_text),
        environment=env.get("NODE_ENV") or "development",
        maintenance_bypass=env.get("MAINTENANCE_BYPASS_TOKEN") or None,
        delay_ms=parse_delays(env.get("SANDBOX_API_DELAY_MS", "")),
        faults=parse_faults(env.get("SANDBOX_API_FAULTS", "")),
        contract=contract,
    )


def parse_delays(text: str) -> dict[str, float]:
    """SANDBOX_API_DELAY_MS="/api/patients=150,/api/therapists=20": a slow app for the performance tests (a query
    plan the migration made worse, say). Empty: none."""
    delays = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        path, _, ms = part.rpartition("=")
        try:
            delays[path] = float(ms)
        except ValueError:
            raise ConfigError("SANDBOX_API_DELAY_MS must be PATH=MS[,PATH=MS...]") from None
        if not path.startswith("/"):
            raise ConfigError("SANDBOX_API_DELAY_MS must be PATH=MS[,PATH=MS...]")
    return delays


def self_test(codec: PhiCodec) -> bool:
    """Encrypt then decrypt a known string, as the app does on import: a wrong key setup fails here, not later."""
    try:
        return codec.decrypt(codec.encrypt(SELF_TEST_TEXT)) == SELF_TEST_TEXT
    except Exception:  # noqa: BLE001 - any failure means "encryption not usable"
        return False


# ----------------------------------------------------------------------------------------------------- logging


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonLog:
    """Append-only JSON-lines log; every line is flushed so a crash loses nothing and tests can read it live.

    Callers pass only fixed event names, ids, statuses and exception class names: never values from requests.
    """

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._stream = path.open("a", encoding="utf-8") if path else sys.stdout

    def write(self, level: str, event: str, **fields: Any) -> None:
        line = json.dumps({"ts": utc_now_iso(), "level": level, "event": event, **fields}, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()


# ------------------------------------------------------------------------------------------------ the schemas

# Legacy column -> refactored column (001_schema_refactor.sql), so both schemas give the same output keys.
LEGACY_PATIENT_COLUMNS = {
    "therapist_id": "primary_therapist_id",
    "email_encrypted": "patient_contact_email_encrypted",
    "phone_encrypted": "patient_contact_phone_encrypted",
    "address_encrypted": "patient_home_address_encrypted",
    "city_encrypted": "patient_home_city_encrypted",
    "state_encrypted": "patient_home_state_encrypted",
    "zip_code_encrypted": "patient_home_zip_encrypted",
    "date_of_birth_encrypted": "patient_dob_encrypted",
    "gender_encrypted": "patient_gender_encrypted",
    "race_encrypted": "patient_race_encrypted",
    "ethnicity_encrypted": "patient_ethnicity_encrypted",
    "pronouns_encrypted": "patient_pronouns_encrypted",
    "hometown_encrypted": "patient_hometown_encrypted",
    "notes_encrypted": "patient_clinical_notes_encrypted",
    "diagnosis_codes_encrypted": "patient_diagnosis_codes_encrypted",
    "treatment_history_encrypted": "patient_treatment_history_encrypted",
    "primary_diagnosis_code_encrypted": "patient_primary_diagnosis_encrypted",
    "secondary_diagnosis_code_encrypted": "patient_secondary_diagnosis_encrypted",
    "referring_physician_encrypted": "patient_referring_physician_encrypted",
    "referring_physician_npi_encrypted": "patient_referring_physician_npi_encrypted",
    "insurance_info_encrypted": "patient_insurance_info_encrypted",
    "authorization_info_encrypted": "patient_authorization_info_encrypted",
    "prior_auth_number_encrypted": "patient_prior_auth_number_encrypted",
    "member_id_encrypted": "patient_member_id_encrypted",
    "group_number_encrypted": "patient_group_number_encrypted",
    "primary_insured_name_encrypted": "patient_primary_insured_name_encrypted",
    "email_search_hash": "patient_contact_email_search_hash",
    "phone_search_hash": "patient_contact_phone_search_hash",
    "photo_filename": "patient_photo_filename",
    "photo_original_name": "patient_photo_original_name",
    "photo_mime_type": "patient_photo_mime_type",
}
LEGACY_SESSION_COLUMNS = {
    "client_id": "patient_id",
    "notes_encrypted": "session_clinical_notes_encrypted",
    "assessments_encrypted": "session_assessment_notes_encrypted",
    "treatment_goals_encrypted": "session_treatment_goals_encrypted",
    "progress_notes_encrypted": "session_progress_notes_encrypted",
}
LEGACY_PLAN_COLUMNS = {
    "client_id": "patient_id",
    "content_encrypted": "treatment_plan_content_encrypted",
    "goals_encrypted": "treatment_plan_goals_encrypted",
    "objectives_encrypted": "treatment_plan_objectives_encrypted",
    "interventions_encrypted": "treatment_plan_interventions_encrypted",
    "progress_notes_encrypted": "treatment_plan_progress_notes_encrypted",
}
LEGACY_PROFILE_COLUMNS = {
    "business_address": "therapist_business_address",
    "business_city": "therapist_business_city",
    "business_state": "therapist_business_state",
    "business_zip_code": "therapist_business_zip",
    "business_phone": "therapist_business_phone",
    "business_email": "therapist_business_email",
}
# Never returned: the legacy plaintext EIN (it moves, encrypted, to organizations) and org ciphertexts.
HIDDEN_COLUMNS = frozenset({"ein_number", "organization_business_ein_encrypted"})

# POST /api/patients body keys -> refactored column (PHI ones are stored encrypted).
PATIENT_PHI_FIELDS = {
    "email": "patient_contact_email_encrypted",
    "phone": "patient_contact_phone_encrypted",
    "dateOfBirth": "patient_dob_encrypted",
    "address": "patient_home_address_encrypted",
    "city": "patient_home_city_encrypted",
    "state": "patient_home_state_encrypted",
    "zipCode": "patient_home_zip_encrypted",
    "gender": "patient_gender_encrypted",
    "race": "patient_race_encrypted",
    "ethnicity": "patient_ethnicity_encrypted",
    "pronouns": "patient_pronouns_encrypted",
    "hometown": "patient_hometown_encrypted",
    "notes": "patient_clinical_notes_encrypted",
}
PATIENT_PLAIN_FIELDS = {"status": "status", "type": "type", "billingType": "billing_type"}
# The loma-org app's create body (its createPatient): the same columns under other names.
LOMA_PATIENT_PHI_FIELDS = {
    "contactEmail": "patient_contact_email_encrypted",
    "contactPhone": "patient_contact_phone_encrypted",
    "dob": "patient_dob_encrypted",
    "homeAddress": "patient_home_address_encrypted",
    "homeCity": "patient_home_city_encrypted",
    "homeState": "patient_home_state_encrypted",
    "homeZip": "patient_home_zip_encrypted",
    "gender": "patient_gender_encrypted",
    "race": "patient_race_encrypted",
    "ethnicity": "patient_ethnicity_encrypted",
    "pronouns": "patient_pronouns_encrypted",
    "hometown": "patient_hometown_encrypted",
    "clinicalNotes": "patient_clinical_notes_encrypted",
}
# The loma-org app's names for therapist_profiles' columns, and the column its schema does not know.
LOMA_PROFILE_NAMES = {"title": "professionalTitle"}
LOMA_PROFILE_UNKNOWN = frozenset({"legalBusinessName"})
USER_SECRETS = frozenset({"password"})  # never in a nested user (the real app's nests it: POST-09 finds that)


@dataclass(frozen=True)
class Schema:
    """Where each thing lives in one schema; columns are always named by their refactored name in code."""

    hipaa: bool
    patients: str
    sessions: str
    plans: str
    patient_columns: Mapping[str, str]
    session_columns: Mapping[str, str]
    plan_columns: Mapping[str, str]
    profile_columns: Mapping[str, str]
    required_tables: tuple[str, ...]

    def db_column(self, renames: Mapping[str, str], new_name: str) -> str:
        """The physical column of a refactored column name in this schema."""
        for old, new in renames.items():
            if new == new_name:
                return old
        return new_name


LEGACY = Schema(
    hipaa=False, patients="clients_hipaa", sessions="sessions_hipaa", plans="treatment_plans_hipaa",
    patient_columns=LEGACY_PATIENT_COLUMNS, session_columns=LEGACY_SESSION_COLUMNS, plan_columns=LEGACY_PLAN_COLUMNS,
    profile_columns=LEGACY_PROFILE_COLUMNS,
    required_tables=("users_auth", "therapist_profiles", "clients_hipaa", "sessions_hipaa", "audit_logs_hipaa"),
)
HIPAA = Schema(
    hipaa=True, patients="patients", sessions="clinical_sessions", plans="patient_treatment_plans",
    patient_columns={}, session_columns={}, plan_columns={}, profile_columns={},
    required_tables=("users_auth", "therapist_profiles", "organizations", "organization_memberships", "patients",
                     "clinical_sessions", "audit_logs_hipaa"),
)


# ------------------------------------------------------------------------------------------- output formatting


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def to_json(value: Any) -> Any:
    """JSON for the column types we return (numeric as a string, as node-postgres does)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def age_of(dob: str | None, today: date | None = None) -> int | str | None:
    """Age from a decrypted ISO date; "90+" over 89 (HIPAA Safe Harbor); None when absent or unparseable."""
    if not dob:
        return None
    try:
        born = date.fromisoformat(dob.strip()[:10])
    except ValueError:
        return None
    today = today or date.today()
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return "90+" if years > 89 else years


def iso_z(value: datetime) -> str:
    """A timestamp as the loma-org app writes it (JavaScript's toISOString): UTC, milliseconds, Z; naive is UTC."""
    moment = value.astimezone(UTC) if value.tzinfo else value
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def format_row(row: Mapping[str, Any], renames: Mapping[str, str], codec: PhiCodec, loma: bool = False,
               decrypt: bool = True) -> dict[str, Any]:
    """camelCase the plain columns and decrypt the PHI ones; ciphertexts and search hashes are left out. loma: the
    loma-org app's contract (a decrypted field absent when its ciphertext is NULL or empty, timestamps with Z);
    decrypt False: the PHI columns left out altogether (a nested row)."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        name = renames.get(column, column)
        if name in HIDDEN_COLUMNS or name.endswith("_search_hash"):
            continue
        if name.endswith(ENC):
            if decrypt and not (loma and not value):
                out[camel(name[: -len(ENC)])] = codec.decrypt(value)
        elif loma and isinstance(value, datetime):
            out[camel(name)] = iso_z(value)
        else:
            out[camel(name)] = value
    return out


def format_patient(row: Mapping[str, Any], schema: Schema, codec: PhiCodec, loma: bool = False) -> dict[str, Any]:
    patient = format_row(row, schema.patient_columns, codec, loma)
    patient["patientAge"] = age_of(patient.get("patientDob"))
    return patient


def format_profile(row: Mapping[str, Any], schema: Schema, codec: PhiCodec, loma: bool = False) -> dict[str, Any]:
    """A therapist profile; the loma-org app says professionalTitle and does not know legalBusinessName."""
    profile = format_row(row, schema.profile_columns, codec, loma)
    if loma:
        profile = {LOMA_PROFILE_NAMES.get(k, k): v for k, v in profile.items() if k not in LOMA_PROFILE_UNKNOWN}
    return profile


def format_user(row: Mapping[str, Any], loma: bool = True) -> dict[str, Any]:
    """A users_auth row nested in another record: never its password hash."""
    return {camel(k): iso_z(v) if loma and isinstance(v, datetime) else v for k, v in row.items()
            if k not in USER_SECRETS}


# ------------------------------------------------------------------------------------------------ HTTP helpers


class ApiError(Exception):
    """An expected refusal: status and body go to the client as they are."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status, self.body = status, body


class ApiRequest(Request):
    max_content_length = 1024 * 1024


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=to_json), status=status, mimetype="application/json")


def json_body(request: Request) -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, {"error": "Invalid JSON body"})
    return body


def page_args(request: Request) -> tuple[int, int]:
    """page >= 1 and 1 <= limit <= 100 (default 50); junk falls back to the defaults, as parseInt would."""
    def number(name: str, default: int) -> int:
        try:
            return int(request.args.get(name, default))
        except ValueError:
            return default
    return min(MAX_PAGE, max(1, number("page", 1))), min(MAX_LIMIT, max(1, number("limit", DEFAULT_LIMIT)))


def paginated(data: list[dict[str, Any]], page: int, limit: int, total: int) -> dict[str, Any]:
    return {"success": True, "data": data, "pagination": {
        "page": page, "limit": limit, "total": total, "totalPages": math.ceil(total / limit),
        "hasMore": page * limit < total}}


@dataclass
class Context:
    """One request as the handlers see it."""

    request: Request
    user_id: int | None = None
    audit_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    args: dict[str, Any] = field(default_factory=dict)  # the route's path arguments (patient_id)


@dataclass(frozen=True)
class Route:
    handler: Callable[[Context], Response]
    error: dict[str, Any]
    auth: bool = True
    audit: str | None = None  # resource_type of the PHI this route reads
    action: str = "READ"


# ------------------------------------------------------------------------------------------------ visibility

VIEW_ALL_ROLES = ("business_owner", "admin")
INT8 = 2**63
# The caller's active memberships; the selected therapists are the numbers at the top of the jsonb array (the
# elements `can_view_selected_patients @> jsonb_build_array(owner)` can match), read by PostgreSQL's own rules.
MEMBERSHIPS = (
    "SELECT organization_id, role, coalesce(can_view_all_patients, false),"
    " ARRAY(SELECT e.value::text::numeric FROM jsonb_array_elements(CASE jsonb_typeof(can_view_selected_patients)"
    " WHEN 'array' THEN can_view_selected_patients ELSE '[]'::jsonb END) e WHERE jsonb_typeof(e.value) = 'number')"
    " FROM organization_memberships WHERE user_id = %s AND is_active AND organization_id IS NOT NULL"
)


@dataclass(frozen=True)
class Visibility:
    """Which rows of the new schema a user may see, from their active memberships: every row of all_orgs
    (business owner or admin with view-all), their own rows in own_orgs (therapist), and the rows of the selected
    therapists in an admin's organization (org, owners)."""

    all_orgs: tuple[int, ...] = ()
    own_orgs: tuple[int, ...] = ()
    selected: tuple[tuple[int, tuple[int, ...]], ...] = ()

    @classmethod
    def of(cls, conn: psycopg.Connection, user_id: int) -> Visibility:
        """One small indexed query (organization_memberships by user_id)."""
        every, own, picked = set(), set(), {}
        for org, role, view_all, numbers in conn.execute(MEMBERSHIPS, (user_id,)).fetchall():
            if role in VIEW_ALL_ROLES and view_all:
                every.add(org)
            elif role == "therapist":
                own.add(org)
            elif role == "admin":
                # only whole numbers can equal an integer owner (5.0 does, as jsonb compares numerically)
                owners = {int(n) for n in numbers if n == n.to_integral_value() and -INT8 <= n < INT8}
                if owners:
                    picked.setdefault(org, set()).update(owners)
        return cls(all_orgs=tuple(sorted(every)), own_orgs=tuple(sorted(own - every)),
                   selected=tuple((org, tuple(sorted(ids))) for org, ids in sorted(picked.items()) if org not in every))


# -------------------------------------------------------------------------------------------------- the app


class ApiApp:
    """The WSGI application; one instance per process, shared by the server threads."""

    def __init__(self, config: Config, pool: ConnectionPool, log: JsonLog, encryption_valid: bool) -> None:
        self.config, self.pool, self.log = config, pool, log
        self.codec = PhiCodec(config.phi_key)
        self.schema = HIPAA if config.use_hipaa_schema else LEGACY
        self.loma = self.schema.hipaa and config.contract == "loma"  # the loma-org app's answers (new schema)
        self.encryption_valid = encryption_valid
        self.started = time.monotonic()
        self.routes: dict[str, Route] = {}
        self.url_map = Map(self._rules(), merge_slashes=False)

    # -- routing
    def _rules(self) -> list[Rule]:
        read_error = {"error": "Failed to fetch patients"}
        table: list[tuple[str, str, Route]] = [
            ("/health", "GET", Route(self.health, {"error": "HEALTH_CHECK_FAILED"}, auth=False)),
            ("/api/health", "GET", Route(self.health, {"error": "HEALTH_CHECK_FAILED"}, auth=False)),
            ("/api/status", "GET", Route(self.status, {"error": "STATUS_FAILED"}, auth=False)),
            ("/api/login", "POST", Route(self.login, {"error": "Login failed"}, auth=False)),
            ("/api/logout", "POST", Route(self.logout, {"error": "Logout failed"}, auth=False)),
            ("/api/patients", "GET", Route(self.list_patients, read_error, audit="PATIENT")),
            ("/api/patients", "POST", Route(self.create_patient, {"error": "Failed to create patient"},
                                            audit="PATIENT", action="CREATE")),
            ("/api/patients/<int:patient_id>", "GET", Route(self.one_patient, {"error": "Failed to fetch patient"},
                                                            audit="PATIENT")),
            ("/api/patients/search", "POST", Route(self.search_patients, {"error": "Failed to search patients"},
                                                   audit="PATIENT")),
            ("/api/therapists", "GET", Route(self.list_therapists, {"error": "Failed to fetch therapists"},
                                             audit="THERAPIST_PHI")),
            ("/api/clinical-sessions", "GET", Route(self.list_sessions, {"error": "CLINICAL_SESSIONS_FETCH_FAILED"},
                                                    audit="CLINICAL_SESSION")),
        ]
        if self.loma:  # the loma-org app lists a patient's sessions under clinical-sessions, its plans nowhere
            table.append(("/api/clinical-sessions/patient/<int:patient_id>", "GET",
                          Route(self.patient_sessions, {"error": "PATIENT_SESSIONS_FETCH_FAILED"},
                                audit="CLINICAL_SESSION")))
        else:
            table += [
                ("/api/patients/<int:patient_id>/sessions", "GET",
                 Route(self.patient_sessions, {"error": "CLINICAL_SESSIONS_FETCH_FAILED"}, audit="CLINICAL_SESSION")),
                ("/api/patients/<int:patient_id>/treatment-plans", "GET",
                 Route(self.patient_plans, {"error": "Failed to fetch treatment plans"}, audit="TREATMENT_PLAN")),
            ]
        if self.schema.hipaa:  # no organizations before cut-over: the route does not exist there
            table.append(("/api/organizations", "GET",
                          Route(self.list_organizations, {"error": "Failed to fetch organizations"})))
        table = self.with_user_and_plan_routes(table)
        rules = []
        for path, method, route in table:
            endpoint = f"{method} {path}"
            self.routes[endpoint] = route
            rules.append(Rule(path, methods=[method], endpoint=endpoint))
        return rules

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = ApiRequest(environ)
        began = time.perf_counter()
        ctx = Context(request)
        logged_path = request.path
        try:
            if request.path in self.config.delay_ms:
                time.sleep(self.config.delay_ms[request.path] / 1000)
            response, matched = self.respond(ctx)
            if self.schema.hipaa and self.config.faults.dropped(request.path):
                drop_fields(response, self.config.faults.dropped(request.path))
            if self.schema.hipaa and self.config.faults.changed(request.path):
                change_fields(response, self.config.faults.changed(request.path))
            if not matched:
                logged_path = "[unmatched]"  # an unknown path is client text: it could hold anything
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback to the client
            self.log.write("error", "unhandled", error=type(exc).__name__)
            response = json_response({"error": "INTERNAL_SERVER_ERROR"}, 500)
        method = request.method if request.method in HTTP_METHODS else "OTHER"  # the method is client text too
        self.log.write("info", "request", method=method, path=logged_path, status=response.status_code,
                       ms=round((time.perf_counter() - began) * 1000, 1), userId=ctx.user_id)
        return response(environ, start_response)

    def respond(self, ctx: Context) -> tuple[Response, bool]:
        """Maintenance, routing, authentication, audit and the handler, in that order."""
        request = ctx.request
        try:
            endpoint, ctx.args = self.url_map.bind_to_environ(request.environ).match()
        except HTTPException:  # not found, wrong method, redirects: all "no such endpoint" here
            endpoint = None
        if request.path not in ("/health", "/api/health") and self.in_maintenance() and not self.bypassed(request):
            return self.maintenance_response(request), endpoint is not None
        if endpoint is None:
            return json_response(NOT_FOUND, 404), False
        route = self.routes[endpoint]
        try:
            if route.auth:
                ctx.user_id = self.authenticate(request)
            if route.audit:
                return self.audited(ctx, route), True
            return route.handler(ctx), True
        except ApiError as exc:
            return json_response(exc.body, exc.status), True
        except Exception as exc:  # noqa: BLE001 - DB and decrypt errors: class name only, never the message
            self.log.write("error", "handler_failed", path=request.path, error=type(exc).__name__)
            return json_response(route.error, 500), True

    def audited(self, ctx: Context, route: Route) -> Response:
        """The pre and post audit rows around a PHI route; the post row carries the status, refusals included."""
        self.audit(ctx, route, None)
        status = 500
        try:
            response = route.handler(ctx)
            status = response.status_code
            return response
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            self.audit(ctx, route, status)

    def audit(self, ctx: Context, route: Route, status: int | None) -> None:
        """One audit row in its own short transaction; failing to write it is logged, never fatal."""
        try:
            with self.pool.connection(timeout=5) as conn:
                conn.execute(
                    "INSERT INTO audit_logs_hipaa (user_id, ip_address, action, resource_type, request_method,"
                    " request_path, response_status, data_retention_date, correlation_id, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, now() + interval '7 years', %s, now())",
                    (ctx.user_id, ctx.request.remote_addr, route.action, route.audit, ctx.request.method,
                     ctx.request.path, status, ctx.audit_id))
        except Exception as exc:  # noqa: BLE001 - audit is non-blocking, as in the app
            self.log.write("error", "audit_failed", path=ctx.request.path, error=type(exc).__name__)

    # -- maintenance
    def in_maintenance(self) -> bool:
        flag = self.config.maintenance_file
        return flag is not None and flag.exists()

    def bypassed(self, request: Request) -> bool:
        """The operator's checks may pass maintenance mode with the secret bypass header (hosts offer the same)."""
        token = self.config.maintenance_bypass
        offered = request.headers.get(BYPASS_HEADER, "")
        return bool(token) and hmac.compare_digest(offered.encode(), token.encode())

    @staticmethod
    def maintenance_response(request: Request) -> Response:
        if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
            response = json_response({"error": "MAINTENANCE"}, 503)
        else:
            response = Response(MAINTENANCE_HTML, status=503, mimetype="text/html")
        response.headers["Retry-After"] = "600"
        return response

    # -- authentication
    def authenticate(self, request: Request) -> int:
        """The caller's user id from the cookie or a Bearer token; an inactive account is refused."""
        token = request.cookies.get(COOKIE)
        header = request.headers.get("Authorization", "")
        if not token and header.startswith("Bearer "):
            token = header[len("Bearer "):].strip()
        if not token:
            raise ApiError(401, {"error": "No token provided"})
        try:
            claims = jwt.decode(token, self.config.jwt_secret, algorithms=["HS256"], options={"require": ["exp"]})
            user_id = int(claims["userId"])
        except jwt.InvalidTokenError as exc:  # one error line per bad token, named as the app's (jsonwebtoken) names it
            expired = isinstance(exc, jwt.ExpiredSignatureError)
            self.log.write("error", "auth_failed", error="TokenExpiredError" if expired else "JsonWebTokenError")
            raise ApiError(401, {"error": "Invalid token"}) from None
        except (KeyError, TypeError, ValueError):
            raise ApiError(401, {"error": "Invalid token"}) from None
        with self.pool.connection(timeout=5) as conn:
            row = conn.execute("SELECT account_status FROM users_auth WHERE id = %s", (user_id,)).fetchone()
        if row is None:
            raise ApiError(401, {"error": "Invalid token"})
        if row[0] != "active":
            raise ApiError(403, {"error": "Account is not active"})
        return user_id

    def issue_token(self, user_id: int) -> str:
        return jwt.encode({"userId": user_id, "exp": datetime.now(UTC) + TOKEN_TTL}, self.config.jwt_secret,
                          algorithm="HS256")

    # -- visibility (the app's RBAC)
    def require_therapist(self, conn: psycopg.Connection, user_id: int) -> None:
        """New schema: an active membership with a therapist-or-above role; the legacy schema has no roles."""
        if not self.schema.hipaa:
            return
        row = conn.execute("SELECT 1 FROM organization_memberships WHERE user_id = %s AND is_active"
                           " AND role = ANY(%s) LIMIT 1", (user_id, list(THERAPIST_ROLES))).fetchone()
        if row is None:
            raise ApiError(403, RBAC_DENIED)

    def visible(self, conn: psycopg.Connection, user_id: int, alias: str,
                therapist_column: str) -> tuple[sql.Composable, dict[str, Any]]:
        """WHERE clause and its parameters for the rows of alias the caller may see.

        The new schema's rule (a row is visible through an active membership of its organization: business owner
        or admin with view-all, the therapist's own rows, an admin's selected therapists) is applied in two steps:
        the caller's memberships are read first (a few rows), then the table is filtered with plain equalities on
        organization_id and the owner column, so the planner answers from their indexes instead of evaluating a
        correlated EXISTS per row over a scan of the whole table."""
        owner = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(therapist_column))
        if not self.schema.hipaa:
            return sql.SQL("{} = %(uid)s").format(owner), {"uid": user_id}
        seen = Visibility.of(conn, user_id)
        org = sql.SQL("{}.organization_id").format(sql.Identifier(alias))
        arms: list[sql.Composable] = []
        params: dict[str, Any] = {"uid": user_id}
        if seen.all_orgs:
            arms.append(sql.SQL("{} = ANY(%(orgs_all)s)").format(org))
            params["orgs_all"] = list(seen.all_orgs)
        if seen.own_orgs:
            arms.append(sql.SQL("({} = ANY(%(orgs_own)s) AND {} = %(uid)s)").format(org, owner))
            params["orgs_own"] = list(seen.own_orgs)
        for i, (org_id, owners) in enumerate(seen.selected):
            arms.append(sql.SQL("({} = {} AND {} = ANY({}))").format(
                org, sql.Placeholder(f"org_sel{i}"), owner, sql.Placeholder(f"owners_sel{i}")))
            params |= {f"org_sel{i}": org_id, f"owners_sel{i}": list(owners)}
        return (sql.SQL(" OR ").join(arms) if arms else sql.SQL("false")), params

    def page_of(self, conn: psycopg.Connection, table: str, therapist_column: str, user_id: int,
                page: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """Total and one page of visible rows, paginated in SQL so only the page is read and decrypted."""
        where, params = self.visible(conn, user_id, "t", therapist_column)
        params |= {"limit": limit, "offset": (page - 1) * limit}
        total = conn.execute(sql.SQL("SELECT count(*) FROM {} t WHERE {}").format(sql.Identifier(table), where),
                             params).fetchone()[0]
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(sql.SQL("SELECT t.* FROM {} t WHERE {} ORDER BY t.id LIMIT %(limit)s OFFSET %(offset)s")
                               .format(sql.Identifier(table), where), params).fetchall()
        return total, rows

    # -- handlers
    def health(self, ctx: Context) -> Response:
        connected, schema_valid, errors = self.database_state()
        healthy = connected and schema_valid and self.encryption_valid
        status = "ok" if healthy else ("degraded" if connected and self.encryption_valid else "error")
        body = {
            "status": status,
            "timestamp": utc_now_iso(),
            "uptime": round(time.monotonic() - self.started, 3),
            "environment": self.config.environment,
            "database": {"connected": connected, "schemaValid": schema_valid, "errors": errors, "warnings": []},
            "encryption": {"configured": True, "valid": self.encryption_valid},
            "config": {"databaseUrl": "configured", "sessionSecret": "configured", "phiEncryptionKey": "configured",
                       "useHipaaSchema": self.schema.hipaa},
        }
        return json_response(body, 200 if healthy else 503)

    def status(self, ctx: Context) -> Response:
        """The real app's GET /api/status: which build is running (the gate records it in the sign-off)."""
        commit = os.environ.get("APP_COMMIT") or f"sandbox-{'hipaa' if self.schema.hipaa else 'legacy'}"
        return json_response({"commit": commit, "buildTime": None, "env": self.config.environment,
                              "uptimeSec": round(time.monotonic() - self.started)})

    def database_state(self) -> tuple[bool, bool, list[str]]:
        """(connected, every table the active schema needs exists, errors without DB messages)."""
        try:
            with self.pool.connection(timeout=3) as conn:
                conn.execute("SELECT 1")
                found = conn.execute("SELECT t FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NOT NULL",
                                     (list(self.schema.required_tables),)).fetchall()
        except Exception as exc:  # noqa: BLE001 - reported as "not connected"
            self.log.write("error", "health_db_failed", error=type(exc).__name__)
            return False, False, ["database unreachable"]
        missing = sorted(set(self.schema.required_tables) - {row[0] for row in found})
        return True, not missing, [f"missing table: {name}" for name in missing]

    def login(self, ctx: Context) -> Response:
        body = ctx.request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
            raise ApiError(400, {"error": "Username and password are required"})
        with self.pool.connection(timeout=5) as conn, conn.cursor(row_factory=dict_row) as cur:
            user = cur.execute("SELECT id, username, password, created_at FROM users_auth WHERE username = %s",
                               (username,)).fetchone()
            if not password_matches(password, user["password"] if user else None):
                raise ApiError(401, {"error": "Invalid username or password"})
            result = self.login_body(cur, user)
        ctx.user_id = user["id"]
        response = json_response(result)
        response.set_cookie(COOKIE, self.issue_token(user["id"]), max_age=int(TOKEN_TTL.total_seconds()), path="/",
                            httponly=True, samesite="Lax", secure=self.config.environment == "production")
        return response

    def login_body(self, cur: psycopg.Cursor, user: Mapping[str, Any]) -> dict[str, Any]:
        profile = cur.execute("SELECT name, title, license_number, specialties FROM therapist_profiles"
                              " WHERE user_id = %s ORDER BY id LIMIT 1", (user["id"],)).fetchone() or {}
        membership = None
        if self.schema.hipaa:
            membership = cur.execute(
                "SELECT id, organization_id FROM organization_memberships WHERE user_id = %s AND is_active"
                " ORDER BY is_primary_owner DESC NULLS LAST, id LIMIT 1", (user["id"],)).fetchone()
        return {"id": user["id"], "username": user["username"], "name": profile.get("name"),
                "title": profile.get("title"), "license": profile.get("license_number"),
                "specialties": profile.get("specialties"), "created_at": user["created_at"],
                "organizationId": membership["organization_id"] if membership else None,
                "organizationMembershipId": membership["id"] if membership else None}

    def logout(self, ctx: Context) -> Response:
        response = json_response({"message": "Logged out successfully"})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Lax")
        return response

    def list_patients(self, ctx: Context) -> Response:
        page, limit = page_args(ctx.request)
        therapist = self.schema.db_column(self.schema.patient_columns, "primary_therapist_id")
        with self.pool.connection(timeout=5) as conn:
            self.require_therapist(conn, ctx.user_id)
            total, rows = self.page_of(conn, self.schema.patients, therapist, ctx.user_id, page, limit)
        data = [format_patient(row, self.schema, self.codec, self.loma) for row in rows]
        return json_response(paginated(data, page, limit, total))

    def list_sessions(self, ctx: Context) -> Response:
        page, limit = page_args(ctx.request)
        with self.pool.connection(timeout=5) as conn:
            self.require_therapist(conn, ctx.user_id)
            total, rows = self.page_of(conn, self.schema.sessions, "therapist_id", ctx.user_id, page, limit)
            rows = self.swapped(conn, rows)
            data = self.sessions_out(conn, rows)
        return json_response(paginated(data, page, limit, total))

    def visible_patient(self, conn: psycopg.Connection, user_id: int, patient_id: int) -> dict[str, Any]:
        """The patient row when the caller may see it (the list's rule); 404 otherwise, as for a missing one."""
        therapist = self.schema.db_column(self.schema.patient_columns, "primary_therapist_id")
        where, params = self.visible(conn, user_id, "t", therapist)
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(sql.SQL("SELECT t.* FROM {} t WHERE t.id = %(pid)s AND ({})").format(
                sql.Identifier(self.schema.patients), where), params | {"pid": patient_id}).fetchone()
        if row is None:
            raise ApiError(404, {"error": "Patient not found"})
        return row

    def one_patient(self, ctx: Context) -> Response:
        with self.pool.connection(timeout=5) as conn:
            self.require_therapist(conn, ctx.user_id)
            row = self.visible_patient(conn, ctx.user_id, ctx.args["patient_id"])
            patient = format_patient(row, self.schema, self.codec, self.loma)
            if self.loma:  # the loma-org app nests the organization and the primary therapist (a user)
                patient["organization"] = self.nested_rows(conn, "organizations", [row["organization_id"]]).get(
                    row["organization_id"])
                patient["primaryTherapist"] = self.nested_users(conn, [row["primary_therapist_id"]]).get(
                    row["primary_therapist_id"])
        return json_response({"success": True, "data": patient})

    def of_patient(self, conn: psycopg.Connection, ctx: Context, table: str,
                   renames: Mapping[str, str]) -> list[dict[str, Any]]:
        """The rows of table that belong to a patient the caller may see, and that the caller may see themselves."""
        self.require_therapist(conn, ctx.user_id)
        patient_id = ctx.args["patient_id"]
        self.visible_patient(conn, ctx.user_id, patient_id)
        where, params = self.visible(conn, ctx.user_id, "t", "therapist_id")
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(sql.SQL("SELECT t.* FROM {} t WHERE t.{} = %(pid)s AND ({}) ORDER BY t.id").format(
                sql.Identifier(table), sql.Identifier(self.schema.db_column(renames, "patient_id")), where),
                params | {"pid": patient_id}).fetchall()

    def patient_sessions(self, ctx: Context) -> Response:
        with self.pool.connection(timeout=5) as conn:
            rows = self.swapped(conn, self.of_patient(conn, ctx, self.schema.sessions, self.schema.session_columns))
            data = self.sessions_out(conn, rows)
        return json_response({"success": True, "data": data, "count": len(data)})

    def sessions_out(self, conn: psycopg.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Session records; the loma-org app's nest their organization, patient and therapist (a user with its
        therapistProfile): here without ciphertexts, hashes, decrypted PHI or the password."""
        data = [format_row(row, self.schema.session_columns, self.codec, self.loma) for row in rows]
        if not self.loma:
            return data
        orgs = self.nested_rows(conn, "organizations", [r["organization_id"] for r in rows])
        patients = self.nested_rows(conn, "patients", [r["patient_id"] for r in rows])
        users = self.nested_users(conn, [r["therapist_id"] for r in rows], profiles=True)
        for row, record in zip(rows, data, strict=True):
            record["organization"] = orgs.get(row["organization_id"])
            record["patient"] = patients.get(row["patient_id"])
            record["therapist"] = users.get(row["therapist_id"])
        return data

    def nested_rows(self, conn: psycopg.Connection, table: str, ids: list[Any]) -> dict[Any, dict[str, Any]]:
        """id -> the row of table as a nested object: plain columns only (no ciphertext, hash or decrypted PHI)."""
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(sql.SQL("SELECT * FROM {} WHERE id = ANY(%s)").format(sql.Identifier(table)),
                               (sorted({i for i in ids if i is not None}),)).fetchall()
        return {row["id"]: format_row(row, {}, self.codec, self.loma, decrypt=False) for row in rows}

    def nested_users(self, conn: psycopg.Connection, ids: list[Any], profiles: bool = False) -> dict[Any, dict]:
        """id -> the users_auth row without its password (with its therapistProfile when asked)."""
        wanted = sorted({i for i in ids if i is not None})
        with conn.cursor(row_factory=dict_row) as cur:
            users = {row["id"]: format_user(row, self.loma) for row in cur.execute(
                "SELECT * FROM users_auth WHERE id = ANY(%s)", (wanted,)).fetchall()}
            if profiles:
                for row in cur.execute("SELECT * FROM therapist_profiles WHERE user_id = ANY(%s) ORDER BY id DESC",
                                       (wanted,)).fetchall():
                    if row["user_id"] in users:
                        users[row["user_id"]]["therapistProfile"] = format_profile(row, self.schema, self.codec,
                                                                                   self.loma)
        return users

    def patient_plans(self, ctx: Context) -> Response:
        with self.pool.connection(timeout=5) as conn:
            rows = self.of_patient(conn, ctx, self.schema.plans, self.schema.plan_columns)
        data = [format_row(row, self.schema.plan_columns, self.codec) for row in rows]
        return json_response({"success": True, "data": data, "count": len(data)})

    def swapped(self, conn: psycopg.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """SANDBOX_API_FAULTS swap-session: the session named is replaced by another patient's (new schema only)."""
        swaps = self.config.faults.swap_sessions
        if not self.schema.hipaa or not swaps:
            return rows
        out = []
        with conn.cursor(row_factory=dict_row) as cur:
            for row in rows:
                if row["id"] in swaps:
                    row = cur.execute(sql.SQL("SELECT * FROM {} WHERE patient_id <> %s ORDER BY id LIMIT 1").format(
                        sql.Identifier(self.schema.sessions)), (row["patient_id"],)).fetchone() or row
                out.append(row)
        return out

    def search_patients(self, ctx: Context) -> Response:
        """Exact match on the email hash, then the phone hash (the name hash is not searched, as in the app)."""
        term = json_body(ctx.request).get("searchTerm")
        digest = search_hash(term) if isinstance(term, str) else None
        if digest is None:
            raise ApiError(400, {"error": "searchTerm is required"})
        therapist = self.schema.db_column(self.schema.patient_columns, "primary_therapist_id")
        rows: list[dict[str, Any]] = []
        with self.pool.connection(timeout=5) as conn, conn.cursor(row_factory=dict_row) as cur:
            self.require_therapist(conn, ctx.user_id)
            where, params = self.visible(conn, ctx.user_id, "t", therapist)
            for hashed in ("patient_contact_email_search_hash", "patient_contact_phone_search_hash"):
                query = sql.SQL("SELECT t.* FROM {} t WHERE t.{} = %(hash)s AND ({}) ORDER BY t.id LIMIT 100").format(
                    sql.Identifier(self.schema.patients),
                    sql.Identifier(self.schema.db_column(self.schema.patient_columns, hashed)), where)
                rows = cur.execute(query, params | {"hash": digest}).fetchall()
                if rows:
                    break
        data = [format_patient(row, self.schema, self.codec, self.loma) for row in rows]
        return json_response({"success": True, "data": data, "count": len(data)})

    def create_patient(self, ctx: Context) -> Response:
        """A new patient of the caller, PHI encrypted with a random IV and the search hashes the app sets."""
        values = self.patient_values(json_body(ctx.request))
        with self.pool.connection(timeout=5) as conn, conn.cursor(row_factory=dict_row) as cur:
            if self.schema.hipaa:
                values["organization_id"] = self.creating_org(conn, ctx.user_id)
            values[self.schema.db_column(self.schema.patient_columns, "primary_therapist_id")] = ctx.user_id
            query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
                sql.Identifier(self.schema.patients), sql.SQL(", ").join(map(sql.Identifier, values)),
                sql.SQL(", ").join(sql.Placeholder() * len(values)))
            row = cur.execute(query, list(values.values())).fetchone()
        # the loma-org app answers with the stored row (its ciphertexts; here left out), not the decrypted patient
        data = format_row(row, {}, self.codec, True, decrypt=False) if self.loma else format_patient(
            row, self.schema, self.codec)
        return json_response({"success": True, "data": data}, 201)

    def patient_values(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Physical column -> value for a new patient, from a validated body (the loma-org app's names on its
        contract: contactEmail, contactPhone, dob...; a key it does not know is ignored, as it does)."""
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, {"error": "Name is required"})
        phi_fields = LOMA_PATIENT_PHI_FIELDS if self.loma else PATIENT_PHI_FIELDS
        email, phone, dob = ("contactEmail", "contactPhone", "dob") if self.loma else ("email", "phone", "dateOfBirth")
        for key in (*phi_fields, *PATIENT_PLAIN_FIELDS):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise ApiError(400, {"error": f"{key} must be a string"})
        if body.get(dob) and age_of(body[dob]) is None:
            raise ApiError(400, {"error": f"{dob} must be a date (YYYY-MM-DD)"})
        column = self.schema.db_column
        renames = self.schema.patient_columns
        values: dict[str, Any] = {"name": name}
        for key, new_name in phi_fields.items():
            values[column(renames, new_name)] = self.codec.encrypt(body.get(key))
        for key, new_name in PATIENT_PLAIN_FIELDS.items():
            if body.get(key):
                values[column(renames, new_name)] = body[key]
        values[column(renames, "patient_contact_email_search_hash")] = search_hash(body.get(email))
        values[column(renames, "patient_contact_phone_search_hash")] = search_hash(body.get(phone))
        if self.schema.hipaa:
            values["patient_name_search_hash"] = search_hash(name)
        return values

    def creating_org(self, conn: psycopg.Connection, user_id: int) -> int:
        """The organization a new patient joins: the caller's primary active therapist-or-above membership."""
        row = conn.execute(
            "SELECT organization_id FROM organization_memberships WHERE user_id = %s AND is_active AND role = ANY(%s)"
            " AND coalesce(can_create_patients, true) ORDER BY is_primary_owner DESC NULLS LAST, id LIMIT 1",
            (user_id, list(THERAPIST_ROLES))).fetchone()
        if row is None:
            raise ApiError(403, RBAC_DENIED)
        return row[0]

    def list_therapists(self, ctx: Context) -> Response:
        """The caller's own profile, or with ?organizationId= the profiles of that organization's members."""
        org_text = ctx.request.args.get("organizationId")
        with self.pool.connection(timeout=5) as conn, conn.cursor(row_factory=dict_row) as cur:
            self.require_therapist(conn, ctx.user_id)
            if org_text is None:
                rows = cur.execute("SELECT * FROM therapist_profiles WHERE user_id = %s ORDER BY id",
                                   (ctx.user_id,)).fetchall()
            elif not org_text.isdigit():
                raise ApiError(400, {"error": "Invalid organizationId"})
            elif not self.schema.hipaa:
                rows = []  # no organizations before cut-over
            else:
                rows = self.org_therapists(cur, ctx.user_id, int(org_text))
            data = [format_profile(row, self.schema, self.codec, self.loma) for row in rows]
            if self.loma:  # the loma-org app nests each profile's user
                users = self.nested_users(conn, [row["user_id"] for row in rows])
                for row, record in zip(rows, data, strict=True):
                    record["user"] = users.get(row["user_id"])
        return json_response({"success": True, "data": data, "count": len(data)})

    @staticmethod
    def org_therapists(cur: psycopg.Cursor, user_id: int, org_id: int) -> list[dict[str, Any]]:
        member = cur.execute("SELECT 1 FROM organization_memberships WHERE user_id = %s AND organization_id = %s"
                             " AND is_active AND role = ANY(%s)", (user_id, org_id, list(THERAPIST_ROLES))).fetchone()
        if member is None:
            raise ApiError(403, RBAC_DENIED)
        return cur.execute(
            "SELECT p.* FROM therapist_profiles p WHERE p.user_id IN (SELECT m.user_id FROM organization_memberships m"
            " WHERE m.organization_id = %s AND m.is_active) ORDER BY p.id", (org_id,)).fetchall()

    def list_organizations(self, ctx: Context) -> Response:
        """Membership rows (not bare organizations), each with its organization, as the app returns them."""
        with self.pool.connection(timeout=5) as conn, conn.cursor(row_factory=dict_row) as cur:
            memberships = cur.execute("SELECT * FROM organization_memberships WHERE user_id = %s AND is_active"
                                      " ORDER BY id", (ctx.user_id,)).fetchall()
            orgs = {row["id"]: row for row in cur.execute(
                "SELECT * FROM organizations WHERE id = ANY(%s)",
                ([m["organization_id"] for m in memberships],)).fetchall()}
        data = []
        for membership in memberships:
            item = format_row(membership, {}, self.codec, self.loma)
            org = orgs.get(membership["organization_id"])
            item["organization"] = format_row(org, {}, self.codec, self.loma) if org else None
            data.append(item)
        return json_response({"success": True, "data": data, "count": len(data)})

    # -- the signed-in user and the treatment-plan routes (the real app's paths), and their faults
    def with_user_and_plan_routes(self, table: list[tuple[str, str, Route]]) -> list[tuple[str, str, Route]]:
        """/api/user, /api/auth/status (never a hash) and the treatment-plan lists; on the new schema the
        SANDBOX_API_FAULTS open-debug routes are added and the fail-route routes answer 500."""
        plans_error = {"error": "TREATMENT_PLANS_FETCH_FAILED"}
        table = [*table,
                 ("/api/user", "GET", Route(self.current_user, {"error": "Failed to fetch user"})),
                 ("/api/auth/status", "GET", Route(self.auth_status, {"error": "Failed to check status"}, auth=False)),
                 ("/api/patient-treatment-plans", "GET", Route(self.list_plans, plans_error, audit="TREATMENT_PLAN")),
                 ("/api/patient-treatment-plans/patient/<int:patient_id>", "GET",
                  Route(self.patient_plans, plans_error, audit="TREATMENT_PLAN"))]
        if not self.schema.hipaa:
            return table
        faults = self.config.faults
        table += [(path, "GET", Route(self.open_debug, {"error": "debug failed"}, auth=False))
                  for path in sorted(faults.at("open-debug"))]
        return [(path, method, Route(self.failing, route.error, route.auth, route.audit, route.action)
                 if method == "GET" and path in faults.at("fail-route") else route) for path, method, route in table]

    def user_body(self, user_id: int, path: str) -> dict[str, Any]:
        """The users_auth row the app returns, without the password hash (unless the fault user-hash names path)."""
        with self.pool.connection(timeout=5) as conn, conn.cursor(row_factory=dict_row) as cur:
            user = cur.execute("SELECT id, username, email, account_status, mfa_enabled, last_login, created_at,"
                               " password FROM users_auth WHERE id = %s", (user_id,)).fetchone()
            if user is None:
                raise ApiError(404, {"error": "User not found"})
            body = {"email": user["email"], "accountStatus": user["account_status"],
                    "mfaEnabled": user["mfa_enabled"], "lastLogin": user["last_login"], **self.login_body(cur, user)}
        if self.schema.hipaa and path in self.config.faults.at("user-hash"):
            body["password"] = user["password"]
        return body

    def current_user(self, ctx: Context) -> Response:
        return json_response(self.user_body(ctx.user_id, ctx.request.path))

    def auth_status(self, ctx: Context) -> Response:
        """200 always, as the app's: signed in or not, and the user when signed in."""
        try:
            ctx.user_id = self.authenticate(ctx.request)
        except ApiError:
            return json_response({"isAuthenticated": False, "userId": None})
        return json_response({"isAuthenticated": True, "userId": ctx.user_id,
                              "user": self.user_body(ctx.user_id, ctx.request.path)})

    def list_plans(self, ctx: Context) -> Response:
        """The treatment plans the caller may see (at most ?limit, default 50: the sandbox keeps the list cheap)."""
        _, limit = page_args(ctx.request)
        with self.pool.connection(timeout=5) as conn:
            self.require_therapist(conn, ctx.user_id)
            _, rows = self.page_of(conn, self.schema.plans, "therapist_id", ctx.user_id, 1, limit)
        data = [format_row(row, self.schema.plan_columns, self.codec) for row in rows]
        return json_response({"success": True, "data": data, "count": len(data)})

    def open_debug(self, ctx: Context) -> Response:
        """SANDBOX_API_FAULTS open-debug: a debug route left open, as the real app's /api/auth-test."""
        return json_response({"message": "debug route", "environment": self.config.environment})

    def failing(self, ctx: Context) -> Response:
        """SANDBOX_API_FAULTS fail-route: the route breaks (a repository method that does not exist, say)."""
        raise RuntimeError("fail-route")


def drop_fields(response: Response, names: list[str]) -> None:
    """SANDBOX_API_FAULTS drop-field: the fields left out of every record (``data`` items) of a JSON answer."""
    if response.mimetype != "application/json":
        return
    body = json.loads(response.get_data())
    data = body.get("data") if isinstance(body, dict) else None
    for record in data if isinstance(data, list) else [data]:
        if isinstance(record, dict):
            for name in names:
                record.pop(name, None)
    response.set_data(json.dumps(body, default=to_json))


def change_fields(response: Response, names: list[str]) -> None:
    """SANDBOX_API_FAULTS change-field: the field's value (dotted: inside a nested object) is changed in every
    record (``data`` items) of a JSON answer, where it is present."""
    if response.mimetype != "application/json":
        return
    body = json.loads(response.get_data())
    data = body.get("data") if isinstance(body, dict) else None
    for record in data if isinstance(data, list) else [data]:
        for name in names:
            *outer, last = name.split(".")
            holder = record
            for part in outer:
                holder = holder.get(part) if isinstance(holder, dict) else None
            if isinstance(holder, dict) and last in holder:
                value = holder[last]
                holder[last] = not value if isinstance(value, bool) else f"{value}-changed"
    response.set_data(json.dumps(body, default=to_json))


def password_matches(password: str, stored: str | None) -> bool:
    """bcrypt check that costs the same whether or not the user exists; a malformed hash never matches."""
    try:
        if stored is None:
            bcrypt.checkpw(password.encode(), _DUMMY_HASH)
            return False
        return bcrypt.checkpw(password.encode(), stored.encode())
    except ValueError:  # malformed hash, or a password over bcrypt's 72-byte limit
        return False


# ---------------------------------------------------------------------------------------------------- serving


class QuietHandler(WSGIRequestHandler):
    """werkzeug's access log prints query strings to stderr; our JSON log replaces it."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def fail(message: str) -> int:
    print(f"sandbox.api: {message}", file=sys.stderr, flush=True)
    return 1


def main(env: Mapping[str, str] | None = None) -> int:
    """Start the server; a configuration error is one stderr line and exit code 1, as the app's start-up check."""
    try:
        config = load_config(os.environ if env is None else env)
    except ConfigError as exc:
        return fail(str(exc))
    encryption_valid = self_test(PhiCodec(config.phi_key))
    if not encryption_valid:
        return fail("PHI encryption self-test failed")
    try:
        log = JsonLog(config.log_file)
    except OSError as exc:
        return fail(f"cannot open API_LOG_FILE ({type(exc).__name__})")
    pool = ConnectionPool(config.database_url, min_size=1, max_size=8, open=False, name="sandbox-api",
                          kwargs={"connect_timeout": 3, "application_name": "sandbox-api"})
    pool.open(wait=False)
    app = ApiApp(config, pool, log, encryption_valid)
    try:
        server = make_server(HOST, config.port, app, threaded=True, request_handler=QuietHandler)
    except OSError as exc:
        pool.close()
        log.close()
        return fail(f"cannot listen on {HOST}:{config.port} ({type(exc).__name__})")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.write("info", "startup", port=config.port, useHipaaSchema=config.use_hipaa_schema,
              environment=config.environment, pid=os.getpid())
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        with contextlib.suppress(Exception):
            pool.close(timeout=5)
        log.write("info", "shutdown")
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
