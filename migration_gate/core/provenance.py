"""Who ran a run and with which gate: recorded in every sign-off, so a report says which code judged the
migration and which person started it (a numeric uid is not a person)."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata

from migration_gate.core.paths import ROOT


@functools.cache
def gate_version() -> str:
    """The package version and, in a checkout, its commit (marked when the working tree differs from it)."""
    try:
        version = metadata.version("hipaa-migration-gate")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return version
    if commit.returncode != 0:
        return version
    return f"{version} (commit {commit.stdout.strip()}{', with local changes' if dirty.stdout.strip() else ''})"
