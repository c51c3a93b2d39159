"""Running a phase suite as a user runs it, and what the tests read back from a run: shared by the test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from migration_gate.core.phi import PhiCodec
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import ROOT

CODEC = PhiCodec(SANDBOX_KEY)


def run_suite(*args: str, env: dict[str, str] | None = None, run_dir: Path,
              ask_sandbox: bool = True, umask: int = -1) -> subprocess.CompletedProcess:
    """pytest in a child process as a user runs it. Without DATABASE_URL it asks for the sandbox explicitly
    (GATE_SANDBOX=1), as a CI run must; ask_sandbox=False leaves that to the caller's env."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "API_BASE_URL", "PHI_ENCRYPTION_KEY", "BACKUP_FILE", "APP_LOG_FILE",
                          "GATE_CONFIG", "BASELINE_DATABASE_URL", "GATE_API_USERNAME", "GATE_API_PASSWORD",
                          "GATE_SANDBOX", "GATE_REHEARSAL")}
    if ask_sandbox and "DATABASE_URL" not in (env or {}):
        clean["GATE_SANDBOX"] = "1"
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--gate-run-dir={run_dir}",
                           *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=600, umask=umask)


def known_phi(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        names = [n.strip() for (n,) in conn.execute("SELECT name FROM clients_hipaa") if len(n.strip()) > 4]
        emails = [CODEC.decrypt(v).strip() for (v,) in conn.execute(
            "SELECT email_encrypted FROM clients_hipaa WHERE email_encrypted <> ''")]
    return names + emails


def not_owner_only(folder: Path) -> list[str]:
    """Every folder under (and with) `folder` that is not 0700 and every file not 0600, with its mode (symlinks
    are not ours to judge: their targets are walked where they are)."""
    found = []
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode, wanted = path.stat().st_mode & 0o777, 0o700 if path.is_dir() else 0o600
        if mode != wanted:
            found.append(f"{path.relative_to(folder.parent)} is {mode:o}, not {wanted:o}")
    return found
