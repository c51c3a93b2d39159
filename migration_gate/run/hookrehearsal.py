"""The host's hooks rehearsed before the window (`scripts/cutover --rehearse-hooks`, against staging): every hook
the cut-over calls is called once with a test payload and what it did is verified, so a broken hook is found on
staging, not at 2 a.m. inside the window.

In order: maintenance on (the public gets 503 with Retry-After), deploy new (the app reports the new schema), deploy
legacy (the app reports the legacy schema), maintenance off (the public is let through again), a small test file
stored and fetched back (its sha256 compared), a test notify and a test alert. The result, one line per hook with
its outcome and seconds, goes into the reports folder (core/rundir.hooks_rehearsal_file); the pre-flight of a real
cut-over refuses while the last one is missing, red, older than [hooks] rehearsal_max_age_hours, or was made with
other [hooks] commands than the ones configured now.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from migration_gate.app.client import body_of, http_client, send
from migration_gate.app.hooks import CutoverTarget, ShellHooks
from migration_gate.backup.record import sha256_file
from migration_gate.checks import api as app
from migration_gate.config import GateConfig
from migration_gate.config.environment import operator
from migration_gate.core import rundir
from migration_gate.core.progress import Progress
from migration_gate.core.redact import describe_target, mask_values, safe_message
from migration_gate.core.status import Exit, Outcome
from migration_gate.db import connection as db
from migration_gate.run import notify
from migration_gate.run.runstate import schema_state

# The hooks a rehearsal calls, in the order it calls them (the deploys inside maintenance, as in the window).
HOOKS = ("maintenance_on", "deploy_new_schema", "deploy_legacy_schema", "maintenance_off", "store_backup",
         "fetch_backup", "notify", "alert")
OPTIONAL = ("notify", "alert")  # not configured: said, not red (the pre-flight judges a missing alert on its own)
TEST_FILE_BYTES = 64 * 1024
PROBE_PATH = "/api/patients"  # what the public asks: 503 in maintenance, its normal answer (401 unauthenticated) after


@dataclass
class HookStep:
    """One hook called: its outcome (core.status.Outcome), seconds and what was seen (PHI-free, secrets masked)."""

    hook: str
    outcome: str = Outcome.SKIPPED
    seconds: float = 0.0
    detail: str = ""

    def line(self) -> str:
        return f"{self.hook:<22} {self.outcome.upper():<8} {self.seconds:6.1f} s  {self.detail}"


@dataclass
class HooksRehearsal:
    """The record of one rehearsal of the hooks (reports/hooks-rehearsal.json)."""

    at: str  # when it finished, UTC ISO 8601
    target: str  # the target it ran against (staging), as describe_target names it
    by: str
    hooks_sha256: str  # of the [hooks] commands it called: a changed command is not rehearsed
    steps: list[HookStep] = field(default_factory=list)

    @property
    def failed(self) -> list[HookStep]:
        return [s for s in self.steps if s.outcome == Outcome.FAILED]

    @property
    def ok(self) -> bool:
        return bool(self.steps) and not self.failed and all(
            s.outcome == Outcome.PASSED for s in self.steps if s.hook not in OPTIONAL)

    def age_hours(self, now: datetime | None = None) -> float:
        return ((now or datetime.now(UTC)) - datetime.fromisoformat(self.at)).total_seconds() / 3600

    def save(self, reports: Path) -> Path:
        return _write(rundir.hooks_rehearsal_file(reports), asdict(self))

    @classmethod
    def load(cls, path: Path) -> HooksRehearsal:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data["steps"] = [HookStep(**s) for s in data.get("steps", [])]
        return cls(**data)


def _write(path: Path, data: dict) -> Path:
    """Owner-only, written atomically: the pre-flight never reads half a record."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def keep_in_run(run_dir: Path, missing: list[str], by: str) -> dict | None:
    """The run keeps a copy of the rehearsal its pre-flight relied on; a run started without a valid one
    (--force) records the override beside it: who, when, and why the rehearsal did not count."""
    record = last(run_dir.parent)
    data = asdict(record) if record else {}
    if missing:
        data["override"] = {"by": by, "at": datetime.now(UTC).isoformat(timespec="seconds"), "missing": missing}
    if data:
        _write(rundir.hooks_rehearsal_file(run_dir), data)
    return data.get("override")


