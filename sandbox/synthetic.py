"""Synthetic legacy data: fake people only, deterministic from a seed, with the edge cases real data has.

Rows come out as tuples in the column order of ``COLUMNS``; ``seed.py`` streams them into PostgreSQL with COPY.
Every random choice is drawn from a ``random.Random`` seeded by (seed, chunk), and IVs are built from
(seed, table, row id, column) so the output is byte-for-byte identical for the same seed, and no two values
share an IV.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import bcrypt
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from migration_gate.core.phi import parse_key, search_hash

PATIENTS_PER_THERAPIST = 50
CHUNK_PATIENTS = 20_000
# The synthetic example of target-app.md section 4: 32 bytes of 0x11. Sandbox only; never a real key.
SANDBOX_KEY = "11" * 32

# Documented demo logins (README): existing therapists that tests and the rehearsal log in as.
DEMO_USERS = (
    ("demo_therapist1", "demo-password-1"),
    ("demo_therapist2", "demo-password-2"),
    ("demo_therapist3", "demo-password-3"),
)



@dataclass(frozen=True)
class Canaries:
    """Recognizable fake PHI seeded into a few rows on every seed, and the credentials a canary run uses (key,
    fixture password, JWT secret): so a test can scan every artifact of a run for them, and one found is a leak."""

    name: str = "Zyqxcanary Obelia"
    email: str = "canary.7f3k@example.org"
    phone: str = "555-0199-4242"
    ssn: str = "900-07-4242"
    note: str = "CANARYNOTE-9c1e client disclosed zyqx history at intake"
    key: str = hashlib.sha256(b"hipaa-migration-gate canary key").hexdigest()
    password: str = "Canary-Pw-q8Zx4vT"
    jwt_secret: str = "canary-jwt-secret-5b7d1e9f0a2c4e6b8d3f-zyqx"

    @property
    def phi(self) -> dict[str, str]:
        return {"name": self.name, "email": self.email, "phone": self.phone, "ssn": self.ssn, "note": self.note}


CANARY = Canaries()
# The patient (of the first demo therapist, the fixture user) and the therapist whose rows carry the canaries.
CANARY_PATIENT = 1
CANARY_THERAPIST = 1

FIRST = ("Ana", "Zoë", "José", "Siobhán", "Ólafur", "Mary-Kate", "Đặng", "Nadia", "Kwame", "Li", "Fatima",
         "Jean-Luc", "Søren", "Chloé", "Aarav", "Björn", "Renée", "Tomás", "Yuki", "Ngozi", "Priya", "Oluwaseun")
LAST = ("O'Brien", "Núñez", "D'Angelo", "Ní Bhriain", "Þórsson", "Smith", "Nguyễn", "Müller", "García", "Kowalski",
        "O'Neil", "Dubois", "Łukasiewicz", "Østergaard", "Chen", "Okafor", "Van der Berg", "St. John")
# Names with surrounding padding or only non-Latin script, as people type them.
ODD_NAMES = ("  Anna Smith ", "李小龍", "Ελένη Παπαδοπούλου", "Renée  O'Connor", "ÅSA ÖBERG")
CITIES = ("Springfield", "Portland", "São Paulo", "Zürich", "Coeur d'Alene", "Montréal", "Austin")
STATES = ("OR", "TX", "MA", "CA", "NY", "WA", "IL")
GENDERS = ("female", "male", "non-binary", "prefer not to say")
RACES = ("Asian", "Black or African American", "White", "Native Hawaiian", "Two or more races")
PRONOUNS = ("she/her", "he/him", "they/them")
DIAGNOSES = ("F41.1", "F32.0", "F43.10", "F90.0", "F33.1", "Z63.0")
NOTES = (
    "Client reports improved sleep; continue CBT homework.",
    "Discussed coping strategies for work stress. Follow up in two weeks.",
    "Intake completed; history of anxiety since adolescence.",
    "Patient's mood stable, said \"better than last month\"; no SI.",
    "Reviewed safety plan; family session requested — réunion familiale.",
)
# Every shape numeric(10,2) allows: NULL, zero, cents, negative, whole, the maximum.
MONEY = (None, Decimal("0.00"), Decimal("0.01"), Decimal("0.50"), Decimal("-20.00"), Decimal("150.00"),
         Decimal("1200.50"), Decimal("99999999.99"), Decimal("75"), Decimal("125.25"))
PATIENT_STATUS = ("active", "active", "active", "inactive", "discharged")
SESSION_STATUS = ("completed", "completed", "scheduled", "cancelled", "no_show")
PLAN_STATUS = ("active", "draft", "inactive", "archived")
EPOCH = datetime(2019, 1, 1)
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

TABLE_NO = {"therapist_phi": 1, "clients_hipaa": 2, "sessions_hipaa": 3, "treatment_plans_hipaa": 4}

COLUMNS: dict[str, tuple[str, ...]] = {
    "users_auth": ("id", "username", "password", "email", "account_status", "mfa_enabled", "last_login",
                   "failed_login_attempts", "created_at", "updated_at"),
    "therapist_profiles": ("id", "user_id", "name", "title", "license_number", "license_state", "specialties",
                           "languages", "session_format", "base_rate", "sliding_scale", "business_address",
                           "business_city", "business_state", "business_zip_code", "business_phone",
                           "business_email", "npi_number", "taxonomy_code", "ein_number", "legal_business_name",
                           "group_session_rate", "created_at", "updated_at"),
    "therapist_phi": ("id", "user_id", "ssn_encrypted", "date_of_birth_encrypted", "personal_address_encrypted",
                      "personal_phone_encrypted", "personal_email_encrypted", "birth_city_encrypted",
                      "is_us_citizen", "emergency_contact_encrypted", "emergency_phone_encrypted",
                      "personal_email_search_hash", "personal_phone_search_hash", "created_at", "updated_at"),
    "clients_hipaa": ("id", "therapist_id", "name", "email_encrypted", "phone_encrypted", "address_encrypted",
                      "city_encrypted", "state_encrypted", "zip_code_encrypted", "date_of_birth_encrypted",
                      "gender_encrypted", "race_encrypted", "pronouns_encrypted", "notes_encrypted",
                      "primary_diagnosis_code_encrypted", "insurance_info_encrypted", "member_id_encrypted",
                      "email_search_hash", "phone_search_hash", "status", "type", "billing_type", "session_cost",
                      "no_show_fee", "copay_amount", "deductible_amount", "default_cpt_code",
                      "authorization_required", "stripe_customer_id", "deleted", "created_at", "updated_at"),
    "sessions_hipaa": ("id", "therapist_id", "client_id", "date", "duration", "type", "status", "notes_encrypted",
                       "assessments_encrypted", "treatment_goals_encrypted", "progress_notes_encrypted", "cpt_code",
                       "add_on_cpt_codes", "is_paid", "is_intake", "session_format", "created_at", "updated_at"),
    "treatment_plans_hipaa": ("id", "therapist_id", "client_id", "version", "status", "content_encrypted",
                              "goals_encrypted", "objectives_encrypted", "start_date", "end_date", "review_date",
                              "created_at", "updated_at"),
    "audit_logs_hipaa": ("id", "user_id", "action", "resource_type", "resource_id", "request_method",
                         "request_path", "response_status", "data_retention_date", "created_at"),
}


@dataclass(frozen=True)
class Plan:
    """Sizes derived from the patient count, shared by every worker."""

    seed: int
    patients: int
    fixture_password: str | None = None  # the first demo user's password instead of the documented one

    @property
    def therapists(self) -> int:
        # The last therapist owns no patients (an org with nothing to migrate is still an org).
        return max(len(DEMO_USERS) + 3, -(-self.patients // PATIENTS_PER_THERAPIST) + 1)

    @property
    def chunks(self) -> list[tuple[int, int]]:
        """Patient id ranges [first, last], fixed by size alone so output never depends on worker count."""
        return [(lo, min(lo + CHUNK_PATIENTS - 1, self.patients))
                for lo in range(1, self.patients + 1, CHUNK_PATIENTS)]

    def therapist_of(self, patient_id: int) -> int:
        return 1 + (patient_id - 1) % (self.therapists - 1)


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(f"{seed}:" + ":".join(map(str, parts)))


# random.choice/randrange cost ~1.5 us a call; these do the same from one random() and matter at 10^7 calls.
def _pick(rng: random.Random, seq: tuple):
    return seq[int(rng.random() * len(seq))]


def _between(rng: random.Random, lo: int, hi: int) -> int:
    """An int in [lo, hi)."""
    return lo + int(rng.random() * (hi - lo))


def visit_counts(plan: Plan, chunk: tuple[int, int]) -> list[tuple[int, int]]:
    """(sessions, treatment plans) per patient of a chunk: mostly a few, some patients with many."""
    rng = _rng(plan.seed, "counts", chunk[0])
    counts = []
    for pid in range(chunk[0], chunk[1] + 1):
        sessions = _between(rng, 25, 46) if pid % 97 == 5 else _pick(rng, (0, 1, 2, 3, 3, 4, 5))
        plans = _between(rng, 3, 6) if pid % 53 == 7 else _pick(rng, (0, 1, 1, 1, 2))
        counts.append((sessions, plans))
    return counts


def id_offsets(plan: Plan) -> list[tuple[int, int]]:
    """First session id and first plan id of every chunk (prefix sums of visit_counts)."""
    offsets, next_session, next_plan = [], 1, 1
    for chunk in plan.chunks:
        offsets.append((next_session, next_plan))
        counts = visit_counts(plan, chunk)
        next_session += sum(s for s, _ in counts)
        next_plan += sum(p for _, p in counts)
    return offsets


class _Encryptor:
    """PhiCodec.encrypt with IVs from (seed, table, row, column); inlined because it runs 10^7 times."""

    def __init__(self, seed: int, key: str) -> None:
        self.aead = AESGCM(parse_key(key))
        self.seed = seed & 0xFFFFFFFF

    def __call__(self, table: str, row_id: int, column: int, plaintext: str | None) -> str | None:
        if plaintext is None or plaintext == "":
            return plaintext  # NULL, or an empty string left by old code (the app reads both as NULL)
        iv = _IV.pack(self.seed, TABLE_NO[table], column, row_id, 0)
        sealed = self.aead.encrypt(iv, plaintext.encode(), None)
        return f"v1:{iv.hex()}:{sealed[-16:].hex()}:{sealed[:-16].hex()}"


_IV = struct.Struct(">IBBQH")


def _when(rng: random.Random, days: int = 2400) -> datetime:
    return EPOCH + timedelta(seconds=_between(rng, 0, days * 86400))


def _phone(rng: random.Random) -> str:
    n = _between(rng, 0, 10_000)
    return _pick(rng, (f"(555) 010-{n:04d}", f"555.010.{n:04d}", f"+1 555 010 {n:04d}"))


def _email(rng: random.Random, local: str) -> str:
    shape = _between(rng, 0, 6)
    if shape == 0:
        return f"  {local.title()}@Example.COM "
    if shape == 1:
        return f"{local.upper()}@example.org"
    return f"{local}@example.com"


def _person(rng: random.Random, row_id: int) -> str:
    if row_id % 41 == 3:
        return ODD_NAMES[(row_id // 41) % len(ODD_NAMES)]
    return f"{_pick(rng, FIRST)} {_pick(rng, LAST)}"


def _sometimes(rng: random.Random, value: str, p_null: float = 0.15, p_empty: float = 0.02) -> str | None:
    roll = rng.random()
    if roll < p_null:
        return None
    if roll < p_null + p_empty:
        return ""
    return value


def _session_note(rng: random.Random, patient_id: int) -> str | None:
    note = _sometimes(rng, _pick(rng, NOTES), 0.1)
    return CANARY.note if patient_id == CANARY_PATIENT else note


def _bcrypt_hash(rng: random.Random, password: str) -> str:
    salt = "".join(_pick(rng, _BCRYPT_ALPHABET) for _ in range(21)) + _pick(rng, ".Oeu")
    return bcrypt.hashpw(password.encode(), f"$2b$04${salt}".encode()).decode()


def users(plan: Plan, key: str) -> dict[str, list[tuple]]:
    """users_auth, therapist_profiles, therapist_phi and a little audit history (small tables)."""
    rng = _rng(plan.seed, "users")
    enc = _Encryptor(plan.seed, key)
    # Non-demo users get one of a few bcrypt hashes of unknown random passwords: hashing each costs too much
    # at scale, and their format is what matters.
    pool = [_bcrypt_hash(rng, f"locked-{rng.getrandbits(64):x}") for _ in range(8)]
    tables: dict[str, list[tuple]] = {name: [] for name in ("users_auth", "therapist_profiles", "therapist_phi",
                                                             "audit_logs_hipaa")}
    profile_id = phi_id = 0
    for uid in range(1, plan.therapists + 1):
        created = _when(rng, 400)
        if uid <= len(DEMO_USERS):
            username, password = DEMO_USERS[uid - 1]
            if uid == 1 and plan.fixture_password:
                password = plan.fixture_password
            pw_hash = _bcrypt_hash(rng, password)
        else:
            username, pw_hash = f"therapist{uid:07d}", pool[uid % len(pool)]
        email = _email(rng, f"therapist{uid}") if uid > 1 else "demo_therapist1@example.com"
        tables["users_auth"].append((uid, username, pw_hash, email, "active", False, None, 0, created, created))
        # Edge cases: some therapists have no profile, some a blank profile name (both: "<username>'s Practice").
        if uid > len(DEMO_USERS) and uid % 17 == 4:
            pass
        else:
            profile_id += 1
            name = "" if (uid > len(DEMO_USERS) and uid % 19 == 5) else _person(rng, uid)
            ein = None if uid % 5 == 0 else f"{_between(rng, 10, 99)}-{_between(rng, 10**6, 10**7)}"
            tables["therapist_profiles"].append((
                profile_id, uid, name, _pick(rng, ("LCSW", "PhD", "LMFT", "PsyD", None)), f"LIC-{uid:06d}",
                _pick(rng, STATES), '["anxiety", "depression"]', '["English", "Español"]',
                _pick(rng, ("in-person", "telehealth", "hybrid")), _pick(rng, MONEY), rng.random() < 0.3,
                f"{_between(rng, 1, 999)} Main St", _pick(rng, CITIES), _pick(rng, STATES),
                f"{_between(rng, 10000, 99999)}", _phone(rng), f"office{uid}@example.com",
                f"{_between(rng, 10**9, 10**10)}", "101YM0800X", ein,
                None if uid % 3 == 0 else f"Practice {uid} LLC", _pick(rng, MONEY), created, created))
        if uid % 23 != 6:  # some therapists never filled in their private details
            phi_id += 1
            phone, mail = _phone(rng), _email(rng, f"home{uid}")
            values = (f"900-{_between(rng, 10, 99)}-{_between(rng, 1000, 9999)}",
                      f"19{_between(rng, 50, 99)}-0{_between(rng, 1, 9)}-1{_between(rng, 0, 9)}",
                      f"{_between(rng, 1, 999)} Elm Rd", phone, mail, _pick(rng, CITIES))
            cipher = [enc("therapist_phi", phi_id, i, _sometimes(rng, v)) for i, v in enumerate(values)]
            if uid == CANARY_THERAPIST:
                cipher[0] = enc("therapist_phi", phi_id, 0, CANARY.ssn)
            tables["therapist_phi"].append((
                phi_id, uid, *cipher, rng.random() < 0.8,
                enc("therapist_phi", phi_id, 10, _sometimes(rng, _person(rng, uid + 7))),
                enc("therapist_phi", phi_id, 11, _sometimes(rng, _phone(rng))),
                search_hash(mail) if cipher[4] else None, search_hash(phone) if cipher[3] else None,
                created, created))
    for aid in range(1, max(4, plan.patients // 20) + 1):
        at = _when(rng)
        tables["audit_logs_hipaa"].append((
            aid, 1 + aid % plan.therapists, "READ", _pick(rng, ("PATIENT", "CLINICAL_SESSION", "THERAPIST_PHI")),
            None, "GET", "/api/patients", 200, at + timedelta(days=7 * 365), at))
    return tables


def patient_chunk(plan: Plan, chunk: tuple[int, int], first_ids: tuple[int, int], key: str
                  ) -> Iterator[tuple[str, tuple]]:
    """(table, row) for every patient of a chunk, then their sessions and treatment plans."""
    rng = _rng(plan.seed, "patients", chunk[0])
    enc = _Encryptor(plan.seed, key)
    session_id, plan_id = first_ids
    for pid, (n_sessions, n_plans) in zip(range(chunk[0], chunk[1] + 1), visit_counts(plan, chunk), strict=True):
        therapist = plan.therapist_of(pid)
        created = _when(rng)
        email, phone = _email(rng, f"patient{pid}"), _phone(rng)
        plain = (email, phone, f"{_between(rng, 1, 9999)} Oak Ave Apt {_between(rng, 1, 40)}", _pick(rng, CITIES),
                 _pick(rng, STATES), f"{_between(rng, 10000, 99999)}",
                 f"{_between(rng, 1930, 2015)}-{_between(rng, 1, 13):02d}-{_between(rng, 1, 29):02d}",
                 _pick(rng, GENDERS), _pick(rng, RACES), _pick(rng, PRONOUNS), _pick(rng, NOTES),
                 _pick(rng, DIAGNOSES), f"Acme Health PPO plan {_between(rng, 0, 100)}", f"M{_between(rng, 0, 10**8)}")
        cipher = [enc("clients_hipaa", pid, i, _sometimes(rng, v)) for i, v in enumerate(plain)]
        name = _person(rng, pid)
        if pid == CANARY_PATIENT:  # drawn as any other row first, so every other value stays as it was
            email, phone, name = CANARY.email, CANARY.phone, CANARY.name
            for i, value in ((0, email), (1, phone), (10, CANARY.note)):
                cipher[i] = enc("clients_hipaa", pid, i, value)
        yield "clients_hipaa", (
            pid, therapist, name, *cipher,
            search_hash(email) if cipher[0] else None, search_hash(phone) if cipher[1] else None,
            _pick(rng, PATIENT_STATUS), _pick(rng, ("individual", "couple", "family")),
            _pick(rng, ("private_pay", "insurance")), _pick(rng, MONEY), _pick(rng, MONEY), _pick(rng, MONEY),
            _pick(rng, MONEY), _pick(rng, ("90834", "90837", None)), rng.random() < 0.2,
            f"cus_{pid:010d}" if rng.random() < 0.3 else None, pid % 31 == 4, created, created)
        for _ in range(n_sessions):
            when = _when(rng)
            yield "sessions_hipaa", (
                session_id, therapist, pid, when, _pick(rng, (50, 50, 45, 60, 90)),
                _pick(rng, ("individual", "intake", "family")), _pick(rng, SESSION_STATUS),
                enc("sessions_hipaa", session_id, 0, _session_note(rng, pid)),
                enc("sessions_hipaa", session_id, 1, _sometimes(rng, "GAD-7 score 8; PHQ-9 score 6", 0.7)),
                enc("sessions_hipaa", session_id, 2, _sometimes(rng, "Reduce avoidance behaviours", 0.7)),
                enc("sessions_hipaa", session_id, 3, _sometimes(rng, "Progressing toward goal 1", 0.8)),
                _pick(rng, ("90834", "90837", "90791")), _pick(rng, ('[]', '[]', '["90785"]')),
                rng.random() < 0.6, rng.random() < 0.1, _pick(rng, ("in-person", "telehealth")), when, when)
            session_id += 1
        for version in range(1, n_plans + 1):
            start = _when(rng)
            yield "treatment_plans_hipaa", (
                plan_id, therapist, pid, version, _pick(rng, PLAN_STATUS),
                enc("treatment_plans_hipaa", plan_id, 0, _sometimes(rng, "Plan: weekly CBT, review in 90 days")),
                enc("treatment_plans_hipaa", plan_id, 1, _sometimes(rng, "1) sleep 7h 2) return to work")),
                enc("treatment_plans_hipaa", plan_id, 2, _sometimes(rng, "Objective: GAD-7 under 5", 0.4)),
                start, None if rng.random() < 0.6 else start + timedelta(days=180), start + timedelta(days=90),
                start, start)
            plan_id += 1
