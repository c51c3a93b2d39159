"""How the gate reaches the target and the app's hosting: the Hooks a host offers for maintenance mode and
deploys (shell commands from migration.toml [hooks] by default), and the CutoverTarget that bundles them with
the database, the key and the API."""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from migration_gate.config import ConfigError, GateConfig, load_environment
from migration_gate.config.environment import variables
from migration_gate.core.errors import GateError
from migration_gate.core.redact import dsn_passwords, mask_values, redact_text, secret_values

# The hooks a cut-over calls; a shipped example that still says this mark is a placeholder, not a hook.
REQUIRED = ("maintenance_on", "maintenance_off", "deploy_new_schema", "deploy_legacy_schema")
PLACEHOLDER_MARK = "TODO(hook)"

# What any program needs to start, taken from the gate's environment (and every LC_*): nothing else of it reaches
# a hook but the [hooks] pass_env names and the GATE_* variables of the hook's contract below.
BASE_ENV = ("PATH", "HOME", "LANG", "TZ")
_BACKUP = ("GATE_BACKUP_FILE", "GATE_BACKUP_NAME", "GATE_BACKUP_SHA256", "GATE_BACKUP_SIZE",
           "GATE_BACKUP_ENCRYPTION", "GATE_RUN_ID")
# Each hook's contract (migration.toml [hooks] and [rehearsal] document it): the only GATE_* names it is handed.
# The copy hook's source DSN is the one password a hook ever gets: making a copy needs it.
CONTRACTS: dict[str, tuple[str, ...]] = {
    "maintenance_on": (), "maintenance_off": (), "deploy_new_schema": (), "deploy_legacy_schema": (),
    "store_backup": _BACKUP,
    "fetch_backup": (*_BACKUP, "GATE_BACKUP_LOCATION", "GATE_BACKUP_DEST"),
    "notify": ("GATE_STATUS", "GATE_RUN_ID", "GATE_PHASE", "GATE_PHASE_STATUS", "GATE_DOWNTIME_MINUTES"),
    "alert": ("GATE_ALERT_MESSAGE", "GATE_RUN_ID", "GATE_WATCH_ROUND", "GATE_WATCH_CRITERION_MET"),
    # an [[escalation]] step's command: the alert's, plus who this step tells and which step it is
    "escalate": ("GATE_ALERT_MESSAGE", "GATE_RUN_ID", "GATE_WATCH_ROUND", "GATE_WATCH_CRITERION_MET",
                 "GATE_ESCALATION_NAME", "GATE_ESCALATION_STEP"),
    "create_copy": ("GATE_COPY_SOURCE", "GATE_COPY_OWNER_PID"),
    "delete_copy": ("GATE_COPY_OWNER_PID", "GATE_COPY_DSN", "GATE_COPY_LABEL"),
}
LOGS_CONTRACT = ("GATE_LOGS_SINCE", "GATE_LOGS_UNTIL")  # [logs] source = "command", whatever its hook's name
OUTPUT_LIMIT = 1 << 20  # bytes of a hook's stdout and of its stderr kept (the last ones: a hook's answer is last)


