"""Run the reference API (sandbox.api) as a child process on 127.0.0.1, the way a deploy would.

Tests and the rehearsal use it to start the app against a database, flip maintenance mode, and "deploy" the
new schema flag with a restart, all through real HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx
import psycopg

from migration_gate.app.appserver import AppServer
from migration_gate.core.redact import safe_message
from migration_gate.db.embedded import free_port

HOST = "127.0.0.1"  # the API binds only here (sandbox.api.HOST)
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 15.0
SANDBOX_JWT_SECRET = "sandbox-jwt-secret-not-for-production-0123456789"  # 32+ bytes: pyjwt warns on shorter
STOP_TIMEOUT = 10.0


class PortTaken(RuntimeError):
    """The API could not listen on its port: another process took it between free_port() and the bind."""


class ApiProcess:
    """One API server process; start() returns once GET /health answers (any status)."""

    def __init__(self, database_url: str, phi_key: str, use_hipaa_schema: bool, log_file: Path,
                 maintenance_file: Path, port: int | None = None, jwt_secret: str = SANDBOX_JWT_SECRET) -> None:
        self.database_url = database_url
        self.phi_key = phi_key
        self.use_hipaa_schema = use_hipaa_schema
        self.log_file = Path(log_file)
        self.maintenance_file = Path(maintenance_file)
        self.port = port or free_port()
        self._port_picked = port is None  # ours to pick again while it never served (free_port's rare race)
        self.jwt_secret = jwt_secret
        self.bypass_token = secrets.token_hex(16)
        self.extra_env: dict[str, str] = {}  # more of the API's configuration (SANDBOX_API_DELAY_MS), at next start
        # what the start command runs before the server on the new schema: the app's own migrations, as the real
        # app's deploy runs them before every start (sandbox.deploy); None: nothing
        self.app_migrations: Callable[[], None] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def bypass_headers(self) -> dict[str, str]:
        """Headers that let the operator's checks through maintenance mode."""
        return {"X-Maintenance-Bypass": self.bypass_token}

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs (lets a caller tell a restart from a live switch)."""
        return self._proc.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def child_env(self) -> dict[str, str]:
        """os.environ plus the API's configuration (the key goes only into the child's environment)."""
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.database_url,
            "PHI_ENCRYPTION_KEY": self.phi_key,
            "USE_HIPAA_SCHEMA": "true" if self.use_hipaa_schema else "false",
            "JWT_SECRET": self.jwt_secret,
            "MAINTENANCE_FLAG_FILE": str(self.maintenance_file),
            "API_LOG_FILE": str(self.log_file),
            "PORT": str(self.port),
            "MAINTENANCE_BYPASS_TOKEN": self.bypass_token,
        })
        env.update(self.extra_env)
        return env

    def start(self) -> ApiProcess:
        """Start the child and wait for /health; an early exit raises with the child's last stderr line."""
        if self.running:
            raise RuntimeError("the API process is already running")
        if self.use_hipaa_schema and self.app_migrations is not None:
            try:
                self.app_migrations()
            except psycopg.Error as exc:  # the start command fails before the server starts, as a deploy would
                raise RuntimeError(f"the app's migrations failed at start: {safe_message(exc)}") from None
        for _ in range(3):
            try:
                return self._start_once()
            except PortTaken:
                if not self._port_picked:  # a restart keeps its port: another process took it meanwhile
                    raise RuntimeError(f"API cannot listen on {HOST}:{self.port}: another process took it") from None
                self.port = free_port()
        raise RuntimeError("API found no free port in 3 tries")

    def _start_once(self) -> ApiProcess:
        """One start: ready once its own startup line is in its log (it listens: a /health answer alone could come
        from another process that took the same port) and /health answers."""
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - open for the whole life of the child
        self._proc = subprocess.Popen([sys.executable, "-m", "sandbox.api"], cwd=ROOT, env=self.child_env(),
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + START_TIMEOUT
        listening = False
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    message = self._last_stderr_line()
                    self._close_stderr()
                    if "cannot listen" in message or "in use by another program" in message:  # ours, werkzeug's
                        raise PortTaken(message)
                    raise RuntimeError(f"API exited with code {self._proc.returncode}: {message}")
                listening = listening or self._started_since(offset)
                if listening:
                    with contextlib.suppress(httpx.TransportError):
                        client.get(f"{self.base_url}/health")
                        self._port_picked = False
                        return self
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"API did not answer GET /health within {START_TIMEOUT:.0f}s")

    def _started_since(self, offset: int) -> bool:
        """Our child wrote its startup line (after it bound its port) into the log, past `offset`."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                lines = log.read().splitlines()
        except OSError:
            return False
        pid = self._proc.pid if self._proc is not None else None
        for line in lines:
            if b'"startup"' in line:
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("pid") == pid:
                        return True
        return False

    def detach(self) -> None:
        """Leave the server running after we exit (scripts/rehearse --keep)."""
        self._proc = None

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL if it does not go."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self._close_stderr()

    def restart(self, use_hipaa_schema: bool | None = None) -> ApiProcess:
        """The deploy step: stop, optionally flip USE_HIPAA_SCHEMA, start again on the same port."""
        self.stop()
        if use_hipaa_schema is not None:
            self.use_hipaa_schema = use_hipaa_schema
        return self.start()

    def maintenance(self, on: bool) -> None:
        """Switch maintenance mode; the server checks the flag file on every request, no restart needed."""
        if on:
            self.maintenance_file.touch()
        else:
            self.maintenance_file.unlink(missing_ok=True)

    def _last_stderr_line(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> ApiProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class ServingApp:
    """What answers on the sandbox's base URL: the reference API, or a team's own app ([rehearsal] app_new,
    app_legacy; migration_gate.app.appserver) on the side it serves. A team's app gets the reference API's port, so
    the base URL the gate knows stays the same whichever app answers."""

    def __init__(self, api: ApiProcess, new: AppServer | None = None, legacy: AppServer | None = None) -> None:
        self.api = api
        self.new = new
        self.legacy = legacy

    def team_app(self, use_hipaa_schema: bool) -> AppServer | None:
        return self.new if use_hipaa_schema else self.legacy

    def label(self, use_hipaa_schema: bool) -> str:
        app = self.team_app(use_hipaa_schema)
        return app.label if app is not None else "the reference API (sandbox.api)"

    @property
    def pid(self) -> int | None:
        return next((app.pid for app in (self.api, self.new, self.legacy) if app is not None and app.pid), None)

    def start(self, use_hipaa_schema: bool) -> None:
        """Where a deploy starts the side's app: the reference API with USE_HIPAA_SCHEMA, or the team's own app
        (whose own start command runs its own migrations, as its host's start command does)."""
        app = self.team_app(use_hipaa_schema)
        if app is None:
            self.api.use_hipaa_schema = use_hipaa_schema
            self.api.start()
        else:
            app.start()

    def stop(self) -> None:
        for app in (self.api, self.new, self.legacy):
            if app is not None:
                app.stop()

    def deploy(self, use_hipaa_schema: bool) -> None:
        """The deploy step: whatever answers now is stopped, then the side's app starts on the same port."""
        self.stop()
        self.start(use_hipaa_schema)


class SandboxHooks:
    """The cut-over's hooks for the sandbox: maintenance is the flag file, a deploy is a restart with the flag,
    and "off the box" is a second folder (`offsite`, default beside the API's log) the backup is copied to, as an
    `aws s3 cp` hook would upload it; the location is that copy's file:// URL."""

    def __init__(self, api: ApiProcess, offsite: Path | None = None, serving: ServingApp | None = None) -> None:
        self.api = api
        self.serving = serving  # a team's own app on one side or both (None: the reference API on both)
        self.offsite = Path(offsite) if offsite else api.log_file.parent / "offsite"
        self.notify_file = api.log_file.parent / "notify.log"  # the status lines, as a chat channel would get them

    def notify(self, line: str, env: dict[str, str]) -> None:
        """The status updates of a run appended to notify.log in the sandbox folder (the rehearsal shows it)."""
        with self.notify_file.open("a", encoding="utf-8") as out:
            out.write(f"{datetime.now(UTC):%H:%M:%S}Z {line}\n")

    def alert(self, env: dict[str, str]) -> None:
        """A red watch round's alert appended to alerts.log in the sandbox folder, as a pager would get it."""
        with (self.api.log_file.parent / "alerts.log").open("a", encoding="utf-8") as out:
            out.write(f"{datetime.now(UTC):%H:%M:%S}Z {env['GATE_ALERT_MESSAGE']}\n---\n")

    def store_backup(self, env: dict[str, str]) -> str:
        folder = self.offsite / env["GATE_RUN_ID"]
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        copy = folder / env["GATE_BACKUP_NAME"]
        shutil.copyfile(env["GATE_BACKUP_FILE"], copy)
        copy.chmod(0o600)
        return copy.resolve().as_uri()

    def fetch_backup(self, env: dict[str, str]) -> None:
        location = env["GATE_BACKUP_LOCATION"]
        if not location.startswith("file://"):
            raise RuntimeError(f"the sandbox's store holds file:// locations, not {location.split(':', 1)[0]}")
        shutil.copyfile(location.removeprefix("file://"), env["GATE_BACKUP_DEST"])

    def maintenance(self, on: bool) -> None:
        self.api.maintenance(on)

    def deploy(self, use_hipaa_schema: bool) -> None:
        if self.serving is not None:
            self.serving.deploy(use_hipaa_schema)
        else:
            self.api.restart(use_hipaa_schema=use_hipaa_schema)
