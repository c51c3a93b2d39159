"""Canaries: the sandbox's recognizable fake PHI and a canary run's secrets, a provider that runs the rehearsal
with them and breaks it on request, and a library-free scanner that looks for every canary in every artifact.

Why: a gate for PHI must prove that nothing it writes or prints (reports, results, state, progress, the app's
log, its terminal output) carries a value, a key, a password or a token; the only proof is to plant them and
search, in clear and in the encodings a value takes on its way into a file.

The faults (env CANARY_FAULTS, comma-separated) are applied by the rehearsal's own sandbox:
  legacy-phi  the canary patient's email ciphertext corrupted and its phone in clear (PRE-04/05 red)
  crash       a check raises with the canary patient's decrypted values in its message and prints them
  deploy-phi  after the deploy, the canary patient's email as v2 ciphertext (the app answers 500) and its note
              in clear in the new table (POST-13 and the app checks red)
  hook        the deploy hook fails, printing the host token, the API password and the key as a hook with
              `set -x` would
CANARY_OUT names a folder where the provider writes the secrets only known at run time (the fixture user's
token, the maintenance bypass), for the scanner; it is not an artifact of the run.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shlex
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from migration_gate.app.hooks import ShellHooks
from migration_gate.core.phi import PhiCodec
from migration_gate.core.progress import Progress
from sandbox.api_process import SandboxHooks
from sandbox.phases import SandboxTargets
from sandbox.provider import SandboxProvider, SandboxRehearsal
from sandbox.synthetic import CANARY, CANARY_PATIENT, CANARY_THERAPIST
from sandbox.target import Sandbox

HOST_TOKEN = "rnd_CanaryHostToken7Qz2Wk9Lm4Xp"  # what a hook's host API key looks like (RENDER_API_KEY)


def faults() -> set[str]:
    return {f for f in os.environ.get("CANARY_FAULTS", "").split(",") if f}


# -- the canaries and their encodings ------------------------------------------------------------------------------

def canaries(runtime: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """Every planted value by name: the PHI, the key, the fixture password, the JWT secret, the host token, and
    each run's run-time secrets (the fixture user's token, its header.payload prefix, the bypass token)."""
    found = {f"phi:{name}": value for name, value in CANARY.phi.items()}
    found.update({"key": CANARY.key, "password": CANARY.password, "jwt_secret": CANARY.jwt_secret,
                  "host_token": HOST_TOKEN})
    for run, secrets in (runtime or {}).items():
        for name, value in secrets.items():
            found[f"{run}:{name}"] = value
            if name == "token":  # any token issued to the fixture user starts so, whatever its expiry
                header, payload, _ = value.split(".")
                found[f"{run}:token_prefix"] = f"{header}.{payload[:24]}"
    return found


def _base64_forms(data: bytes) -> list[str]:
    """The canary's base64 as it shows inside a longer encoded text, at each of the three byte alignments
    (the characters its neighbours also touch are dropped), standard and URL-safe."""
    forms = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode()
        start = -(-shift * 4 // 3)  # characters that depend on the padding bytes before it
        end = (len(data) + shift) // 3 * 4  # full groups only
        piece = encoded[start:end]
        if len(piece) >= 8:
            forms += [piece, piece.replace("+", "-").replace("/", "_")]
    return forms


def encodings(value: str, raw_key: bool = False) -> dict[str, str]:
    """The forms one canary can take in an artifact; matching is case-insensitive, so upper and lower case of
    each form are covered by the scan itself."""
    data = bytes.fromhex(value) if raw_key else value.encode()
    forms = {"clear": value, "upper": value.upper(), "lower": value.lower(), "hex": data.hex(),
             "url": urllib.parse.quote(value, safe=""), "url-plus": urllib.parse.quote_plus(value),
             "json": json.dumps(value)[1:-1], "json-ascii": json.dumps(value, ensure_ascii=True)[1:-1],
             "html": html.escape(value)}
    for i, piece in enumerate(_base64_forms(data)):
        forms[f"base64-{i}"] = piece
    if raw_key:
        forms["base64-text"] = base64.b64encode(value.encode()).decode()
    return forms


@dataclass
class ScanReport:
    artifacts: int = 0
    bytes: int = 0
    canaries: int = 0
    needles: int = 0
    hits: list[tuple[str, str, str]] = field(default_factory=list)  # (artifact, canary, encoding)
    names: list[str] = field(default_factory=list)

    def figures(self) -> str:
        return (f"canary scan: {self.artifacts} artifacts, {self.bytes:,} bytes scanned, {self.canaries} canaries in "
                f"{self.needles} encoded forms (about {round(self.needles / max(self.canaries, 1))} each), "
                f"{len(self.hits)} hits")


def scan(artifacts: Iterable[tuple[str, bytes]], values: dict[str, str]) -> ScanReport:
    """Search every artifact (name, bytes) for every canary in every encoding, case-insensitively."""
    needles: dict[str, tuple[str, str]] = {}
    for name, value in values.items():
        for form, text in encodings(value, raw_key=name == "key").items():
            needles.setdefault(text.lower(), (name, form))
    report = ScanReport(canaries=len(values), needles=sum(len(encodings(v, n == "key")) for n, v in values.items()))
    for artifact, data in artifacts:
        report.artifacts += 1
        report.bytes += len(data)
        report.names.append(artifact)
        text = data.decode("utf-8", "replace").lower()
        for needle, (name, form) in needles.items():
            if needle in text:
                report.hits.append((artifact, name, form))
    return report


# -- the provider a canary rehearsal runs with ------------------------------------------------------------------

class CanaryHooks(SandboxHooks):
    """The sandbox's hooks, breaking the canary rows or failing as CANARY_FAULTS asks."""

    def __init__(self, box: Sandbox) -> None:
        super().__init__(box.api)
        self.box = box

    def deploy(self, use_hipaa_schema: bool) -> None:
        if use_hipaa_schema and "hook" in faults():
            line = (f"+ curl -H 'Authorization: Bearer {HOST_TOKEN}' RENDER_API_KEY={HOST_TOKEN} "
                    f"GATE_API_PASSWORD={CANARY.password} PHI_ENCRYPTION_KEY={CANARY.key}: 401")
            ShellHooks({"deploy_new_schema": f"echo {shlex.quote(line)} >&2; exit 22"}).deploy(True)
        super().deploy(use_hipaa_schema)
        if use_hipaa_schema and "deploy-phi" in faults():
            codec = PhiCodec(CANARY.key)
            with psycopg.connect(self.box.dsn, autocommit=True) as conn:
                conn.execute("UPDATE patients SET patient_contact_email_encrypted = %s, "
                             "patient_clinical_notes_encrypted = %s WHERE id = %s",
                             ("v2" + codec.encrypt(CANARY.email)[2:], CANARY.note, CANARY_PATIENT))


