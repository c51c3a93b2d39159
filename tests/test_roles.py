"""A managed database's roles (issue 8, item 9): everything runs as a non-superuser owner role with CREATEDB, as a
hosted PostgreSQL gives its customer; the app connects as its own role with exactly the configured privileges
(POST-18); PRE-10 is red, never blind, where it cannot see other roles' sessions; databases are dropped without
WITH (FORCE) where the server lacks it; identity columns count as sequences. Creating roles needs the cluster's
bootstrap superuser (``pg.create_role``), as it needs a host's console: that is all the superuser does here."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from migration_gate import backup
from migration_gate.checks import environment, grants, schema
from migration_gate.config import AppRole, load_config
from migration_gate.db import migration
from sandbox.api_process import ApiProcess
from sandbox.roles import as_role
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import MIGRATION
from tests.support.suites import run_suite

GATE = load_config()
APP = GATE.app_role
APPEND_ONLY = frozenset(m.new for m in GATE.tables if m.append_only)
OUTSIDER = "gate_outsider"  # a role the owner is not a member of, without pg_read_all_stats
MONITOR = "gate_monitor"  # a role with pg_read_all_stats


@pytest.fixture(scope="module")
def outsider(pg) -> str:
    return pg.create_role(OUTSIDER)  # the bootstrap superuser creates roles (a host's console does)


@pytest.fixture(scope="module")
def monitor(pg) -> str:
    return pg.create_role(MONITOR, member_of=("pg_read_all_stats",))  # needs the superuser too


def _privileges(dsn: str, tables: list[str]):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return grants.app_privileges(conn, APP, tables, schema=GATE.schema, append_only=APPEND_ONLY)


def _break(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _api(dsn: str, hipaa: bool, folder: Path) -> ApiProcess:
    """The reference API as the app's own role."""
    return ApiProcess(as_role(dsn, APP.name), SANDBOX_KEY, hipaa, folder / "api.log", folder / "maintenance.flag")


def _login(client: httpx.Client) -> httpx.Response:
    """Log in as the fixture therapist; the client keeps the session cookie."""
    return client.post("/api/login", json={"username": GATE.sandbox_username, "password": GATE.sandbox_password})


# -- 1. the owner role and the app role ---------------------------------------------------------------------------

def test_the_owner_role_is_no_superuser_and_owns_the_database_its_schemas_and_every_object(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        me = conn.execute("SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                          "WHERE rolname = current_user").fetchone()
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
                             ).fetchone()[0]
        schemas = dict(conn.execute("SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace "
                                    "WHERE nspname IN ('public', 'drizzle')").fetchall())
        foreign = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                               "WHERE n.nspname IN ('public', 'drizzle') AND pg_get_userbyid(c.relowner) <> "
                               "current_user").fetchone()[0]
        app = conn.execute("SELECT rolsuper, rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname = %s",
                           (APP.name,)).fetchone()
    assert me == ("gate_owner", False, True, False)
    assert owner == "gate_owner" and foreign == 0
    assert schemas["drizzle"] == "gate_owner" and schemas["public"] in ("gate_owner", "pg_database_owner")
    assert app == (False, False, True)


def test_every_new_table_grants_the_app_exactly_its_configured_privileges(migrated_db: str) -> None:
    result = _privileges(migrated_db, sorted(GATE.new_schema)).expect()
    assert result.checked >= len(GATE.new_schema)


@pytest.mark.parametrize(("statements", "fragment"), [
    (["REVOKE INSERT ON organizations FROM app_user"],
     'the app cannot insert into "public"."organizations": role "app_user" lacks INSERT'),
    (["REVOKE USAGE ON SEQUENCE organization_memberships_id_seq FROM app_user"],
     'the app cannot insert into "public"."organization_memberships": role "app_user" lacks USAGE on sequence'),
    (["GRANT UPDATE, TRUNCATE ON audit_logs_hipaa TO app_user"],
     '"public"."audit_logs_hipaa" is append-only but role "app_user" has UPDATE on it'),
    (["GRANT DELETE ON patients TO app_user"],
     'role "app_user" has DELETE on "public"."patients", which [app_role] does not give it'),
])
def test_a_missing_or_extra_privilege_is_red_naming_it(migrated_db: str, statements: list[str],
                                                        fragment: str) -> None:
    _break(migrated_db, *statements)
    result = _privileges(migrated_db, sorted(GATE.new_schema))
    assert not result.ok and fragment in "\n".join(result.problems), result.problems


