"""One root for the library's exceptions: every error the gate raises is a MigrationGateError (keeping the builtin
base callers catch it by), and a failed check stays pytest's AssertionError."""

from __future__ import annotations

import importlib
import pkgutil

import migration_gate
from migration_gate.core.errors import MigrationGateError
from migration_gate.core.result import CheckFailed


def _exceptions() -> list[type[BaseException]]:
    found = set()
    for info in pkgutil.walk_packages(migration_gate.__path__, "migration_gate."):
        module = importlib.import_module(info.name)
        found |= {v for v in vars(module).values() if isinstance(v, type) and issubclass(v, BaseException)
                  and v.__module__ == info.name}
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__name__}")


def test_every_exception_of_the_library_has_one_root() -> None:
    strays = [f"{c.__module__}.{c.__name__}" for c in _exceptions()
              if not issubclass(c, MigrationGateError) and c is not CheckFailed]
    assert not strays, strays
    assert issubclass(CheckFailed, AssertionError)
