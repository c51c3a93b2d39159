"""A description with [[waivers]] appended, shared by the waivers' tests and the gate's (a waived finding in a
whole cut-over)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from tests.conftest import ROOT

TOMORROW, YESTERDAY = date.today() + timedelta(days=1), date.today() - timedelta(days=1)


def waiver(found: str, expires: date = TOMORROW, criterion: str = "POST-01", key: str = "finding") -> str:
    return (f"\n[[waivers]]\ncriterion = \"{criterion}\"\n{key} = '{found}'\n"
            "reason = \"the app's own column; dropped in TICKET-123\"\n"
            f"decided_by = \"Jane Doe (compliance officer)\"\nexpires = {expires.isoformat()}\n")


def description(tmp_path: Path, *waivers: str) -> Path:
    """The shipped description with these waivers appended (its SQL files named by absolute path)."""
    text = (ROOT / "migration.toml").read_text().replace('file = "sandbox/', f'file = "{ROOT}/sandbox/')
    path = tmp_path / "migration.toml"
    path.write_text(text + "".join(waivers))
    return path
