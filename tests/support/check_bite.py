"""A migrated database broken the way each integrity check guards against, shared by the checks' own tests and the
baseline digests' (which run the same breakages against the backup's digests): the breakages (INTEGRITY), the
seeded PHI no message may carry (the module fixture `known_phi`, imported by name) and `red`, which holds both."""

from __future__ import annotations

import psycopg
import pytest

from migration_gate.checks import integrity
from migration_gate.core.phi import PhiCodec
from migration_gate.core.result import Result
from sandbox.synthetic import SANDBOX_KEY

CODEC = PhiCodec(SANDBOX_KEY)


@pytest.fixture(scope="module")
def known_phi(pg, legacy_template) -> list[str]:
    """Plaintext PHI of the seeded data: no failure message may contain any of it."""
    with psycopg.connect(pg.dsn(legacy_template)) as conn:
        names = [n.strip() for (n,) in conn.execute("SELECT name FROM clients_hipaa") if len(n.strip()) > 4]
        emails = [CODEC.decrypt(v).strip() for (v,) in conn.execute(
            "SELECT email_encrypted FROM clients_hipaa WHERE email_encrypted <> '' LIMIT 50")]
    return names + emails + ["jane@example.com"]


def red(result: Result, fragment: str, known_phi: list[str]) -> None:
    assert not result.ok, f"{result.check} stayed green on a broken sandbox"
    message = "\n".join(result.problems)
    assert fragment in message, message
    leaked = [p for p in known_phi if p in message]
    assert not leaked, f"PHI in a failure message of {result.check}"


INTEGRITY = [
    ("soft-deleted patients not copied (WHERE deleted = false)",
     ["DELETE FROM clinical_sessions WHERE patient_id IN (SELECT id FROM patients WHERE deleted)",
      "DELETE FROM patient_treatment_plans WHERE patient_id IN (SELECT id FROM patients WHERE deleted)",
      "DELETE FROM patients WHERE deleted"], "patients", integrity.counts,
     "patients: 116 rows, legacy clients_hipaa had 120"),
    ("a patient moved to another therapist",
     ["UPDATE patients SET primary_therapist_id = 3 WHERE id = 1"], "patients", integrity.counts,
     "counts per owner differ for 2 groups"),
    ("a lost session", ["DELETE FROM clinical_sessions WHERE id = 10"], "clinical_sessions",
     integrity.rows_correspond, "clinical_sessions: 1 legacy rows have no new row (first ids: 10)"),
    ("a session without a source",
     ["INSERT INTO clinical_sessions (id, organization_id, patient_id, therapist_id, date) "
      "VALUES (900000, 1, 1, 1, now())"], "clinical_sessions",
     integrity.rows_correspond, "1 new rows have no legacy source (first ids: 900000)"),
    ("money zeroed (0011)", ["UPDATE patients SET session_cost = 0 WHERE session_cost < 0 OR session_cost > 1000"],
     "patients", integrity.columns_equal, "patients.session_cost: "),
    ("soft-delete flags reset (0002)", ["UPDATE patients SET deleted = false"], "patients", integrity.columns_equal,
     "patients.deleted: 4 rows differ"),
    ("a status rewritten", ["UPDATE clinical_sessions SET status = 'completed' WHERE status = 'no_show'"],
     "clinical_sessions", integrity.columns_equal, "clinical_sessions.status: "),
    ("a status rewritten, counted (count_by)", ["UPDATE clinical_sessions SET status = 'completed' WHERE status = "
                                                "'no_show'"], "clinical_sessions", integrity.counts,
     "clinical_sessions: counts per status differ for 2 groups"),
    ("a session re-pointed at another patient (id remapping)", ["UPDATE clinical_sessions SET patient_id = 1 "
                                                                "WHERE id = 20 AND patient_id <> 1"],
     "clinical_sessions", integrity.columns_equal,
     "clinical_sessions.patient_id: 1 rows differ from the legacy value (first ids: 20)"),
]
