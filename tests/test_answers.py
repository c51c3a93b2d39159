"""The app's answers before and after the cut-over (migration_gate.app.answers) against the real reference API on
each schema: green for a correct migration, red naming endpoint, record id and field for a new API that drops a
field, changes a value or returns another patient's session, the checks' own writes left out, and no plaintext PHI
recorded. Two apps are described: the reference API with the loma-org app's contract (migration.toml) and with
its classic one (SANDBOX_API_CONTRACT=classic, tests/fixtures/classic_contract.toml); each is green under its own
description and red when a value changes.

The legacy API runs on a clone of the seeded template, the new one on a clone of the migrated template (the same
data after the migration); the recording is made once for the module.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from migration_gate.app import answers
from migration_gate.checks import api as checks
from migration_gate.config import AnswerRequest, ConfigError, load_answers, load_config, load_probe
from migration_gate.core.phi import PhiCodec
from migration_gate.core.result import CheckFailed
from sandbox.api_process import ApiProcess
from sandbox.roles import as_role
from sandbox.synthetic import DEMO_USERS, SANDBOX_KEY
from tests.conftest import _create, contract

GATE = load_config()
SETTINGS = GATE.answers
USER, PASSWORD = DEMO_USERS[0]
ENV = {"GATE_API_USERNAME": USER, "GATE_API_PASSWORD": PASSWORD}
CLASSIC_PROBE, CLASSIC = contract()
# The one-patient routes of each app: the legacy app's (and the classic contract's), the loma-org app's.
LEGACY_ROUTES = ("/api/patients/{id}", "/api/patients/{id}/sessions", "/api/patients/{id}/treatment-plans")
LOMA_ROUTES = ("/api/patients/{id}", "/api/clinical-sessions/patient/{id}")


def _api(dsn: str, hipaa: bool, folder: Path, faults: str = "", contract: str = "") -> ApiProcess:
    api = ApiProcess(as_role(dsn, GATE.app_role.name), SANDBOX_KEY, hipaa, folder / f"api-{uuid.uuid4().hex[:6]}.log",
                     folder / "maintenance.flag")
    if faults:
        api.extra_env["SANDBOX_API_FAULTS"] = faults
    if contract:
        api.extra_env["SANDBOX_API_CONTRACT"] = contract
    return api.start()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("answers_run")


@pytest.fixture(scope="module")
def legacy_dsn(pg, legacy_template) -> str:
    return _create(pg, f"ans_legacy_{uuid.uuid4().hex[:8]}", legacy_template)


@pytest.fixture(scope="module")
def hipaa_dsn(pg, migrated_template) -> str:
    return _create(pg, f"ans_hipaa_{uuid.uuid4().hex[:8]}", migrated_template)


@pytest.fixture(scope="module")
def recorded(legacy_dsn, run_dir, tmp_path_factory) -> dict:
    """The legacy app's answers, recorded as the pre-checks do."""
    api = _api(legacy_dsn, False, tmp_path_factory.mktemp("ans_legacy_api"))
    try:
        with httpx.Client(base_url=api.base_url, timeout=15) as client:
            result = answers.record_before(client, SETTINGS, SANDBOX_KEY, run_dir, "premigration", ENV)
            result.expect()
            _invisible_patient_is_not_found(client, legacy_dsn, "clients_hipaa", LEGACY_ROUTES)
    finally:
        api.stop()
    assert result.checked > 50, result.notes
    return answers.load(run_dir, "premigration")


@pytest.fixture(scope="module")
def hipaa_api(hipaa_dsn, tmp_path_factory) -> Iterator[ApiProcess]:
    api = _api(hipaa_dsn, True, tmp_path_factory.mktemp("ans_hipaa_api"))
    yield api
    api.stop()


def _token(client: httpx.Client) -> str:
    return checks.login(client, USER, PASSWORD)


def _invisible_patient_is_not_found(client: httpx.Client, dsn: str, table: str, routes: tuple[str, ...]) -> None:
    """The one-patient routes keep the list's visibility rule: a patient the list does not show is 404 there."""
    token = _token(client)
    auth = {"Authorization": f"Bearer {token}"}
    shown = {p["id"] for page in range(1, 20) for p in client.get(
        "/api/patients", params={"page": page, "limit": 100}, headers=auth).json()["data"]}
    with psycopg.connect(dsn) as conn:
        every = {i for (i,) in conn.execute(f"SELECT id FROM {table}")}  # noqa: S608 - a fixed table name
    hidden = min(every - shown)
    for route in routes:
        assert client.get(route.format(id=hidden), headers=auth).status_code == 404, route
        assert client.get(route.format(id=min(shown)), headers=auth).status_code == 200, route
    assert client.get(f"/api/patients/{min(shown)}").status_code == 401


