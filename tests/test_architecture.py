"""The library's shape, held by tests: migration_gate never imports the sandbox (it plugs in by name through
migration_gate.run.provider), its modules import each other without cycles, the checks library needs no pytest, and
the provider named in the configuration (or its overrides) is the one a run uses.

Checked with `ast` and a fresh interpreter rather than import-linter: two small tests with no new dependency,
and they see imports inside functions (the lazy `from sandbox...` this rule replaced) as well as module-level
ones."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from migration_gate.config import DEFAULT_SANDBOX_PROVIDER, ConfigError, load_config
from migration_gate.run.provider import load_provider
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import ROOT

LIBRARY = ROOT / "migration_gate"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in the file, at any depth (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, str(node.args[0].value), []))
    return found


def test_no_library_module_imports_the_sandbox() -> None:
    offending = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for name, path in _modules().items() for line, module, _ in _imports(name, path)
                 if module == "sandbox" or module.startswith("sandbox.")]
    assert not offending, "\n".join(offending)


def test_importing_every_library_module_leaves_the_sandbox_unimported() -> None:
    code = ("import importlib, json, pkgutil, sys, migration_gate\n"
            "for m in pkgutil.walk_packages(migration_gate.__path__, 'migration_gate.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(json.dumps({'imported': sorted(n for n in sys.modules if n.startswith('migration_gate')),\n"
            "                  'sandbox': sorted(n for n in sys.modules if n.split('.')[0] == 'sandbox')}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTEST_PLUGINS"})
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert set(found["imported"]) >= set(_modules()), "not every module was imported"
    assert found["sandbox"] == []


def test_library_modules_import_each_other_without_cycles() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, module, names in _imports(name, path):
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            targets.update(subs or ([module] if module in modules else []))
        graph[name] = targets - {name}
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        for follower in sorted(graph[node]):
            visit(follower, [*path, node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# The library's packages from the ground up: each imports only the ones before it (and itself).
PACKAGES = ("core", "config", "db", "scan", "app", "backup", "checks", "run", "report", "suite", "watch", "rehearsal",
            "cli")


def test_every_library_module_sits_in_a_package_by_responsibility() -> None:
    loose = [str(path.relative_to(ROOT)) for path in LIBRARY.glob("*.py") if path.name != "__init__.py"]
    assert not loose, "modules outside the packages: " + ", ".join(loose)
    assert sorted(p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file()) == sorted(PACKAGES)


def test_imports_point_down_the_package_order() -> None:
    """cli > rehearsal > watch > suite > report > run > checks > backup > app > scan > db > config > core: a
    package never imports one above it, so each can be read (and tested) with only what lies below."""
    upward = []
    for name, path in _modules().items():
        if "." not in name:
            continue
        package = name.split(".")[1]
        for line, module, names in _imports(name, path):
            parts = module.split(".")
            if parts[0] != "migration_gate":
                continue
            targets = [parts[1]] if len(parts) > 1 else [n for n in names if n in PACKAGES]
            upward += [f"{path.relative_to(ROOT)}:{line} ({package}) imports {module} ({target})" for target in targets
                       if PACKAGES.index(target) > PACKAGES.index(package)]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_the_checks_library_works_without_pytest() -> None:
    code = ("import sys\nfrom migration_gate import checks\nimport migration_gate.checks.api, "
            "migration_gate.checks.encryption\nr = checks.Result('plain').expect()\n"
            "assert r.ok and 'pytest' not in sys.modules, sorted(sys.modules)\n"
            "try:\n    checks.Result('bad', problems=['t.c: 2 rows differ']).expect()\n"
            "except checks.CheckFailed as exc:\n    assert exc.problems == ['t.c: 2 rows differ'], exc.problems\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_sandbox_provider_is_named_by_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATE_SANDBOX_PROVIDER", raising=False)
    assert load_config().sandbox_provider == DEFAULT_SANDBOX_PROVIDER == "sandbox.provider:SandboxProvider"
    assert load_provider(DEFAULT_SANDBOX_PROVIDER).key == SANDBOX_KEY
    monkeypatch.setenv("GATE_SANDBOX_PROVIDER", "tests.support.provider_probe:WrongKeyProvider")
    assert load_config().sandbox_provider == "tests.support.provider_probe:WrongKeyProvider"


@pytest.mark.parametrize("spec, message", [
    ("sandbox.provider", "must be 'module:attribute'"),
    ("no_such_module_here:Provider", "cannot import no_such_module_here (ModuleNotFoundError)"),
    ("sandbox.provider:NoSuchProvider", "sandbox.provider has no NoSuchProvider"),
    ("json:dumps", "lacks key, targets, rehearsal"),
])
def test_a_bad_provider_name_is_one_line(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_provider(spec)


def _premigration(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PHI_ENCRYPTION_KEY", "GATE_CONFIG",
                                                              "GATE_SANDBOX_PROVIDER")} | {"GATE_SANDBOX": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "premigration",
                           "-k", "test_phi_key_is_present", f"--gate-run-dir={tmp_path}", *args], cwd=ROOT,
                          env=clean | env, capture_output=True, text=True, timeout=300)


@pytest.mark.rehearsal
@pytest.mark.parametrize("how", ["environment", "option"])
def test_a_run_uses_the_provider_it_is_given(tmp_path: Path, how: str) -> None:
    spec = "tests.support.provider_probe:WrongKeyProvider"
    done = (_premigration(env={"GATE_SANDBOX_PROVIDER": spec}, tmp_path=tmp_path) if how == "environment" else
            _premigration(f"--gate-sandbox-provider={spec}", env={}, tmp_path=tmp_path))
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "criteria-premigration.json").read_text())
    assert [t["outcome"] for t in results["tests"]] == ["failed"]
    assert "PHI_ENCRYPTION_KEY must be 64 hex characters" in results["tests"][0]["problems"][0]


@pytest.mark.rehearsal
def test_a_run_with_a_bad_provider_stops_with_one_line(tmp_path: Path) -> None:
    done = _premigration("--gate-sandbox-provider=no_such_module_here:Provider", env={}, tmp_path=tmp_path)
    assert done.returncode == 4
    assert "cannot import no_such_module_here" in done.stderr and "Traceback" not in done.stderr + done.stdout


def test_one_http_client_factory() -> None:
    """The app's client is built in one place (app.client.http_client): its timeout and headers are one
    decision per call, not a hand-built httpx.Client each time."""
    factory = LIBRARY / "app" / "client.py"
    built = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in _modules().values() if path != factory
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr in ("Client", "AsyncClient")
             and isinstance(node.func.value, ast.Name) and node.func.value.id == "httpx"]
    assert not built, "httpx client built by hand (use http_client): " + ", ".join(built)


def test_no_test_file_imports_another() -> None:
    """What test files share lives in tests/support/ (helpers, and fixtures imported by name) or tests/conftest.py:
    a test file importing another's names runs that file's imports and ties two checklists together."""
    found = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # from tests import test_x, from tests.test_x import y, from .test_x
                base = ("tests." if node.level else "") + (node.module or "")
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {name}" for name in names
                      if re.fullmatch(r"tests\.test_\w+(\..*)?", name)][:1]
    assert not found, "a test file imports another (move what they share to tests/support/): " + ", ".join(found)


# The one reader of the process environment; a child's environment is built from its variables() copy.
ENVIRONMENT_READER = "migration_gate/config/environment.py"
# The embedded cluster's launcher runs as another user from a bare copy of itself and the tools' finder (standard
# library only: tests/test_embedded.py::test_starts_when_run_by_an_ordinary_user), so they read PG_BINDIR and
# MIGRATION_GATE_PG_USER themselves.
STANDALONE = {"migration_gate/db/embedded.py", "migration_gate/db/binaries.py"}


def _environment_reads(path: Path) -> list[int]:
    """Lines that touch os.environ, os.getenv, os.putenv/unsetenv or `from os import environ/getenv`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        attribute = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
            and node.attr in ("environ", "environb", "getenv", "getenvb", "putenv", "unsetenv")
        imported = isinstance(node, ast.ImportFrom) and node.module == "os" \
            and any(a.name in ("environ", "getenv", "putenv") for a in node.names)
        if attribute or imported:
            found.append(node.lineno)
    return found


def test_only_the_environment_module_reads_the_process_environment() -> None:
    """Run state travels in the suite's context file and secrets through config/environment.py: no other library
    module reads (or writes) os.environ, so a newcomer finds every variable the gate honours in one file."""
    readers = {rel: lines for rel, lines in ((str(p.relative_to(ROOT)), _environment_reads(p))
                                             for p in sorted(LIBRARY.rglob("*.py")))
               if lines and rel != ENVIRONMENT_READER and rel not in STANDALONE}
    assert not readers, f"os.environ read outside {ENVIRONMENT_READER}: {readers}"
