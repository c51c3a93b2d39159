"""The attachable record of a run: its sign-off, phase reports and results in one zip, with a manifest of every
file's sha256, and nothing that bears PHI. The backup (encrypted or not) and the sandbox's working folder (the app's
own log, the sandbox's keys) stay behind; the sign-off links only what the bundle carries, so every link works
once the bundle is unpacked anywhere."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from migration_gate.backup.record import sha256_file
from migration_gate.core import rundir

MANIFEST = "manifest.json"
# What never leaves the box in a bundle, and why (said in the sign-off and the manifest).
KEPT_BACK_SUFFIXES = {".dump": "the backup: holds PHI", ".age": "the backup: holds PHI (encrypted)",
                      ".partial": "an unfinished backup", ".fetched": "a copy of the backup",
                      ".tmp": "a temporary file"}
KEPT_BACK_FOLDERS = {rundir.SANDBOX: "the sandbox's working folder (the app's own log, its keys)"}


def kept_back(relative: Path) -> str | None:
    """Why a file of the run folder is not attachable, or None when it is."""
    if relative.parts and relative.parts[0] in KEPT_BACK_FOLDERS:
        return KEPT_BACK_FOLDERS[relative.parts[0]]
    return next((why for suffix, why in KEPT_BACK_SUFFIXES.items() if relative.name.endswith(suffix)), None)


def build(run_dir: Path, out: Path | None = None) -> Path:
    """The zip (default: <run_dir>.zip beside the run folder), its files under the run's name, and its manifest."""
    run_dir = Path(run_dir)
    if not (run_dir / rundir.SIGNOFF).is_file():
        raise FileNotFoundError(f"{run_dir} has no signoff.html: finish or roll back the run first")
    out = Path(out) if out else run_dir.with_suffix(".zip")
    files, left = [], []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(run_dir)
        why = kept_back(relative)
        if why:
            left.append({"path": str(relative), "why": why})
        else:
            files.append({"path": str(relative), "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    manifest = {"run": run_dir.name, "built": datetime.now(UTC).isoformat(timespec="seconds"), "files": files,
                "kept_back": left}
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for entry in files:
            bundle.write(run_dir / entry["path"], f"{run_dir.name}/{entry['path']}")
        bundle.writestr(f"{run_dir.name}/{MANIFEST}", json.dumps(manifest, indent=2))
    tmp.replace(out)
    return out
