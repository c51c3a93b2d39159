"""A test helper run by a [rehearsal] create_copy hook after the copy is made: the source database then refuses
every new connection (ALLOW_CONNECTIONS false), so any later session of the gate on the target fails the run.
Prints nothing: the copy's JSON line stays the hook's last line."""

from __future__ import annotations

import os
import sys

import psycopg
from psycopg import sql

from migration_gate.backup import database_dsn
from migration_gate.rehearsal.copies import SOURCE_ENV


def set_connections(dsn: str, allowed: bool) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(database_dsn(dsn, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.Literal(allowed)))


if __name__ == "__main__":
    set_connections(os.environ[SOURCE_ENV], allowed=False)
    sys.exit(0)
