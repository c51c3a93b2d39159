"""A team's own app as a child process: started by its command with only what the gate hands over, waited for
until its health path answers 2xx, its output as the app's log, stopped with everything it started.

The rehearsal (and the dress rehearsal) start it in place of the reference API on the side it serves
([rehearsal] app_new / app_legacy); the sandbox provider's deploy hook calls start() and stop(). The child's
environment holds the database DSN, the PHI key and the port under the configured names, the configured `env`,
the `pass_env` names copied from the gate's environment and a minimal PATH/HOME/LANG: never the gate's other
secrets (a hook once got every one of them). It runs in its own process group, so stop() ends the shell, the
app and whatever the app forked (a `node --import tsx` loader, an npm wrapper).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import psycopg

from migration_gate.app.client import http_client
from migration_gate.app.logsource import LogSource
from migration_gate.config import AppServerConfig
from migration_gate.config.environment import variables
from migration_gate.core.errors import MigrationGateError
from migration_gate.db.embedded import free_port

HOST = "127.0.0.1"
STOP_TIMEOUT = 10.0
POLL_SECONDS = 0.25
MINIMAL_ENV = ("PATH", "HOME", "LANG")  # what any program needs to start; taken from the gate's environment


class AppStartError(MigrationGateError, RuntimeError):
    """The app did not come up healthy; the message is one line (its log's line count, never its text)."""


class AppServer:
    """One run of a team's app; start() returns once GET <health> answers 2xx on 127.0.0.1:<port>."""

    def __init__(self, spec: AppServerConfig, dsn: str, key: str, log_file: Path, port: int | None = None,
                 error_pattern: str | None = None) -> None:
        self.spec = spec
        self.dsn = dsn
        self.key = key
        self.log_file = Path(log_file)
        self.port = port or free_port()
        self.error_pattern = error_pattern  # [logs] error_pattern: which of its text lines are errors
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_source(self) -> LogSource:
        """Its stdout and stderr, a text log file the post-checks read as the app's log."""
        return LogSource(kind="file", format="text", path=str(self.log_file), error_pattern=self.error_pattern)

    def child_env(self) -> dict[str, str]:
        """Exactly what is handed over: the minimal variables, pass_env, env, then the DSN, key and port."""
        own = variables()
        env = {name: own[name] for name in (*MINIMAL_ENV, *self.spec.pass_env) if name in own}
        env.setdefault("PATH", os.defpath)
        env.update(self.spec.env)
        env.update({self.spec.dsn_env: dsn_url(self.dsn), self.spec.key_env: self.key,
                    self.spec.port_env: str(self.port)})
        return env

    def _open_log(self) -> int:
        """The log file, owner-only, appended to (a restart keeps the earlier lines; the gate's marker holds)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def log_lines(self) -> int:
        """How many lines it has logged (a failed start names the count and the file, never a line)."""
        try:
            with self.log_file.open("rb") as stream:
                return sum(1 for _ in stream)
        except OSError:
            return 0

    def _lines(self) -> str:
        count = self.log_lines()
        return f"{count} line{'' if count == 1 else 's'}"

    def start(self) -> AppServer:
        """Start it and wait for health 2xx; AppStartError (after stopping it) when it exits or never answers."""
        if self.running:
            raise AppStartError(f"{self.label}: already running")
        fd = self._open_log()
        try:
            self._proc = subprocess.Popen(self.spec.command, shell=True, cwd=self.spec.cwd, env=self.child_env(),
                                          stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        except OSError as exc:
            raise AppStartError(f"{self.label}: cannot start ({exc.__class__.__name__})") from None
        finally:
            os.close(fd)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        timeout = self.spec.start_timeout_seconds
        deadline = time.monotonic() + timeout
        last = "no answer"
        with http_client(self.base_url, headers=self.spec.headers, timeout=5.0) as client:
            while True:
                code = self._proc.poll() if self._proc is not None else -1
                if code is not None:
                    raise AppStartError(f"{self.label}: exited with code {code} before GET {self.spec.health} "
                                        f"answered; its log ({self._lines()}): {self.log_file}")
                try:
                    status = client.get(self.spec.health).status_code
                    if 200 <= status < 300:
                        return
                    last = f"answered {status}"
                except httpx.HTTPError as exc:
                    last = exc.__class__.__name__
                if time.monotonic() >= deadline:
                    raise AppStartError(f"{self.label}: GET {self.spec.health} did not answer 2xx within "
                                        f"{timeout:g} s (last: {last}); its log ({self._lines()}): "
                                        f"{self.log_file}")
                time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        """SIGTERM to its whole process group, then SIGKILL to what is left; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:  # the group, not only the shell: its children may outlive it
            proc.poll()  # reaps the shell, so a zombie leader does not count as alive
            if not _group_alive(proc.pid):
                break
            time.sleep(0.1)
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)


def dsn_url(dsn: str) -> str:
    """A DSN as a postgresql:// URL (what Node's and most apps' drivers take; keyword DSNs they reject)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return dsn
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    user, password = info.pop("user", None), info.pop("password", None)
    host, port, dbname = info.pop("host", None), info.pop("port", None), info.pop("dbname", None)
    auth = (quote(str(user), safe="") + (f":{quote(str(password), safe='')}" if password else "") + "@") if user else ""
    where = quote(str(host or ""), safe="") + (f":{port}" if port else "")
    query = f"?{urlencode({k: str(v) for k, v in info.items()})}" if info else ""
    return f"postgresql://{auth}{where}/{quote(str(dbname or ''), safe='')}{query}"


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