def _after(api: ApiProcess, run_dir: Path, settings=SETTINGS):
    with httpx.Client(base_url=api.base_url, timeout=15) as client:
        return answers.check_after(client, settings, SANDBOX_KEY, run_dir, ENV)


def test_a_correct_migration_gives_the_same_answers(recorded, hipaa_api, run_dir, hipaa_dsn):
    """The loma-org app's contract: its own routes (a patient's sessions under clinical-sessions), professionalTitle
    for title, decrypted fields left out where the ciphertext is NULL, nested objects: all described, all green."""
    with httpx.Client(base_url=hipaa_api.base_url, timeout=15) as client:
        _invisible_patient_is_not_found(client, hipaa_dsn, "patients", LOMA_ROUTES)
        for route in LEGACY_ROUTES[1:]:  # the routes it does not have
            assert client.get(route.format(id=1), headers={"Authorization": f"Bearer {_token(client)}"}
                              ).status_code == 404, route
    result = _after(hipaa_api, run_dir).expect()
    assert result.checked > 50
    assert any("/treatment-plans: the new app has no such route ([answers] new_path = false): 20 request(s) "
               "recorded before, not compared" in note for note in result.notes), result.notes
    with psycopg.connect(hipaa_dsn) as conn:  # the new routes are PHI reads: audited like the lists
        audited = conn.execute("SELECT count(*) FROM audit_logs_hipaa WHERE request_path LIKE"
                               " '/api/clinical-sessions/patient/%%' AND resource_type = 'CLINICAL_SESSION'"
                               ).fetchone()[0]
    assert audited > 0


def test_absent_and_null_differ_when_the_description_says_so(recorded, hipaa_api, run_dir):
    strict = dataclasses.replace(SETTINGS, absent_equals_null=False)
    result = _after(hipaa_api, run_dir, strict)
    assert not result.ok and all(p.endswith(" missing") or " missing in " in p or p.startswith("... and")
                                 for p in result.problems), result.problems
    assert any(re.fullmatch(r"GET /api/patients record \d+: field patient\w+ missing", p) for p in result.problems)


def _first_session(recording: dict) -> tuple[str, str]:
    for entry in recording["logins"].values():
        for patient, call in entry["requests"]["/api/patients/{id}/sessions"]["calls"].items():
            if call["records"]:
                return patient, next(iter(call["records"]))
    raise AssertionError("no sampled patient has a session")


def test_a_new_api_that_drops_a_field_or_swaps_a_session_is_red(recorded, hipaa_dsn, run_dir, tmp_path_factory):
    patient, session = _first_session(recorded)
    broken = _api(hipaa_dsn, True, tmp_path_factory.mktemp("ans_broken"),
                  faults=f"drop-field:/api/patients:patientDob,swap-session:{session},"
                         "change-field:/api/therapists:professionalTitle")
    try:
        result = _after(broken, run_dir)
    finally:
        broken.stop()
    with pytest.raises(CheckFailed):
        result.expect()
    problems = result.problems
    first = next(iter(recorded["logins"].values()))["requests"]["/api/patients"]["calls"][""]["records"]
    some_patient = next(iter(first))
    # the dropped field: named by endpoint, record id and field, for the list and for one patient
    assert f"GET /api/patients record {some_patient}: field patientDob missing" in problems, problems
    assert f"GET /api/patients/{patient} record {patient}: field patientDob missing" in problems, problems
    assert any(p.startswith("GET /api/patients record ...: field patientDob missing in ") for p in problems)
    # the swapped session: the patient's own session is gone and another patient's is there instead (named by
    # the route the new app answered, [answers] new_path)
    assert f"GET /api/clinical-sessions/patient/{patient} record {session}: missing" in problems, problems
    assert any(p.startswith(f"GET /api/clinical-sessions/patient/{patient} record ") and p.endswith(
        ": appears that was not there before") for p in problems), problems
    assert not any("sessions" in p and "field" in p for p in problems), problems  # nothing else differs there
    # a renamed field compares by value: the legacy title against the new professionalTitle
    assert "GET /api/therapists record 1: field professionalTitle differs" in problems, problems