def test_an_append_only_table_is_red_with_update_even_when_configured(migrated_db: str) -> None:
    wide = AppRole(APP.name, APP.privileges, APP.sequences, {})  # the audit table would get UPDATE too
    _break(migrated_db, "GRANT UPDATE ON audit_logs_hipaa TO app_user")
    with psycopg.connect(migrated_db) as conn:
        result = grants.app_privileges(conn, wide, ["audit_logs_hipaa"], append_only=APPEND_ONLY)
    assert not result.ok and "is append-only" in result.problems[0]


def test_without_the_migrations_grants_postcheck_is_red_and_the_app_fails(legacy_db: str, tmp_path: Path) -> None:
    """The new tables are the owner's: without the migration's GRANTs the app's role cannot read them."""
    bare = tmp_path / "no_grants.sql"
    bare.write_text("\n".join(line for line in MIGRATION.read_text().splitlines() if not line.startswith("GRANT ")))
    migration.run_file(legacy_db, bare, SANDBOX_KEY)
    result = _privileges(legacy_db, sorted(GATE.new_schema))
    assert 'the app cannot read "public"."organizations": role "app_user" lacks SELECT' in result.problems
    with _api(legacy_db, True, tmp_path) as api, httpx.Client(base_url=api.base_url, timeout=30) as client:
        assert _login(client).status_code == 500  # the login reads organization_memberships


def test_the_app_role_works_on_the_new_schema(migrated_db: str, tmp_path: Path) -> None:
    with _api(migrated_db, True, tmp_path) as api, httpx.Client(base_url=api.base_url, timeout=30) as client:
        assert _login(client).status_code == 200
        for path in ("/api/organizations", "/api/patients", "/api/clinical-sessions"):
            assert client.get(path).status_code == 200, path
        created = client.post("/api/patients", json={"name": "Probe Patient", "contactEmail": "probe@example.com"})
        assert created.status_code == 201, created.text
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT count(*) FROM audit_logs_hipaa WHERE resource_type = 'PATIENT'").fetchone()[0]


def test_a_rollback_restore_keeps_the_grants_the_app_needs(legacy_db: str, tmp_path: Path) -> None:
    taken = backup.take_backup(legacy_db, tmp_path / "backup")
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    backup.restore_in_place(Path(taken.path), legacy_db)
    _privileges(legacy_db, sorted(GATE.legacy_schema)).expect()
    with _api(legacy_db, False, tmp_path) as api, httpx.Client(base_url=api.base_url, timeout=30) as client:
        assert _login(client).status_code == 200
        assert client.get("/api/patients").status_code == 200
        created = client.post("/api/patients", json={"name": "After Rollback", "email": "after@example.com"})
        assert created.status_code == 201, created.text


# -- 2. PRE-10 without pg_read_all_stats -----------------------------------------------------------------------------

def test_sessions_of_other_roles_it_cannot_see_make_pre10_red_not_blind(legacy_db: str, outsider: str) -> None:
    with psycopg.connect(as_role(legacy_db, outsider)) as other, psycopg.connect(legacy_db) as conn:
        other.execute("SELECT 1")  # an open transaction the owner cannot see
        result = environment.no_long_transactions(conn)
    assert not result.ok
    assert result.problems == [
        f'1 sessions of other roles ("{OUTSIDER}": 1): state not visible without pg_read_all_stats; grant it '
        '(GRANT pg_read_all_stats TO "gate_owner"), make "gate_owner" a member of those roles, or run as a role '
        "that sees them"]


def test_with_pg_read_all_stats_other_roles_sessions_are_judged(legacy_db: str, outsider: str, monitor: str) -> None:
    with psycopg.connect(as_role(legacy_db, outsider)) as other, \
            psycopg.connect(as_role(legacy_db, monitor), autocommit=True) as conn:
        other.execute("SELECT 1")
        assert environment.no_long_transactions(conn).ok  # seen, and not long
        time.sleep(0.05)
        long = environment.no_long_transactions(conn, max_seconds=0)
    assert not long.ok and long.problems[0].startswith("1 transactions open too long")


def test_the_app_roles_sessions_are_seen_by_the_owner_that_is_a_member(legacy_db: str) -> None:
    """The sandbox's owner is a member of the app's role, so PRE-10 sees the app (and judges it)."""
    with psycopg.connect(as_role(legacy_db, APP.name)) as app, psycopg.connect(legacy_db, autocommit=True) as conn:
        app.execute("SELECT 1")
        assert environment.no_long_transactions(conn).ok
        time.sleep(0.05)
        assert not environment.no_long_transactions(conn, max_seconds=0).ok


