"""Our scripts as a release manager runs them (`bash scripts/<name>`, the target's variables cleared unless given),
and what a refusal must look like: one line, its exit code, no traceback."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import ROOT

TARGET_VARS = ("DATABASE_URL", "API_BASE_URL", "PHI_ENCRYPTION_KEY", "GATE_API_USERNAME", "GATE_API_PASSWORD",
               "BACKUP_FILE", "GATE_CONFIG")


def script(name: str, *args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in TARGET_VARS}
    clean.update(env or {})
    return subprocess.run(["bash", str(ROOT / "scripts" / name), *args], cwd=ROOT, env=clean, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout[-1000:], done.stderr[-1000:])
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("[setup]")]
    assert len(lines) == 1 and fragment in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