def hook_environment(contract: Iterable[str], handed: Mapping[str, str] | None = None,
                     pass_env: Iterable[str] = ()) -> dict[str, str]:
    """A hook's whole environment: PATH/HOME/LANG/TZ/LC_* and the [hooks] pass_env names from the gate's
    environment, plus the contract's GATE_* values the gate hands it. Nothing else: no DATABASE_URL, PHI key,
    API password or backup identity unless the contract names it. A value outside the contract is a bug."""
    allowed, handed = set(contract), dict(handed or {})
    stray = sorted(set(handed) - allowed)
    if stray:
        raise GateError(f"{stray[0]} is not in the hook's contract ({', '.join(sorted(allowed)) or 'nothing'})")
    names = set(BASE_ENV) | set(pass_env)
    env = {k: v for k, v in variables().items() if k in names or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    return env | handed


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a CI cancel, a supervisor's stop) unwinds like Ctrl-C, so what a `finally` stops is stopped: a
    hook's process group, a copy's janitor. Only the main thread can set a handler; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_RUNNING: set[subprocess.Popen] = set()  # hooks running now, in any thread (notify calls run in their own)
_RUNNING_LOCK = threading.Lock()


def kill_group(child: subprocess.Popen) -> None:
    """SIGKILL to the child's process group (its own session: everything a hook started), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        child.wait()


@atexit.register
def _stop_running() -> None:
    """The gate's process ends (an interrupt unwound it): no hook outlives it, a notify call's thread included."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for child in running:
        kill_group(child)


def _read_bounded(child: subprocess.Popen, deadline: float, limit: int) -> tuple[str, str, bool]:
    """Both pipes drained to their end (so the hook never blocks on a full pipe), at most the last `limit` bytes
    of each kept; True when more was printed. subprocess.TimeoutExpired at the deadline."""
    kept = {child.stdout: bytearray(), child.stderr: bytearray()}
    cut = False
    with selectors.DefaultSelector() as selector:
        for stream in kept:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(child.args, 0)
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = kept[key.fileobj]
                buffer += chunk
                if len(buffer) > limit:
                    del buffer[:len(buffer) - limit]
                    cut = True
    child.wait(max(deadline - time.monotonic(), 0.01))
    return (kept[child.stdout].decode("utf-8", "replace"), kept[child.stderr].decode("utf-8", "replace"), cut)


class Hooks(Protocol):
    """How the gate talks to the app's hosting: maintenance mode and deploys."""

    def maintenance(self, on: bool) -> None: ...
    def deploy(self, use_hipaa_schema: bool) -> str | None: ...  # what it printed (a version for the diagnosis)
    # The backup off the box (environment contract in migration_gate.backup.offsite.hook_env): store returns the
    # location (a shell hook's last output line); fetch writes the copy at that location to GATE_BACKUP_DEST.
    def store_backup(self, env: dict[str, str]) -> str: ...
    def fetch_backup(self, env: dict[str, str]) -> None: ...
    # Optional (migration_gate.run.notify): one PHI-free status line, also in env as GATE_STATUS. Hooks without it
    # send no status updates.
    def notify(self, line: str, env: dict[str, str]) -> None: ...


def hook_problems(hooks: Hooks) -> list[str]:
    """What is wrong with the hooks before any of them runs: shell hooks missing or still placeholders. Hooks
    that are code (the sandbox's) have nothing to configure."""
    if not isinstance(hooks, ShellHooks):
        return []
    return command_problems(hooks.commands, REQUIRED, "your host's")


def command_problems(commands: Mapping[str, str], names: Iterable[str], whose: str) -> list[str]:
    """Each named [hooks] command configured and not still a TODO(hook) placeholder, one line per problem."""
    found = []
    for name in names:
        command = (commands.get(name) or "").strip()
        if not command:
            found.append(f"hook {name}: not configured in [hooks]")
        elif PLACEHOLDER_MARK in command:
            found.append(f"hook {name}: still the shipped placeholder (replace it with {whose} command)")
    return found


@dataclass
class ShellHooks:
    """Shell commands from migration.toml [hooks]; a team calls its host's API there."""

    commands: dict[str, str]
    timeout: float = 600
    backup_timeout: float = 1800  # store_backup / fetch_backup move the whole (encrypted) dump
    notify_timeout: float = 30  # [notify] timeout_seconds: a status update never holds the cut-over up
    pass_env: tuple[str, ...] = ()  # [hooks] pass_env: the operator's variables each hook sees
    output_limit: int = OUTPUT_LIMIT

    def _run(self, name: str, env: dict[str, str] | None = None, timeout: float | None = None,
             args: tuple[str, ...] = ()) -> str:
        command = self.commands.get(name)
        if not command:
            raise GateError(f"no [hooks] {name} command configured")
        limit = timeout or self.timeout
        hook_env = hook_environment(CONTRACTS.get(name, ()), env, self.pass_env)
        # its own process group, so a hang, Ctrl-C or SIGTERM stops it with everything it started (a sleep, a curl)
        with sigterm_unwinds():
            child = subprocess.Popen([command, name, *args] if args else command, shell=True,  # args: $1...
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, env=hook_env)
            with _RUNNING_LOCK:
                _RUNNING.add(child)
            try:
                stdout, stderr, cut = _read_bounded(child, time.monotonic() + limit, self.output_limit)
            except subprocess.TimeoutExpired:
                kill_group(child)
                raise GateError(f"hook {name} did not finish within {limit:g} s and was stopped "
                                "([hooks] timeout_seconds)") from None
            except BaseException:  # Ctrl-C, SIGTERM, anything: the hook does not outlive the run
                kill_group(child)
                raise
            finally:
                with _RUNNING_LOCK:
                    _RUNNING.discard(child)
                for stream in (child.stdout, child.stderr):
                    if stream is not None:
                        stream.close()
        if child.returncode != 0:
            last = (stderr or stdout).strip().splitlines()[-1:] or ["(no output)"]
            # a hook's output may echo its environment (set -x, a verbose curl): its secrets are masked by value
            line = mask_values(redact_text(last[0]), secret_values(variables() | hook_env)
                               + dsn_passwords(hook_env.values()))
            more = (f" (output over {self.output_limit // 1024} KiB: only its last {self.output_limit // 1024} KiB "
                    "read)") if cut else ""
            raise GateError(f"hook {name} failed with exit code {child.returncode}{more}: {line}")
        return stdout

    def store_backup(self, env: dict[str, str]) -> str:
        """The [hooks] store_backup command; its last output line is where the copy is (e.g. the s3:// URL)."""
        lines = [line.strip() for line in self._run("store_backup", env, self.backup_timeout).splitlines()]
        return mask_values(redact_text(next((line for line in reversed(lines) if line), "")),
                           secret_values(variables()))

    def fetch_backup(self, env: dict[str, str]) -> None:
        self._run("fetch_backup", env, self.backup_timeout)

    def notify(self, line: str, env: dict[str, str]) -> None:
        """The [hooks] notify command with the status line in GATE_STATUS and as $1 (nothing when unset)."""
        if (self.commands.get("notify") or "").strip():
            self._run("notify", env, self.notify_timeout, args=(line,))

    def alert(self, env: dict[str, str]) -> None:
        """[hooks] alert: tell a human (the watch's red rounds); GATE_ALERT_MESSAGE carries a PHI-free message."""
        self._run("alert", env)

    def escalate(self, env: dict[str, str]) -> None:
        """An [[escalation]] step's command (held here under the name "escalate"): the next person is told."""
        self._run("escalate", env)

    def maintenance(self, on: bool) -> None:
        self._run("maintenance_on" if on else "maintenance_off")

    def deploy(self, use_hipaa_schema: bool) -> str:
        """The deploy hook; its stdout (the release it deployed, for the diagnosis: run/diagnosis.hook_version)."""
        return self._run("deploy_new_schema" if use_hipaa_schema else "deploy_legacy_schema")


@dataclass
class CutoverTarget:
    """Everything the gate acts on: the database and its key, the app's API and login, the host's hooks."""

    dsn: str
    key: str
    api_base_url: str
    api_username: str
    api_password: str
    hooks: Hooks
    app_log_file: Path | None = None
    api_headers: dict[str, str] = field(default_factory=dict)  # e.g. a maintenance-bypass header for the checks
    allow_writes: bool = False  # the post-checks may create a probe patient (sandbox, staging)
    # what every request to the app carries, the public's too (the maintenance probe, go-live): what a host's
    # edge adds in front of the app, e.g. X-Forwarded-Proto behind a TLS-terminating proxy; the checks send
    # api_headers, which hold these as well
    edge_headers: dict[str, str] = field(default_factory=dict)
    # set when maintenance mode cannot be seen on this target (a rehearsal's own legacy app, which knows nothing
    # of the sandbox's flag): the maintenance phase says so, with this reason, instead of probing for a 503
    maintenance_unverifiable: str | None = None
    # the data is a sandbox's (a rehearsal's, or GATE_REHEARSAL=1): the suites' reports carry the banner
    synthetic: bool = False


def target_from_environment(gate: GateConfig, need_api: bool = True, hint: str = "") -> CutoverTarget:
    """The real target as the environment names it (the cut-over's commands and the watch alike), its hooks the
    [hooks] commands; a variable missing or empty is one line, with `hint` after it."""
    env = load_environment()
    needed = [("DATABASE_URL", env.database_url), ("PHI_ENCRYPTION_KEY", env.phi_key)]
    if need_api:
        needed += [("API_BASE_URL", env.api_base_url), ("GATE_API_USERNAME", env.api_username),
                   ("GATE_API_PASSWORD", env.api_password)]
    missing = [name for name, value in needed if not value]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not set{hint}")
    return CutoverTarget(dsn=env.database_url, key=env.phi_key, api_base_url=env.api_base_url or "",
                         api_username=env.api_username or "", api_password=env.api_password or "",
                         hooks=ShellHooks(gate.hooks, timeout=gate.hook_timeout_seconds,
                                          pass_env=gate.hook_pass_env),
                         app_log_file=env.app_log_file, api_headers=env.api_headers, synthetic=env.rehearsal)
