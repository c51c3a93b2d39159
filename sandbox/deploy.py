"""The sandbox app's own migrations: what its start command runs before every start on the new schema, as the
real app's deploy does (Render runs `migrate:all` before the server; target-app.md section 12).

The files in sandbox/app_migrations/ are ours (modelled on the facts, never the app's code): tables with foreign
keys to organizations, patients, users_auth and clinical_sessions, created IF NOT EXISTS, so every start may run
them again. As a careful deploy would, the run then gives the app's role its [app_role] privileges on the tables
the description declares ([deploy] app_tables). A deploy of another app that runs its own migrations skips this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import psycopg

from migration_gate.config import AppRole, GateConfig
from sandbox.roles import grant_app_role

APP_MIGRATIONS = Path(__file__).resolve().parent / "app_migrations"


def run_app_migrations(dsn: str, app_role: AppRole | None = None, grant: Iterable[str] = (),
                       schema: str = "public", folder: Path = APP_MIGRATIONS) -> list[str]:
    """Run every .sql file of `folder` in name order, each in one transaction with `schema` first on the search
    path, as the schema's owner (`dsn`); then grant the app's role its privileges on the `grant` tables that
    exist. Returns the files run."""
    files = sorted(folder.glob("*.sql"))
    for path in files:
        with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
            conn.execute("SELECT set_config('search_path', %s, true)", (schema,))
            conn.execute(path.read_text(encoding="utf-8"))
    if app_role is not None:
        grant_app_role(dsn, app_role, sorted(grant), schema)
    return [path.name for path in files]


def deploy_migrations(gate: GateConfig, owner_dsn: str) -> Callable[[], None] | None:
    """What the sandbox's start command runs before the reference API starts on the new schema; None for a
    description that declares no [deploy] app_tables (another app, whose deploy creates nothing)."""
    if not gate.app_tables:
        return None

    def run() -> None:
        run_app_migrations(owner_dsn, gate.app_role, gate.app_tables, gate.schema)
    return run
