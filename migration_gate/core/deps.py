"""Whether this interpreter can run the phase suites at all. A pytest outside the project's .venv (a system
pytest) lacks the project's dependencies; the root conftest.py asks here first, so that a user who types the
README's `pytest -m premigration` with the wrong pytest gets one line saying what to run, not an ImportError
traceback. Standard library only (it is asked before anything else is importable), and old-Python syntax."""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys

# pyproject.toml's [project] dependencies: distribution name -> the module it is imported as
DEPENDENCIES = {"pytest": "pytest", "psycopg": "psycopg", "psycopg-pool": "psycopg_pool", "httpx": "httpx",
                "pytest-html": "pytest_html", "hypothesis": "hypothesis", "cryptography": "cryptography",
                "bcrypt": "bcrypt", "pyjwt": "jwt", "werkzeug": "werkzeug", "sqlparse": "sqlparse",
                "pyrage": "pyrage", "pglast": "pglast", "jinja2": "jinja2", "msgspec": "msgspec"}
MIN_PYTHON = (3, 11)
MIN_PYTEST = 8
DEFAULT_ARGS = ["-m", "premigration"]


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a parent package missing, or a module blocked with sys.modules[name] = None
        return True


def missing() -> list[str]:
    """What this interpreter lacks of the project's requirements, by name (empty: everything is there)."""
    if sys.version_info < MIN_PYTHON:
        this = f"{sys.version_info[0]}.{sys.version_info[1]}"
        return [f"Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer (this is {this})"]
    gone = [name for name, module in DEPENDENCIES.items() if _absent(module)]
    if "pytest" not in gone:
        import pytest

        if int(pytest.__version__.split(".")[0]) < MIN_PYTEST:
            gone.insert(0, f"pytest {MIN_PYTEST} or newer (this is {pytest.__version__})")
    return gone


def setup_hint(argv: list[str] | None = None) -> str | None:
    """The one line for a pytest that cannot run the suites, naming what is missing and the exact command to run
    instead (the same arguments, with the .venv's pytest); None when nothing is missing."""
    lacking = missing()
    if not lacking:
        return None
    argv = sys.argv if argv is None else argv
    invoked_as_pytest = bool(argv) and (os.path.basename(argv[0]) in ("pytest", "py.test")
                                        or argv[0].endswith(os.path.join("pytest", "__main__.py")))
    args = list(argv[1:]) if invoked_as_pytest else DEFAULT_ARGS
    command = shlex.join([".venv/bin/pytest", *(args or DEFAULT_ARGS)])
    return (f"migration-gate: this pytest ({sys.executable}) lacks the project's dependencies "
            f"({', '.join(lacking)}): run `bash scripts/setup`, then `{command}`")