def test_the_checks_own_writes_are_left_out_by_id(recorded, hipaa_api, run_dir):
    with httpx.Client(base_url=hipaa_api.base_url, timeout=15) as client:
        created = checks.search_finds_patient(client, _token(client)).expect()
    probe = next(n.split()[3] for n in created.notes if n.startswith("probe patient id"))
    result = _after(hipaa_api, run_dir)
    assert f"GET /api/patients record {probe}: appears that was not there before" in result.problems, result.problems
    answers.note_own_write(run_dir, "/api/patients", probe)
    _after(hipaa_api, run_dir).expect()


def _plaintext(dsn: str) -> list[str]:
    """Every decrypted PHI value and name of the sandbox (4 characters or more), to be looked for."""
    codec = PhiCodec(SANDBOX_KEY)
    values: set[str] = set()
    with psycopg.connect(dsn) as conn:
        for table in ("patients", "clinical_sessions", "patient_treatment_plans"):
            columns = [c for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND column_name LIKE"
                " '%%\\_encrypted'", (table,))]
            for row in conn.execute(f"SELECT {', '.join(columns)} FROM {table} LIMIT 400"):  # noqa: S608 - catalog names
                values.update(codec.decrypt(v) for v in row if v)
        values.update(n for (n,) in conn.execute("SELECT name FROM patients UNION SELECT username FROM users_auth"))
    return sorted(v.strip() for v in values if v and len(v.strip()) >= 4)


def test_the_recordings_and_reports_hold_no_plaintext_phi(recorded, run_dir, hipaa_dsn, hipaa_api):
    result = _after(hipaa_api, run_dir)
    files = sorted(answers.folder(run_dir).glob("*.json"))
    assert {f.name for f in files} >= {"premigration.json", "postmigration.json"}
    text = "\n".join(f.read_text() for f in files) + "\n".join(result.problems + result.notes)
    # a value as a token of its own (a short zip code occurs inside some hex digest by chance)
    leaked = [v for v in _plaintext(hipaa_dsn)
              if v in text and re.search(rf"(?<![0-9A-Za-z]){re.escape(v)}(?![0-9A-Za-z])", text)]
    assert not leaked, f"{len(leaked)} plaintext values in the recordings"
    for recording in (json.loads(f.read_text()) for f in files if f.name != answers.OWN_WRITES):
        for entry in recording["logins"].values():
            for request in entry["requests"].values():
                for call in request["calls"].values():
                    for digests in call["records"].values():
                        assert all(len(d) == 32 for d in [digests["record"], *digests["fields"].values()])
    assert PASSWORD not in text and USER not in text


def test_bad_answers_config_is_one_clear_line():
    with pytest.raises(ConfigError, match="password_env"):
        answers_config({"logins": [{"username": "x", "password": "secret"}]})
    with pytest.raises(ConfigError, match="ids_from"):
        answers_config({"requests": [{"path": "/api/patients/{id}"}]})
    with pytest.raises(ConfigError, match=r"request /api/therapists: new_path must be a path starting with / \(or "
                                          "false"):
        answers_config({"requests": [{"path": "/api/therapists", "new_path": "api/staff"}]})
    with pytest.raises(ConfigError, match=r"new_path must hold \{id\} exactly when path does"):
        answers_config({"requests": [{"path": "/api/patients"}, {"path": "/api/patients/{id}/sessions",
                                      "ids_from": "/api/patients", "new_path": "/api/clinical-sessions"}]})
    with pytest.raises(ConfigError, match="nested must be a list of field names"):
        answers_config({"nested": "patient"})
    with pytest.raises(ConfigError, match="absent_equals_null must be true or false"):
        answers_config({"absent_equals_null": "yes"})
    with pytest.raises(ConfigError, match=r"\[api.probe\]: create must be a path starting with /"):
        load_probe({"create": "api/patients"}, "migration.toml [api.probe]")
    with pytest.raises(ConfigError, match=r"\[api.probe\]: unknown key mail"):
        load_probe({"mail": "contactEmail"}, "migration.toml [api.probe]")
    with pytest.raises(ConfigError, match=r"email must be a non-empty string"):
        load_probe({"email": ""}, "migration.toml [api.probe]")
    with pytest.raises(ConfigError, match=r"read must hold \{id\}"):
        load_probe({"read": "/api/patients"}, "migration.toml [api.probe]")


