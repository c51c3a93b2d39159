"""The reference API on a cloned database, as the API checks meet it, shared by the test files of the API checks,
the log source and the routes: one API per schema for a test module (its fixtures `hipaa`, `legacy`, `sandbox`
(both schemas) and `phi`, imported by name into the module that uses them), and `red`/`green`, which also hold every
message free of PHI and secrets."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from migration_gate.checks import api as checks
from migration_gate.config import Endpoint, GateConfig, load_config
from migration_gate.core.phi import PhiCodec
from migration_gate.core.result import CheckFailed, Result
from sandbox.api_process import SANDBOX_JWT_SECRET, ApiProcess
from sandbox.roles import as_role
from sandbox.synthetic import DEMO_USERS, SANDBOX_KEY
from tests.conftest import _create

CODEC = PhiCodec(SANDBOX_KEY)
USER, PASSWORD = DEMO_USERS[0]
PHI_PATHS = ("/api/patients", "/api/clinical-sessions", "/api/therapists")


@dataclass
class Sandbox:
    """A running API, the database behind it and the fixture user's token."""

    api: ApiProcess
    dsn: str
    hipaa: bool
    token: str = ""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api.base_url, timeout=10)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)

    def run(self, query: str | sql.Composable, params: tuple | dict | None = None) -> list[tuple]:
        with self.connect() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    @contextlib.contextmanager
    def broken(self, do: str | sql.Composable, undo: str | sql.Composable, params: tuple | None = None,
               undo_params: tuple | None = None) -> Iterator[None]:
        """Break the database for the block, then put it back whatever happens."""
        self.run(do, params)
        try:
            yield
        finally:
            self.run(undo, params if undo_params is None else undo_params)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in CONFIG.endpoints if self.hipaa or e.path != "/api/organizations")


CONFIG: GateConfig = load_config()


def start_api(pg, template: str, hipaa: bool, folder: Path, dsn: str | None = None) -> Sandbox:
    dsn = dsn or _create(pg, f"chk_{template}_{uuid.uuid4().hex[:8]}", template)
    api = ApiProcess(as_role(dsn, CONFIG.app_role.name), SANDBOX_KEY, hipaa, folder / "api.log",  # the app's role
                     folder / "maintenance.flag").start()
    sandbox = Sandbox(api, dsn, hipaa)
    with sandbox.client() as client:
        sandbox.token = checks.login(client, USER, PASSWORD)
    return sandbox


@pytest.fixture(scope="module")
def hipaa(pg, migrated_template, tmp_path_factory) -> Iterator[Sandbox]:
    sandbox = start_api(pg, migrated_template, True, tmp_path_factory.mktemp("chk_hipaa"))
    yield sandbox
    sandbox.api.stop()


@pytest.fixture(scope="module")
def legacy(pg, legacy_template, tmp_path_factory) -> Iterator[Sandbox]:
    sandbox = start_api(pg, legacy_template, False, tmp_path_factory.mktemp("chk_legacy"))
    yield sandbox
    sandbox.api.stop()


@pytest.fixture(scope="module", params=["legacy", "hipaa"])
def sandbox(request) -> Sandbox:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def phi(hipaa: Sandbox) -> list[str]:
    """Values that must never appear in a message: names, emails (decrypted), logins, secrets."""
    with hipaa.connect() as conn:
        names = [r[0].strip() for r in conn.execute("SELECT name FROM patients UNION SELECT name FROM"
                                                    " therapist_profiles UNION SELECT username FROM users_auth")]
        emails = [r[0] for r in conn.execute("SELECT email FROM users_auth")]
        emails += [CODEC.decrypt(r[0]).strip() for r in conn.execute(
            "SELECT patient_contact_email_encrypted FROM patients WHERE patient_contact_email_encrypted <> ''")]
    values = [*names, *emails, *(p for _, p in DEMO_USERS), hipaa.token, SANDBOX_KEY, SANDBOX_JWT_SECRET]
    return [v for v in values if v and len(v) >= 5]


def red(result: Result, phi: list[str], *phrases: str) -> str:
    """The result failed, its message names each phrase, and neither it nor the notes carry PHI or secrets."""
    with pytest.raises(CheckFailed) as failed:
        result.expect()
    message = str(failed.value)
    for phrase in phrases:
        assert phrase in message, message
    phi_free(message + "\n".join(result.notes), phi)
    return message


def phi_free(text: str, phi: list[str]) -> None:
    assert "@" not in text and "eyJ" not in text and "v1:" not in text, text
    leaked = [value for value in phi if value in text or value.lower() in text.lower()]
    assert not leaked, "a message carries PHI or a secret"


def green(result: Result, phi: list[str]) -> Result:
    phi_free("\n".join(result.notes), phi)
    assert result.checked > 0
    return result.expect()


