"""A description that extends another: only what differs is written (a staging target, another app's contract);
tables are laid over key by key, arrays replace, relative paths resolve from the first description's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from migration_gate.config import ConfigError, load_config
from tests.conftest import ROOT

SHIPPED = ROOT / "migration.toml"


def test_an_overlay_changes_only_what_it_names(tmp_path: Path) -> None:
    overlay = tmp_path / "staging.toml"
    overlay.write_text(f'extends = "{SHIPPED}"\n\n[api.probe]\nemail = "email"\n\n[budgets]\ndowntime_minutes = 45\n')
    shipped, laid = load_config(SHIPPED), load_config(overlay)
    assert laid.api.probe.email == "email" and laid.api.probe.phone == shipped.api.probe.phone
    assert laid.downtime_minutes == 45 and laid.api_p95_ms == shipped.api_p95_ms
    assert laid.migration_file == shipped.migration_file  # resolved from the shipped description's folder
    assert laid.tables == shipped.tables and laid.path == overlay


def test_an_array_in_the_overlay_replaces_the_one_under_it(tmp_path: Path) -> None:
    overlay = tmp_path / "fewer.toml"
    overlay.write_text(f'extends = "{SHIPPED}"\n\n[api]\ndebug_routes = ["/api/debug-jwt"]\n')
    assert load_config(overlay).api.debug_routes == ("/api/debug-jwt",)


@pytest.mark.parametrize(("text", "fragment"), [
    ('extends = ""\n', "extends must be the path of another description"),
    ('extends = "nowhere.toml"\n', "nowhere.toml not found"),
    ('extends = "loop.toml"\n', "goes round in a circle"),
])
def test_a_wrong_extends_is_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "loop.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_the_loma_org_description_is_the_shipped_one_with_the_real_server_as_the_new_app(tmp_path: Path) -> None:
    """docs/loma-org.toml (README: pointing it at the loma-org app) names a checkout beside this one; here an
    overlay of it points at an empty folder instead, so the description itself is what is checked."""
    checkout = tmp_path / "loma-org123"
    checkout.mkdir()
    overlay = tmp_path / "here.toml"
    overlay.write_text(f'extends = "{ROOT / "docs" / "loma-org.toml"}"\n\n[rehearsal.app_new]\ncwd = "{checkout}"\n')
    shipped, loma = load_config(SHIPPED), load_config(overlay)
    app = loma.rehearsal.app_new
    assert app is not None and app.cwd == checkout and app.database_role == "owner"
    assert app.headers == {"X-Forwarded-Proto": "https"} and app.pass_env == ("SESSION_SECRET",)
    assert "npm start" in app.command and "pre-start" in app.command  # Render's start: its migrations, then it
    assert loma.waivers == () and shipped.rehearsal.app_new is None
    assert (loma.api, loma.answers, loma.app_tables, loma.tables) == (
        shipped.api, shipped.answers, shipped.app_tables, shipped.tables)