# -- 3. DROP DATABASE without WITH (FORCE) ---------------------------------------------------------------------------

def _exists(pg, name: str) -> bool:
    with psycopg.connect(pg.dsn()) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


@pytest.mark.parametrize("force", [False, None])
def test_a_database_in_use_is_dropped_with_or_without_force(pg, new_db, force: bool | None) -> None:
    """force=False takes the pre-13 way on this server: no new connections, end the sessions, then drop."""
    dsn = new_db()
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    held = psycopg.connect(dsn)
    held.execute("SELECT 1")  # connected, inside a transaction
    backup.drop_database(pg.dsn(), name, force=force)
    assert not _exists(pg, name)
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()


def test_without_force_another_roles_session_it_may_not_end_is_a_clear_error(pg, new_db, outsider: str) -> None:
    dsn = new_db()
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(as_role(dsn, outsider)), \
            pytest.raises(backup.BackupError, match="sessions of another role .* pg_signal_backend"):
        backup.drop_database(pg.dsn(), name, force=False)
    backup.drop_database(pg.dsn(), name, force=False)
    assert not _exists(pg, name)


def test_with_force_another_roles_session_is_a_clear_error_after_waiting(pg, new_db, outsider: str) -> None:
    """WITH (FORCE) may not end another role's session (nor an autovacuum worker: the wait covers those)."""
    dsn = new_db()
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(as_role(dsn, outsider)), \
            pytest.raises(backup.BackupError, match="sessions of another role .* pg_signal_backend"):
        backup.drop_database(pg.dsn(), name, force=True, wait_s=1)
    backup.drop_database(pg.dsn(), name, force=True)
    assert not _exists(pg, name)


def test_the_minimum_server_version_is_the_one_the_checksums_need(pg) -> None:
    """bit_xor(bigint) (the content checksums) is new in 14; WITH (FORCE) (13) has its fallback."""
    assert environment.MIN_SERVER == 14 and backup.FORCE_SINCE == 13
    with psycopg.connect(pg.dsn()) as conn:
        assert conn.execute("SELECT bit_xor(x) FROM (VALUES (1::bigint), (3::bigint)) v(x)").fetchone()[0] == 2
        assert environment.server_reachable(conn).ok


# -- 4. identity columns as sequences ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["BY DEFAULT", "ALWAYS"])
def test_an_identity_keyed_table_is_judged_by_its_sequence(new_db, kind: str) -> None:
    dsn = new_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE ident (id integer GENERATED {} AS IDENTITY PRIMARY KEY, v text)").format(
            sql.SQL(kind)))
        conn.execute("INSERT INTO ident (v) VALUES ('a'), ('b')")
        ahead = schema.sequences(conn, ["ident"])
        conn.execute(sql.SQL("INSERT INTO ident (id, v) {} VALUES (10, 'c')").format(
            sql.SQL("OVERRIDING SYSTEM VALUE" if kind == "ALWAYS" else "")))
        behind = schema.sequences(conn, ["ident"])
        conn.execute("GRANT SELECT, INSERT, UPDATE ON ident TO app_user")
        granted = grants.app_privileges(conn, APP, ["ident"])  # identity draws without USAGE on its sequence
    assert ahead.ok and ahead.checked == 1, ahead.problems
    assert behind.problems == ['"public"."ident"."id": sequence would hand out 3, not past max 10']
    assert granted.ok, granted.problems


# -- 5. the suites as a non-superuser owner, the app as its role -----------------------------------------------------

@pytest.mark.rehearsal
def test_the_phase_suites_run_as_the_non_superuser_owner_and_stay_green(tmp_path: Path) -> None:
    probe = tmp_path / "roles.jsonl"
    done = run_suite("-m", "premigration or postmigration", "-p", "tests.support.role_probe",
                     env={"ROLE_PROBE_FILE": str(probe)}, run_dir=tmp_path / "run")
    assert done.returncode == 0, done.stdout[-3000:]
    seen = [json.loads(line) for line in probe.read_text().splitlines()]
    assert len(seen) > 20
    assert {(s["role"], s["superuser"]) for s in seen} == {("gate_owner", False)}
    assert {role for s in seen for role in s["app_roles"]} == {APP.name}