class CanaryRehearsal(SandboxRehearsal):
    """The rehearsal's sandbox with the canary key, password and JWT secret; legacy faults applied once seeded,
    and the run-time secrets written for the scanner."""

    def start(self) -> CanaryRehearsal:
        super().start()
        if "legacy-phi" in faults():
            with psycopg.connect(self.box.dsn, autocommit=True) as conn:
                conn.execute("UPDATE clients_hipaa SET email_encrypted = left(email_encrypted, -2) || "
                             "CASE WHEN right(email_encrypted, 2) = '00' THEN 'ff' ELSE '00' END, "
                             "phone_encrypted = %s WHERE id = %s", (CANARY.phone, CANARY_PATIENT))
        out = os.environ.get("CANARY_OUT")
        if out:
            with httpx.Client(base_url=self.api_base_url, timeout=10) as client:
                login = client.post("/api/login", json={"username": "demo_therapist1", "password": CANARY.password})
            token = login.cookies.get("auth_token") or login.json().get("token")
            secrets = {"token": token, "bypass": self.box.api.bypass_token}
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "secrets.json").write_text(json.dumps(secrets))
        return self

    @property
    def hooks(self) -> CanaryHooks:
        if self._hooks is None:
            self._hooks = CanaryHooks(self.box)
        return self._hooks


class CanaryProvider(SandboxProvider):
    """The sandbox provider of a canary run (GATE_SANDBOX_PROVIDER=tests.support.canaries:CanaryProvider)."""

    key = CANARY.key

    def targets(self, gate, workdir: Path, patients: int | None) -> SandboxTargets:
        return SandboxTargets(gate, workdir, patients, key=self.key)

    def rehearsal(self, workdir: Path, patients: int, seed: int, progress: Progress) -> CanaryRehearsal:
        return CanaryRehearsal(Sandbox(workdir=workdir, patients=patients, seed=seed, key=self.key, progress=progress,
                                       fixture_password=CANARY.password, jwt_secret=CANARY.jwt_secret))


# -- the crash: a pytest plugin of the phase suites (PYTEST_PLUGINS=tests.support.canaries) ----------------------

def pytest_configure(config: pytest.Config) -> None:
    """With the crash fault, the key check reads the canary rows, prints them and raises with them, as a
    careless check would."""
    if "crash" not in faults():
        return
    from migration_gate.checks import encryption

    def crashing(conn: psycopg.Connection, codec: PhiCodec, *args: object, **kwargs: object) -> None:
        name, note = conn.execute("SELECT name, notes_encrypted FROM clients_hipaa WHERE id = %s",
                                  (CANARY_PATIENT,)).fetchone()
        ssn = conn.execute("SELECT ssn_encrypted FROM therapist_phi WHERE user_id = %s",
                           (CANARY_THERAPIST,)).fetchone()[0]
        print(f"debug: row {CANARY_PATIENT} name={name} note={codec.decrypt(note)} ssn={codec.decrypt(ssn)}")
        raise ValueError(f"unexpected value in row {CANARY_PATIENT}: {name} {codec.decrypt(ssn)} "
                         f"{codec.decrypt(note)}")

    encryption.decrypts = crashing
