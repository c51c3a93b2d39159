"""Nothing escapes the catalog: every object a migration can leave behind in the app's schema, and every property
it can change, is declared in [new_catalog] or POST-01 is red naming it (kind and identity, never a value)."""

from __future__ import annotations

import psycopg
import pytest

from migration_gate.checks import schema
from migration_gate.config import load_config
from migration_gate.db.catalog import inspect, object_catalogs

GATE = load_config()

# (what a migration left behind, its statements, the line POST-01 must show)
LEFT_BEHIND = [
    ("a view", ["CREATE VIEW patient_names AS SELECT id, name FROM patients"],
     "view public.patient_names is in the database but not in [new_catalog]"),
    ("a function", ["CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'"],
     "function public.touch() is in the database but not in [new_catalog]"),
    ("an aggregate", ["CREATE FUNCTION keep_nothing(integer[], integer) RETURNS integer[] LANGUAGE sql AS 'SELECT $1'",
                      "CREATE AGGREGATE array_agg(integer) (sfunc = keep_nothing, stype = integer[])"],
     "aggregate public.array_agg(integer) is in the database but not in [new_catalog]"),
    ("an enum type", ["CREATE TYPE patient_state AS ENUM ('active', 'inactive')"],
     "type public.patient_state is in the database but not in [new_catalog]"),
    ("a rule", ["CREATE RULE no_delete AS ON DELETE TO patients DO INSTEAD NOTHING"],
     "rule no_delete on public.patients is in the database but not in [new_catalog]"),
    ("row-level security forced", ["ALTER TABLE patients FORCE ROW LEVEL SECURITY"],
     "table public.patients is grants app_user:INSERT,app_user:SELECT,app_user:UPDATE; forced row level security"),
    ("an unlogged table", ["ALTER TABLE audit_logs_hipaa DROP CONSTRAINT audit_logs_hipaa_user_id_users_auth_id_fk",
                           "ALTER TABLE audit_logs_hipaa SET UNLOGGED"],
     "table public.audit_logs_hipaa is grants app_user:INSERT,app_user:SELECT; unlogged"),
    ("a column default drawing from another sequence",
     ["CREATE SEQUENCE patients_other_seq",
      "ALTER TABLE patients ALTER COLUMN id SET DEFAULT nextval('patients_other_seq')"],
     "sequence public.patients_other_seq is in the database but not in [new_catalog]"),
    ("a column collation", ["ALTER TABLE patients ALTER COLUMN name TYPE text COLLATE \"C\""],
     '"public"."patients"."name" is text collate "C" not null, expected text not null'),
    ("an owner change", ["ALTER TABLE therapist_phi OWNER TO app_user"],
     "table public.therapist_phi is owner app_user"),
    ("a grant to PUBLIC", ["GRANT SELECT ON patients TO PUBLIC"],
     "table public.patients is grants PUBLIC:SELECT,app_user:INSERT,app_user:SELECT,app_user:UPDATE"),
    ("a column grant to PUBLIC", ["GRANT SELECT (name) ON patients TO PUBLIC"],
     "column grants name:PUBLIC:SELECT"),
    ("CREATE on the schema for everyone", ["GRANT CREATE ON SCHEMA public TO PUBLIC"],
     "schema public is owner pg_database_owner; grants PUBLIC:CREATE,PUBLIC:USAGE"),
]


def _post01(conn: psycopg.Connection) -> list[str]:
    """What POST-01's two catalog tests find: the table model and every other object."""
    found = inspect(conn, [GATE.schema])
    return (schema.matches(found, GATE.new_schema, GATE.new_objects).problems
            + schema.only_declared_objects(found, GATE.new_catalog, GATE.app_tables).problems)


def test_a_clean_migration_declares_every_object(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        assert _post01(conn) == []


@pytest.mark.parametrize(("label", "statements", "fragment"), LEFT_BEHIND, ids=[c[0] for c in LEFT_BEHIND])
def test_an_object_or_property_a_migration_leaves_behind_is_red(pg, migrated_db, label, statements, fragment):
    """The migration runs as a superuser here (an owner change needs one); the gate reads as the owner."""
    with psycopg.connect(pg.admin_dsn(psycopg.conninfo.conninfo_to_dict(migrated_db)["dbname"]),
                         autocommit=True) as admin:
        for statement in statements:
            admin.execute(statement)
    with psycopg.connect(migrated_db) as conn:
        problems = _post01(conn)
    assert any(fragment in p for p in problems), f"{label} went unseen: {problems}"


def test_the_object_kinds_come_from_the_servers_catalogs(pg):
    """Which pg_catalog tables are scanned is asked of the server (every oid column named *namespace), not listed."""
    with psycopg.connect(pg.dsn()) as conn:
        found = {name: (owner, acl) for name, _, owner, acl in object_catalogs(conn)}
    assert {"pg_class", "pg_proc", "pg_type", "pg_collation", "pg_operator", "pg_extension", "pg_ts_dict",
            "pg_statistic_ext", "pg_default_acl"} <= set(found)
    assert found["pg_proc"] == ("proowner", "proacl") and found["pg_ts_parser"] == (None, None)