def test_nested_objects_flatten_to_dotted_fields_and_patterns_ignore():
    settings = answers_config({"renames": {"title": "professionalTitle"}, "nested": ["therapist"],
                               "ignore": ["*Encrypted", "therapist.password", "user"]})
    record = {"id": 1, "title": "LCSW", "notesEncrypted": "v1:...", "user": {"id": 1},
              "therapist": {"id": 7, "password": "$2b$...", "title": "PhD", "createdAt": "2024-03-01T10:00:00.000Z"}}
    assert answers.normalize(record, settings, legacy=True) == {
        "id": "1", "professionalTitle": "LCSW", "therapist.id": "7", "therapist.professionalTitle": "PhD",
        "therapist.createdAt": "2024-03-01T10:00:00"}
    whole = answers_config({})
    assert answers.normalize(record, whole, legacy=False)["therapist"] == answers.canonical(record["therapist"])


@pytest.fixture(scope="module")
def nested_pair(hipaa_dsn, tmp_path_factory) -> Iterator[tuple[ApiProcess, ApiProcess]]:
    """The loma-contract API, and one that changes the name inside every session's nested patient."""
    folder = tmp_path_factory.mktemp("ans_nested")
    broken = _api(hipaa_dsn, True, folder, faults="change-field:/api/clinical-sessions:patient.name")
    right = _api(hipaa_dsn, True, folder)
    yield right, broken
    right.stop()
    broken.stop()


@pytest.mark.parametrize(("described", "expected"), [
    ({"nested": ["patient"]}, "field patient.name differs"),
    ({}, "field patient differs"),
    ({"ignore": ["patient"]}, None),
], ids=["by-own-keys", "as-one-value", "ignored-by-name"])
def test_a_nested_object_is_compared_by_its_own_keys_as_one_value_or_ignored(nested_pair, described, expected):
    settings = dataclasses.replace(SETTINGS, requests=(AnswerRequest("/api/clinical-sessions", paginated=True),),
                                   ignore=tuple(described.get("ignore", ())), nested=tuple(described.get("nested", ())))
    recordings = []
    for api in nested_pair:
        with httpx.Client(base_url=api.base_url, timeout=15) as client:
            nonce = recordings[0]["nonce"] if recordings else None
            recordings.append(answers.record(client, settings, [(USER, PASSWORD)], SANDBOX_KEY, legacy=False,
                                             nonce=nonce))
    result = answers.compare(*recordings, settings)
    if expected is None:
        result.expect()
        assert result.checked > 50
    else:
        assert result.problems and all(expected in p for p in result.problems), result.problems
        assert re.fullmatch(rf"GET /api/clinical-sessions record \d+: {expected}", result.problems[0])


# -- the second described app: the reference API with its classic contract -------------------------------------------


