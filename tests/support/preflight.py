"""The cut-over as an operator starts it from a shell, shared by the tests of what it checks before the window
opens (pre-flight, forecast, people and notify, bad input): a description whose hooks only record that they ran, the
target in the environment, and `migration-gate cutover` in a child."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from migration_gate.config import ConfigError, load_config
from migration_gate.core.status import Outcome
from migration_gate.run import attest, hookrehearsal
from sandbox.synthetic import SANDBOX_KEY
from sandbox.target import Sandbox
from tests.conftest import ROOT


def write_config(folder: Path, calls: Path, **hooks: str | None) -> Path:
    """migration.toml with hooks that only record that they ran (unless replaced), and absolute file paths."""
    text = (ROOT / "migration.toml").read_text()
    text = re.sub(r'^(file|rollback_file) = "([^"]+)"', lambda m: f'{m[1]} = "{ROOT / m[2]}"', text, flags=re.M)
    commands = {name: f"echo {name} >> {calls}" for name in
                ("maintenance_on", "maintenance_off", "deploy_new_schema", "deploy_legacy_schema", "fetch_backup",
                  "alert")}
    commands["store_backup"] = f"echo store_backup >> {calls}; echo file:///nowhere"
    commands.update(hooks)
    block = "\n".join(f"{name} = {json.dumps(cmd)}" for name, cmd in commands.items() if cmd is not None)
    start = text.index("\n[hooks]\n") + len("\n[hooks]\n")
    end = text.index("\n[", start)
    kept = [line for line in text[start:end].splitlines() if not re.match(r"\w+ = ", line)]
    text = text[:start] + block + "\n" + "\n".join(kept) + text[end:]
    if hooks.get("logs_since"):  # the logs come through that command
        text = text.replace('\nsource = "jsonl"\n', '\nsource = "command"\n')
    path = folder / "migration.toml"
    path.write_text(text)
    return path


def rehearsed(config: Path, reports: Path, at: datetime | None = None, **outcomes: str) -> None:
    """A hooks rehearsal of `config`'s [hooks] recorded in the reports folder as `cutover --rehearse-hooks` records
    one: every hook passed (unless `outcomes` says otherwise), at `at` (default: now)."""
    record = hookrehearsal.HooksRehearsal(
        at=(at or datetime.now(UTC)).isoformat(timespec="seconds"), target="staging", by="Test Operator",
        hooks_sha256=hookrehearsal.hooks_digest(load_config(config)),
        steps=[hookrehearsal.HookStep(h, outcomes.get(h, Outcome.PASSED), 0.1, "test") for h in hookrehearsal.HOOKS])
    record.save(reports)


def environment(box: Sandbox, config: Path, reports: Path, attested: bool = True, hooks_rehearsed: bool = True,
                **overrides: str | None) -> dict[str, str]:
    """The target in the environment as an operator sets it; with `attested`, every [[people]] item attested the
    day before (pending in the reports folder), with `hooks_rehearsed` a green hooks rehearsal of the description's
    hooks an hour ago, so a test's refusal is its own input's."""
    if hooks_rehearsed:
        with contextlib.suppress(ConfigError):  # a case's broken description: refused before the pre-flight
            rehearsed(config, reports, datetime.now(UTC) - timedelta(hours=1))
    if attested:  # from the shipped description: a case may break the one under test on purpose
        gate = load_config()
        for item in gate.people:
            attest.record(gate, item.id, "Test Operator", reports=reports)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATE_", "API_", "APP_LOG"))
           and k not in ("DATABASE_URL", "PHI_ENCRYPTION_KEY") or k.startswith("GATE_BACKUP_")}
    env.update({"DATABASE_URL": box.dsn, "PHI_ENCRYPTION_KEY": SANDBOX_KEY, "API_BASE_URL": box.api.base_url,
                "GATE_API_USERNAME": load_config().sandbox_username,
                "GATE_API_PASSWORD": load_config().sandbox_password, "APP_LOG_FILE": str(box.api.log_file),
                "GATE_API_HEADERS": json.dumps(box.api.bypass_headers), "GATE_CONFIG": str(config),
                "GATE_REPORTS_DIR": str(reports)})
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def cutover(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migration_gate.cli", "cutover", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
