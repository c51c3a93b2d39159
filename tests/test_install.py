"""The operator's install: the runtime dependencies only, pinned with hashes; the test and bench extras stay out.

`scripts/cutover` (and every operator script) runs `scripts/setup` on the production host. It once installed the
dev and bench extras (playwright, reladiff) there, unpinned."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
DEV_LOCK = ROOT / "requirements" / "dev.lock"


def _pins(lock: Path) -> dict[str, tuple[str, int]]:
    """name -> (pinned version, number of hashes), read from a pip-compile lock file."""
    pins: dict[str, tuple[str, int]] = {}
    name = None
    for line in lock.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash=sha256:"):
            assert name is not None, f"{lock.name}: a hash before any requirement"
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
        elif not line.startswith(" "):
            requirement = Requirement(stripped.rstrip("\\").strip())
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{lock.name}: {requirement.name} is not pinned exactly"
            name = canonicalize_name(requirement.name)
            pins[name] = (spec.version, 0)
    return pins


def _extras(group: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(spec).name) for spec in project["optional-dependencies"][group]}


def test_the_runtime_lock_pins_every_dependency_with_hashes_and_no_dev_or_bench_tool() -> None:
    pins = _pins(RUNTIME_LOCK)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = {canonicalize_name(Requirement(spec).name) for spec in declared} - set(pins)
    assert not missing, f"runtime.lock lacks {sorted(missing)}: run scripts/lock"
    assert all(hashes for _version, hashes in pins.values()), "a pin without a hash"
    assert not (_extras("dev") | _extras("bench")) & set(pins), "a dev or bench tool in the operator's install"


def test_the_dev_lock_adds_the_extras_at_the_same_versions() -> None:
    runtime, dev = _pins(RUNTIME_LOCK), _pins(DEV_LOCK)
    assert (_extras("dev") | _extras("bench")) <= set(dev)
    differ = {name for name, (version, _h) in runtime.items() if dev.get(name, (None,))[0] != version}
    assert not differ, f"dev.lock pins {sorted(differ)} differently from runtime.lock: run scripts/lock"


@pytest.mark.rehearsal
def test_the_operators_setup_installs_the_runtime_lock_only(tmp_path: Path) -> None:
    """A fresh copy of the checkout, set up as scripts/cutover sets it up: no ruff, xdist, playwright, reladiff."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    copy = tmp_path / "checkout"
    for relative in listed:
        if (ROOT / relative).is_file():
            (copy / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, copy / relative)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    done = subprocess.run(["bash", "scripts/setup"], cwd=copy, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "requirements/runtime.lock" in done.stderr
    listing = subprocess.run([str(copy / ".venv/bin/python"), "-m", "pip", "list", "--format=json"],
                             capture_output=True, text=True, check=True).stdout
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listing)}
    assert not (_extras("dev") | _extras("bench")) & set(installed)
    pins = _pins(RUNTIME_LOCK)
    assert all(installed.get(name) == version for name, (version, _h) in pins.items() if name != "setuptools")
    assert "hipaa-migration-gate" in installed


@pytest.mark.parametrize("script", ["cutover", "migrate", "backup", "rollback", "watch", "precheck", "rehearse"])
def test_operator_scripts_ask_for_the_runtime_install(script: str) -> None:
    text = (ROOT / "scripts" / script).read_text()
    assert "scripts/setup" in text and "--dev" not in text and "--browser" not in text
