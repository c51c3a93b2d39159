"""Organizations and memberships: one solo practice per therapist, one active primary business owner each,
and every patient, session and plan in its therapist's practice."""

from __future__ import annotations

import psycopg

from migration_gate.checks import Result, first_ids

OWNER_FLAGS = ("can_view_all_patients", "can_view_all_calendars", "can_manage_billing", "can_manage_staff",
               "can_manage_settings", "can_create_patients")


def _ids(conn: psycopg.Connection, query: str) -> list:
    return [r[0] for r in conn.execute(query)]


def one_primary_owner(conn: psycopg.Connection) -> Result:
    result = Result("one active primary business owner per organization")
    counts = conn.execute(
        "SELECT o.id, count(m.id) FILTER (WHERE m.is_primary_owner AND m.is_active AND m.role = 'business_owner') "
        "FROM organizations o LEFT JOIN organization_memberships m ON m.organization_id = o.id GROUP BY o.id "
        "ORDER BY o.id").fetchall()
    result.checked = len(counts)
    none = [i for i, n in counts if n == 0]
    many = [i for i, n in counts if n > 1]
    if none:
        result.add(f"organizations: {len(none)} without an active primary business owner ({first_ids(none)})")
    if many:
        result.add(f"organizations: {len(many)} with more than one primary owner ({first_ids(many)})")
    return result


def no_duplicate_memberships(conn: psycopg.Connection) -> Result:
    result = Result("no duplicate memberships")
    ids = _ids(conn, "SELECT unnest(array_agg(id ORDER BY id)) FROM organization_memberships "
                     "GROUP BY organization_id, user_id HAVING count(*) > 1")
    if ids:
        result.add(f"organization_memberships: {len(ids)} rows repeat an (organization, user) pair "
                   f"({first_ids(ids)})")
    return result


def owners_have_full_rights(conn: psycopg.Connection) -> Result:
    """Every user who owns patients has exactly one active business_owner membership with every can_* flag."""
    result = Result("therapists own their practice with full rights")
    flags = " AND ".join(f"coalesce(m.{f}, false)" for f in OWNER_FLAGS)
    rows = conn.execute(
        "SELECT u.id, count(m.id) FILTER (WHERE m.is_active AND m.role = 'business_owner' AND m.is_primary_owner "
        f"AND {flags}) FROM users_auth u LEFT JOIN organization_memberships m ON m.user_id = u.id "
        "WHERE EXISTS (SELECT 1 FROM patients p WHERE p.primary_therapist_id = u.id) GROUP BY u.id ORDER BY u.id"
    ).fetchall()
    result.checked = len(rows)
    bad = [i for i, n in rows if n != 1]
    if bad:
        result.add(f"users_auth: {len(bad)} therapists with patients lack exactly one active, primary "
                   f"business_owner membership with every permission ({first_ids(bad)})")
    return result


def solo_practice_per_therapist(conn: psycopg.Connection) -> Result:
    """One solo organization per user, named "<profile name>'s Practice" (or "<username>'s Practice")."""
    result = Result("one solo practice per therapist, named after them")
    users, orgs = conn.execute("SELECT (SELECT count(*) FROM users_auth), (SELECT count(*) FROM organizations)"
                               ).fetchone()
    result.checked = orgs
    if users != orgs:
        result.add(f"organizations: {orgs} rows for {users} users")
    not_solo = _ids(conn, "SELECT id FROM organizations WHERE type IS DISTINCT FROM 'solo' ORDER BY id")
    if not_solo:
        result.add(f"organizations: {len(not_solo)} not of type solo ({first_ids(not_solo)})")
    misnamed = _ids(conn, """
        SELECT o.id FROM organizations o
        JOIN organization_memberships m ON m.organization_id = o.id AND m.is_primary_owner
        JOIN users_auth u ON u.id = m.user_id
        LEFT JOIN LATERAL (SELECT name FROM therapist_profiles p WHERE p.user_id = u.id ORDER BY p.id LIMIT 1) p
          ON true
        WHERE o.name IS DISTINCT FROM coalesce(nullif(btrim(p.name), ''), u.username) || '''s Practice'
        ORDER BY o.id""")
    if misnamed:
        result.add(f"organizations: {len(misnamed)} not named after their owner ({first_ids(misnamed)})")
    return result


def rows_in_their_therapists_practice(conn: psycopg.Connection) -> Result:
    """A patient's org is its primary therapist's practice; a session's and a plan's org is its patient's."""
    result = Result("every row belongs to its therapist's practice")
    checks = {
        "patients": "SELECT p.id FROM patients p LEFT JOIN organization_memberships m ON m.user_id = "
                    "p.primary_therapist_id AND m.is_primary_owner WHERE m.organization_id IS DISTINCT FROM "
                    "p.organization_id ORDER BY 1",
        "clinical_sessions": "SELECT s.id FROM clinical_sessions s LEFT JOIN patients p ON p.id = s.patient_id "
                             "WHERE p.organization_id IS DISTINCT FROM s.organization_id ORDER BY 1",
        "patient_treatment_plans": "SELECT t.id FROM patient_treatment_plans t LEFT JOIN patients p ON p.id = "
                                   "t.patient_id WHERE p.organization_id IS DISTINCT FROM t.organization_id ORDER BY 1",
    }
    for table, query in checks.items():
        ids = _ids(conn, query)
        result.checked += 1
        if ids:
            result.add(f"{table}: {len(ids)} rows whose organization_id is not their therapist's practice "
                       f"({first_ids(ids)})")
    return result
