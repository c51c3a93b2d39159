"""The PostgreSQL client and server tools on this machine (pg_dump, pg_restore, psql; initdb and pg_ctl for a
throwaway cluster): found once, one way, for the production backup and the embedded cluster alike.

Standard library only: the embedded cluster's launcher runs from a bare copy as an unprivileged user
(tests/test_embedded.py), and it needs these. So it reads PG_BINDIR itself (the one library module besides
config/environment.py that may)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from migration_gate.core.errors import MigrationGateError

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, pg_dump, pg_restore) were not found. "
    "On Debian/Ubuntu run scripts/setup (it installs them with apt-get), or: "
    "apt-get install -y --no-install-recommends postgresql; on macOS: brew install postgresql@16; "
    "elsewhere install PostgreSQL 15+ and set PG_BINDIR to its bin folder."
)


class BinariesNotFound(MigrationGateError, RuntimeError):
    """No complete set of PostgreSQL binaries here (or one whose version cannot be read): one line, what to install."""


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path
    major: int

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def has_library(self, name: str) -> bool:
        """Whether the server can load this shared library (a contrib module such as pg_stat_statements)."""
        folders = [self.bindir.parent / "lib", self.bindir.parent / "lib" / "postgresql"]
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            out = subprocess.run([self.tool("pg_config"), "--pkglibdir"], capture_output=True, text=True, check=True)
            folders.insert(0, Path(out.stdout.strip()))
        return any((folder / f"{name}.so").is_file() or (folder / f"{name}.dylib").is_file() for folder in folders)


def _major_of(bindir: Path) -> int:
    out = subprocess.run([str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise BinariesNotFound(f"cannot read the PostgreSQL version from {bindir}/pg_ctl")
    return int(match.group(1))


def _candidate_bindirs() -> list[Path]:
    found: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        found.append(Path(os.environ["PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout
            found.append(Path(out.strip()))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted((p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        found.extend(p / "bin" for p in reversed(versions))
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    return found


def find_binaries() -> PgBinaries:
    """The newest complete set of server and client binaries on this machine."""
    needed = ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore", "psql")
    for bindir in _candidate_bindirs():
        if all((bindir / name).is_file() for name in needed):
            return PgBinaries(bindir=bindir, major=_major_of(bindir))
    raise BinariesNotFound(INSTALL_HINT)