def overridden(run_dir: Path) -> list[str]:
    """Why the run's pre-flight let it start without a valid hooks rehearsal (--force), or nothing."""
    try:
        data = json.loads(rundir.hooks_rehearsal_file(run_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    override = data.get("override") if isinstance(data, dict) else None
    return list(override.get("missing") or []) if isinstance(override, dict) else []


def hooks_digest(gate: GateConfig) -> str:
    """The sha256 of the [hooks] commands a rehearsal calls (never the commands themselves: they may hold tokens)."""
    commands = {name: gate.hooks.get(name, "") for name in HOOKS}
    return hashlib.sha256(json.dumps(commands, sort_keys=True).encode()).hexdigest()


def last(reports: Path) -> HooksRehearsal | None:
    """The last rehearsal recorded in the reports folder, or None (none, or unreadable: as good as none)."""
    path = rundir.hooks_rehearsal_file(reports)
    try:
        return HooksRehearsal.load(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def problems(gate: GateConfig, reports: Path, now: datetime | None = None) -> tuple[str, list[str]]:
    """What the pre-flight says of the last rehearsal: (what was found, why it does not count)."""
    where = rundir.HOOKS_REHEARSAL
    record = last(reports)
    if record is None:
        return "", [f"hooks rehearsal: none recorded ({where} in the reports folder): run scripts/cutover "
                    "--rehearse-hooks against staging before the window (or --force, recorded in the run)"]
    age = record.age_hours(now)
    found = f"{'green' if record.ok else 'red'} at {record.at} against {record.target}, {age:.1f} h ago"
    if record.failed:
        return found, [f"hooks rehearsal: the last one (at {record.at}) was red: "
                       + "; ".join(f"{s.hook}: {s.detail}" for s in record.failed)]
    if not record.ok:
        return found, [f"hooks rehearsal: the last one (at {record.at}) did not call every required hook"]
    if age > gate.hook_rehearsal_max_age_hours:
        return found, [f"hooks rehearsal: the last one is {age:.1f} h old (at {record.at}), older than [hooks] "
                       f"rehearsal_max_age_hours = {gate.hook_rehearsal_max_age_hours:g}: rehearse them again"]
    if isinstance(gate.hooks, dict) and record.hooks_sha256 != hooks_digest(gate):
        return found, [f"hooks rehearsal: the [hooks] commands changed since the last one (at {record.at}): "
                       "rehearse them again"]
    return found, []


class _Rehearsal:
    def __init__(self, gate: GateConfig, target: CutoverTarget, progress: Progress) -> None:
        self.gate, self.target, self.progress = gate, target, progress
        self.steps: list[HookStep] = []
        self.secrets = [s for s in (target.key, target.api_password, *target.api_headers.values()) if s]

    def step(self, hook: str, action: Callable[[], str] | None, skipped: str = "") -> HookStep:
        """Call one hook and verify it; an exception is its red line (one line, masked), never a traceback."""
        step = HookStep(hook)
        if action is None:
            step.detail = skipped
        else:
            began = time.monotonic()
            try:
                step.detail, step.outcome = action(), Outcome.PASSED
            except Exception as exc:  # noqa: BLE001 - a hook that fails is this step's red line
                step.detail, step.outcome = mask_values(safe_message(exc), self.secrets), Outcome.FAILED
            step.seconds = round(time.monotonic() - began, 2)
        self.steps.append(step)
        self.progress.say(f"  {step.line()}")
        return step

    def configured(self, hook: str) -> bool:
        hooks = self.target.hooks
        if isinstance(hooks, ShellHooks):
            return bool((hooks.commands.get(hook) or "").strip())
        return callable(getattr(hooks, hook, None)) or (hook == "notify" and notify.configured(hooks))

    # -- maintenance ------------------------------------------------------------------------------------------
    def maintenance_on(self) -> str:
        self.target.hooks.maintenance(True)
        with http_client(self.target.api_base_url, timeout=15, headers=self.target.edge_headers) as client:
            result = app.maintenance_active(client, PROBE_PATH)
        if not result.ok:
            raise RuntimeError("; ".join(result.problems))
        return f"GET {PROBE_PATH}: 503 with Retry-After, /health answering"

    def maintenance_off(self) -> str:
        self.target.hooks.maintenance(False)
        deadline = time.monotonic() + min(self.gate.deploy_wait_seconds, 60)
        with http_client(self.target.api_base_url, timeout=15, headers=self.target.edge_headers) as client:
            while True:  # a host may take a few seconds to lift its page
                status = send(client, "GET", PROBE_PATH).status_code
                if status != 503 or time.monotonic() > deadline:
                    break
                time.sleep(1)
        if status == 503:
            raise RuntimeError(f"GET {PROBE_PATH}: still 503 after maintenance off")
        return f"GET {PROBE_PATH}: {status} (no maintenance page)"

    # -- deploys ------------------------------------------------------------------------------------------------
    def deploy(self, use_hipaa_schema: bool) -> str:
        """The deploy hook, then /health until it reports the side's schema flag. Fully healthy is required of the
        side the staging database is on; the other side may report its schema degraded (it has not been
        migrated to), and that is said."""
        self.target.hooks.deploy(use_hipaa_schema)
        flag = "true" if use_hipaa_schema else "false"
        deadline = time.monotonic() + self.gate.deploy_wait_seconds
        seen = "no answer"
        with http_client(self.target.api_base_url, timeout=15, headers=self.target.api_headers) as client:
            while True:
                try:
                    response = send(client, "GET", "/health")
                    body = body_of(response)
                    config = body.get("config") if isinstance(body, dict) else None
                    reported = config.get("useHipaaSchema") if isinstance(config, dict) else None
                    seen = f"{response.status_code}, useHipaaSchema {json.dumps(reported)}"
                    if reported is use_hipaa_schema:
                        break
                except httpx.HTTPError as exc:
                    seen = f"no answer ({exc.__class__.__name__})"
                if time.monotonic() > deadline:
                    raise RuntimeError(f"/health never reported useHipaaSchema {flag} within "
                                       f"{self.gate.deploy_wait_seconds:g} s (last: {seen})")
                time.sleep(2)
            health = app.health(client, expect_hipaa=use_hipaa_schema)
        with db.connect(self.target.dsn, connect_timeout=10, autocommit=True) as conn:
            where = schema_state(conn, self.gate)
        side = "migrated" if use_hipaa_schema else "legacy"
        if health.ok:
            return f"/health 200 ok, useHipaaSchema {flag}"
        if where != side:
            return (f"/health reports useHipaaSchema {flag} ({seen}; the staging database is {where}, so this side "
                    "is not expected healthy)")
        raise RuntimeError("; ".join(health.problems))

    # -- the backup store --------------------------------------------------------------------------------------
    def store_and_fetch(self, folder: Path) -> None:
        """A small random file (no data of anyone's) stored through store_backup and fetched back through
        fetch_backup; the copy's sha256 must be the file's. Both lines go red when it is not (either hook may
        have moved something else)."""
        label = f"hooks-rehearsal-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        test_file, fetched = folder / f"{label}.bin", folder / f"{label}.fetched"
        fd = os.open(test_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(TEST_FILE_BYTES))
        digest = sha256_file(test_file)
        env = {"GATE_BACKUP_FILE": str(test_file.resolve()), "GATE_BACKUP_NAME": test_file.name,
               "GATE_BACKUP_SHA256": digest, "GATE_BACKUP_SIZE": str(TEST_FILE_BYTES),
               "GATE_BACKUP_ENCRYPTION": "none (a random test file, not a backup)", "GATE_RUN_ID": label}
        location: list[str] = []

        def store() -> str:
            found = str(self.target.hooks.store_backup(env)).strip()
            if not found:
                raise RuntimeError("printed no location (its last line must say where the copy is)")
            location.append(found)
            return f"stored {TEST_FILE_BYTES // 1024} KiB at {found} (the test copy stays there)"

        def fetch() -> str:
            fetched.unlink(missing_ok=True)
            self.target.hooks.fetch_backup(env | {"GATE_BACKUP_LOCATION": location[0],
                                                  "GATE_BACKUP_DEST": str(fetched.resolve())})
            if not fetched.is_file():
                raise RuntimeError(f"wrote nothing to GATE_BACKUP_DEST ({fetched.name})")
            if sha256_file(fetched) != digest:
                raise RuntimeError(f"the copy fetched back from {location[0]} does not have the stored file's "
                                   "sha256: store_backup or fetch_backup moves something else")
            return "fetched back, sha256 equal"
        try:
            stored = self.step("store_backup", store)
            fetch_step = self.step("fetch_backup", fetch if stored.outcome == Outcome.PASSED else None,
                                   "not called: store_backup failed")
            if fetch_step.outcome == Outcome.FAILED and "sha256" in fetch_step.detail:
                stored.outcome = Outcome.FAILED
                stored.detail = f"{stored.detail}; but the copy fetched back differs (sha256)"
        finally:
            test_file.unlink(missing_ok=True)
            fetched.unlink(missing_ok=True)

    def run(self, scratch: Path) -> list[HookStep]:
        on = self.step("maintenance_on", self.maintenance_on)
        # the deploys inside maintenance (as in the window): without it, staging's users would meet the new app
        called = on.outcome == Outcome.PASSED
        why = "not called: maintenance did not go on"
        self.step("deploy_new_schema", (lambda: self.deploy(True)) if called else None, why)
        self.step("deploy_legacy_schema", (lambda: self.deploy(False)) if called else None, why)
        self.step("maintenance_off", self.maintenance_off)  # always: a failed "on" may have half switched it
        self.store_and_fetch(scratch)
        line = "migration-gate: hooks rehearsal, a test notification (nothing is changing)"
        self.step("notify", (lambda: self.target.hooks.notify(line, {
            "GATE_STATUS": line, "GATE_RUN_ID": scratch.name, "GATE_PHASE": "hooks-rehearsal",
            "GATE_PHASE_STATUS": "test", "GATE_DOWNTIME_MINUTES": ""}) or "sent")
                  if self.configured("notify") else None, "not configured ([hooks] notify)")
        message = "migration-gate: hooks rehearsal, a test alert (nothing is wrong; no action needed)"
        self.step("alert", (lambda: self.target.hooks.alert({
            "GATE_ALERT_MESSAGE": message, "GATE_RUN_ID": scratch.name, "GATE_WATCH_ROUND": "0",
            "GATE_WATCH_CRITERION_MET": "0"}) or "sent")
                  if self.configured("alert") else None, "not configured ([hooks] alert)")
        return self.steps


def rehearse(gate: GateConfig, target: CutoverTarget, reports: Path,
             progress: Progress | None = None) -> HooksRehearsal:
    """Call every configured hook against `target` (staging) with a test payload, verify each, and record the
    result in the reports folder (also when red: the pre-flight then refuses, naming the hook)."""
    progress = progress or Progress(quiet=True)
    progress.say(f"rehearsing the hooks against {describe_target(target.dsn)} (staging: maintenance and deploys "
                 "are called for real)")
    scratch = Path(reports) / f"hooks-rehearsal-{os.getpid()}"
    try:
        steps = _Rehearsal(gate, target, progress).run(scratch)
    finally:
        if scratch.is_dir():
            for leftover in scratch.iterdir():
                leftover.unlink(missing_ok=True)
            scratch.rmdir()
    record = HooksRehearsal(at=datetime.now(UTC).isoformat(timespec="seconds"), target=describe_target(target.dsn),
                            by=operator(), hooks_sha256=hooks_digest(gate), steps=steps)
    record.save(reports)
    return record


def exit_code(record: HooksRehearsal) -> Exit:
    return Exit.GREEN if record.ok else Exit.RED