@pytest.fixture(scope="module")
def classic(pg, legacy_dsn, migrated_template, tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A run folder holding the legacy app's answers recorded under the classic description, and a copy of the
    migrated data for the classic-contract API."""
    run_dir = tmp_path_factory.mktemp("ans_classic_run")
    api = _api(legacy_dsn, False, tmp_path_factory.mktemp("ans_classic_legacy"))
    try:
        with httpx.Client(base_url=api.base_url, timeout=15) as client:
            answers.record_before(client, CLASSIC, SANDBOX_KEY, run_dir, "premigration", ENV).expect()
    finally:
        api.stop()
    yield run_dir, _create(pg, f"ans_classic_{uuid.uuid4().hex[:8]}", migrated_template)


def test_the_classic_contract_is_a_second_described_app_green_and_red_when_a_value_changes(classic, tmp_path):
    run_dir, dsn = classic
    api = _api(dsn, True, tmp_path, contract="classic")
    try:
        with httpx.Client(base_url=api.base_url, timeout=15) as client:
            _invisible_patient_is_not_found(client, dsn, "patients", LEGACY_ROUTES)
            probe = checks.search_finds_patient(client, _token(client), probe=CLASSIC_PROBE).expect()
            answers.note_own_write(run_dir, "/api/patients", probe.notes[0].split()[3])
        own = _after(api, run_dir, CLASSIC).expect()
        under_loma = _after(api, run_dir)  # the other app's description does not fit this app
    finally:
        api.stop()
    assert own.checked > 50
    problems = under_loma.problems
    assert "GET /api/therapists record 1: field professionalTitle missing" in problems, problems
    assert any(re.fullmatch(r"GET /api/clinical-sessions/patient/\d+: answered 404 \(before: 200\)", p)
               for p in problems), problems
    broken = _api(dsn, True, tmp_path, contract="classic",
                  faults="change-field:/api/patients:patientGender,drop-field:/api/therapists:title")
    try:
        result = _after(broken, run_dir, CLASSIC)
    finally:
        broken.stop()
    assert any(re.fullmatch(r"GET /api/patients record \d+: field patientGender differs", p) for p in result.problems)
    assert any(re.fullmatch(r"GET /api/patients/\d+ record \d+: field patientGender differs", p)
               for p in result.problems), result.problems
    assert "GET /api/therapists record 1: field title missing" in result.problems, result.problems


def test_each_probe_description_fits_its_own_app_only(hipaa_api, classic, tmp_path):
    """POST-16 against the loma contract with the classic body (email/phone): the app creates the patient without
    them, silently, and the search finds nothing; red, naming the field the description chose."""
    with httpx.Client(base_url=hipaa_api.base_url, timeout=15) as client:
        result = checks.search_finds_patient(client, _token(client), probe=CLASSIC_PROBE)
    assert not result.ok
    assert re.fullmatch(r"GET /api/patients/\d+: the probe patient's email does not read back as it was sent \(field "
                        r"patientContactEmail; the create body named it email: \[api.probe\]\)", result.problems[0])
    assert re.fullmatch(r"POST /api/patients/search: the probe patient's email found 0 patients \(expected exactly "
                        r"patient \d+\)", result.problems[1])
    api = _api(classic[1], True, tmp_path, contract="classic")
    try:
        with httpx.Client(base_url=api.base_url, timeout=15) as client:
            other = checks.search_finds_patient(client, _token(client))  # the loma-org body on the classic app
    finally:
        api.stop()
    assert not other.ok and "found 0 patients" in other.problems[-1], other.problems


def answers_config(spec: dict):
    return load_answers(spec, "migration.toml [answers]")


def test_one_canonical_form_per_meaning_and_keyed_digests():
    assert answers.canonical("12.50") == answers.canonical(12.5) == "12.5"
    assert answers.canonical("2024-03-01T10:00:00.000Z") == answers.canonical("2024-03-01T05:00:00-05:00") \
        == answers.canonical("2024-03-01T10:00:00") == "2024-03-01T10:00:00"
    assert answers.canonical("02139") == "02139" and answers.canonical("1990-05-01") == "1990-05-01"
    assert answers.canonical({"b": [1, "x"], "a": None}) == {"a": None, "b": ["1", "x"]}
    one, other = answers.Digester(SANDBOX_KEY, "n1"), answers.Digester(SANDBOX_KEY, "n2")
    assert one("1990-05-01") == answers.Digester(SANDBOX_KEY, "n1")("1990-05-01") != other("1990-05-01")
    assert one("1990-05-01") != answers.Digester("ab" * 32, "n1")("1990-05-01")  # needs the PHI key


def test_the_same_difference_in_many_records_is_named_three_times_then_counted():
    lines = [f"GET /api/patients/{i} record {i}: field patientDob missing" for i in range(1, 8)]
    folded = answers.fold([*lines, "login 1 (X): not requested after the cut-over"])
    assert folded == [*lines[:3], "login 1 (X): not requested after the cut-over",
                      "GET /api/patients/{id} record ...: field patientDob missing in 4 more records"]


def test_requests_the_legacy_app_does_not_answer_are_red_and_never_a_baseline(legacy_dsn, tmp_path):
    """A recording of 404s or maintenance 503s proves nothing: red where it is made, and POST-19 never compares
    with it (a green comparison of nothing would pass any new app)."""
    missing = dataclasses.replace(SETTINGS, requests=(*SETTINGS.requests, AnswerRequest("/api/organizations")))
    api = _api(legacy_dsn, False, tmp_path)
    try:
        with httpx.Client(base_url=api.base_url, timeout=15) as client:
            absent = answers.record_before(client, missing, SANDBOX_KEY, tmp_path / "absent", "premigration", ENV)
            api.maintenance_file.touch()  # maintenance on, and these requests without the bypass
            closed = answers.record_before(client, SETTINGS, SANDBOX_KEY, tmp_path / "closed", "maintenance", ENV)
    finally:
        api.stop()
    assert any(p.endswith("GET /api/organizations: 1 request(s) not answered 200 (first: 404)")
               for p in absent.problems), absent.problems
    assert not closed.ok and answers.latest_before(tmp_path / "closed") is None, closed.problems
    assert answers.latest_before(tmp_path / "absent") is None
