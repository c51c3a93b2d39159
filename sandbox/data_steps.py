"""Python data steps of the sandbox migration: what SQL cannot do because it needs the PHI key.

Both stream rows with a server-side cursor, transform them in Python and send the results back with COPY into a
temporary table, then update in one set-based statement; nothing holds a whole table in memory.
"""

from __future__ import annotations

import psycopg

from migration_gate.db.migration import DataStepContext

BATCH = 5_000


def _stream_to_temp(conn: psycopg.Connection, select: str, create_temp: str, copy: str, transform) -> int:
    """Read a batch from a server-side cursor, transform it, COPY it into a temp table; repeat.

    One connection cannot fetch from a cursor while a COPY is open, hence batches rather than one stream.
    """
    conn.execute(create_temp)
    moved = 0
    with conn.cursor(name="data_step_source") as source, conn.cursor() as sink:
        source.execute(select)
        while batch := source.fetchmany(BATCH):
            with sink.copy(copy) as out:
                for row in batch:
                    out.write_row(transform(row))
            moved += len(batch)
    return moved


def encrypt_organization_ein(conn: psycopg.Connection, ctx: DataStepContext) -> int:
    """therapist_profiles.ein_number (plaintext) -> organizations.organization_business_ein_encrypted."""
    moved = _stream_to_temp(
        conn,
        "SELECT DISTINCT ON (user_id) user_id, ein_number FROM therapist_profiles "
        "WHERE ein_number IS NOT NULL ORDER BY user_id, id",
        "CREATE TEMP TABLE _ein_encrypted (user_id integer PRIMARY KEY, ct text) ON COMMIT DROP",
        "COPY _ein_encrypted (user_id, ct) FROM STDIN",
        lambda row: (row[0], ctx.codec.encrypt(row[1])),
    )
    conn.execute(
        "UPDATE organizations o SET organization_business_ein_encrypted = e.ct "
        "FROM _ein_encrypted e JOIN organization_memberships m ON m.user_id = e.user_id AND m.is_primary_owner "
        "WHERE o.id = m.organization_id")
    ctx.progress(f"encrypted {moved} EINs")
    return moved


def decrypt_organization_ein(conn: psycopg.Connection, ctx: DataStepContext) -> int:
    """The rollback's inverse: organizations' encrypted EIN back into therapist_profiles.ein_number
    (the rollback SQL has re-added the column)."""
    moved = _stream_to_temp(
        conn,
        "SELECT m.user_id, o.organization_business_ein_encrypted FROM organizations o "
        "JOIN organization_memberships m ON m.organization_id = o.id AND m.is_primary_owner "
        "WHERE o.organization_business_ein_encrypted IS NOT NULL",
        "CREATE TEMP TABLE _ein_plain (user_id integer PRIMARY KEY, ein text) ON COMMIT DROP",
        "COPY _ein_plain (user_id, ein) FROM STDIN",
        lambda row: (row[0], ctx.codec.decrypt(row[1])),
    )
    conn.execute("UPDATE therapist_profiles p SET ein_number = e.ein FROM _ein_plain e WHERE p.user_id = e.user_id")
    ctx.progress(f"decrypted {moved} EINs")
    return moved
