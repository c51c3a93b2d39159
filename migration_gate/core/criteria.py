"""The migration checklist's criteria. Every phase-suite test names the one it proves
(``@pytest.mark.criterion("POST-03")``), so a report can list each criterion with its tests and results."""

from __future__ import annotations

from dataclasses import dataclass

from migration_gate.core.status import Outcome


@dataclass(frozen=True)
class Criterion:
    id: str
    phase: str
    text: str


CRITERIA: dict[str, Criterion] = {c.id: c for c in (
    Criterion("PRE-01", "premigration", "Database reachable; its version recorded"),
    Criterion("PRE-02", "premigration", "pg_dump present and not older than the server"),
    Criterion("PRE-03", "premigration", "PHI_ENCRYPTION_KEY present and 64 hex characters"),
    Criterion("PRE-04", "premigration", "The key decrypts existing ciphertext in every legacy PHI column"),
    Criterion("PRE-05", "premigration", "Every legacy PHI value is well-formed v1 ciphertext (no plaintext, v2:, "
                                        "or double encryption)"),
    Criterion("PRE-06", "premigration", "The legacy schema is what the migration expects (no drift)"),
    Criterion("PRE-07", "premigration", "The data meets the migration's preconditions (no orphans, no duplicate "
                                        "natural keys, money values the new types accept)"),
    Criterion("PRE-08", "premigration", "Migration and rollback rehearsed on a scratch copy, both passed"),
    Criterion("PRE-09", "premigration", "Backup folder writable with room for the dump"),
    Criterion("PRE-10", "premigration", "No long-running transactions"),
    Criterion("PRE-11", "premigration", "API healthy and on the legacy schema"),
    Criterion("PRE-12", "premigration", "The app's performance baseline measured on the legacy schema and recorded "
                                        "(p50/p95/p99 and errors per endpoint)"),
    Criterion("PRE-13", "premigration", "The migration's statements linted against the live table sizes: no table "
                                        "rewrite, full scan under lock, destructive statement or missing "
                                        "lock_timeout that [lint] does not allow"),
    Criterion("PRE-14", "premigration", "The app's answers to the configured read requests recorded on the legacy "
                                        "schema, per login, as PHI-free digests per record and field"),
    Criterion("BAK-01", "backup", "The dump exists and is not empty"),
    Criterion("BAK-02", "backup", "The dump is readable by pg_restore"),
    Criterion("BAK-03", "backup", "Restored into a scratch database, the dump holds exactly the live data at "
                                  "backup time (by content)"),
    Criterion("BAK-04", "backup", "The dump's sha256 and size are recorded and still match"),
    Criterion("BAK-05", "backup", "The dump is readable by its owner only"),
    Criterion("POST-01", "postmigration", "Every new table with its columns and types; no leftover columns; no "
                                          "table but these and what the deploy declares ([deploy] app_tables)"),
    Criterion("POST-02", "postmigration", "organization_id is NOT NULL, with no NULLs"),
    Criterion("POST-03", "postmigration", "Every foreign key points at the right table with the right ON DELETE; "
                                          "no orphans"),
    Criterion("POST-04", "postmigration", "An index covers every foreign-key column"),
    Criterion("POST-05", "postmigration", "Sequences owned by their column and ahead of max(id)"),
    Criterion("POST-06", "postmigration", "The app is healthy with useHipaaSchema true"),
    Criterion("POST-07", "postmigration", "Login works for existing users"),
    Criterion("POST-08", "postmigration", "Protected routes answer 401 without a token and 200 with one"),
    Criterion("POST-09", "postmigration", "Every endpoint answers with the documented shape; counts agree with "
                                          "the database"),
    Criterion("POST-10", "postmigration", "p95 latency within budget: per endpoint against the legacy baseline "
                                          "(or the fixed budget without one); error rate not higher"),
    Criterion("POST-11", "postmigration", "No error lines in the application log since the deploy"),
    Criterion("POST-12", "postmigration", "PHI reads write audit rows"),
    Criterion("POST-13", "postmigration", "Every *_encrypted value is well-formed, decrypts with the key and is "
                                          "not itself ciphertext"),
    Criterion("POST-14", "postmigration", "No two encrypted values share an IV"),
    Criterion("POST-15", "postmigration", "No plaintext-looking PHI (emails, phones, SSNs, dates) in encrypted "
                                          "columns"),
    Criterion("POST-16", "postmigration", "Search hashes equal the hash of the decrypted value"),
    Criterion("POST-17", "postmigration", "One active primary business owner per organization; no duplicate "
                                          "memberships"),
    Criterion("POST-18", "postmigration", "The app's own role has exactly its configured privileges on every new "
                                          "table and sequence, and on the deploy's own tables; none that could "
                                          "rewrite an append-only table"),
    Criterion("POST-19", "postmigration", "The app gives the same answers as before: every recorded record and "
                                          "field equal on the new schema (the checks' own writes left out)"),
    Criterion("POST-20", "postmigration", "The app's debug routes do not answer without a token (401, 403 or 404; "
                                          "a 2xx is open, a 5xx exists and runs for anyone)"),
    Criterion("POST-21", "postmigration", "Every configured route answers 2xx with the user's token (the endpoints, "
                                          "the routes returning the user, [api] routes)"),
    Criterion("INT-01", "integrity", "Exact counts per table, soft-deleted rows included, and per therapist"),
    Criterion("INT-02", "integrity", "Every legacy row maps to exactly one new row; no new row lacks a source"),
    Criterion("INT-03", "integrity", "Every non-PHI column equal after the mapping"),
    Criterion("INT-04", "integrity", "Every PHI value equal after decryption on both sides"),
    Criterion("INT-05", "integrity", "Relationships preserved: a session's patient and therapist, a plan's "
                                     "patient, each row's organization its therapist's practice"),
    Criterion("RB-01", "rollback", "After a rollback the legacy schema is back exactly"),
    Criterion("RB-02", "rollback", "After a rollback every legacy table's data equals the state at backup time"),
    Criterion("RB-03", "rollback", "After a rollback the app is healthy on the legacy schema"),
    Criterion("RB-04", "rollback", "After a SQL rollback the rows it carried back (written since the migration) are "
                                   "v1 ciphertext that decrypts with the key, none in the clear"),
)}

@dataclass(frozen=True)
class ChecklistLine:
    """One line of the checklist's own "Success Criteria" or "Migration fails if" lists, word for word, with
    what proves it: the criteria (and so the tests) behind it, and the run's own phases where a phase is the
    proof (the deploy starts the app; the go-live's smoke test is the users' access)."""

    text: str
    criteria: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()


# HIPAA_PRODUCTION_MIGRATION_CHECKLIST.md, "Migration is successful when:"
SUCCESS_LINES: tuple[ChecklistLine, ...] = (
    ChecklistLine("All data migrated (organizations, patients, sessions)",
                  ("INT-01", "INT-02", "INT-03", "INT-04", "POST-01", "POST-02"), ("migration",)),
    ChecklistLine("Data integrity verified (counts match)", ("INT-01", "INT-05", "POST-03", "POST-17")),
    ChecklistLine("Application starts successfully", ("POST-06",), ("deploy",)),
    ChecklistLine("New API endpoints respond", ("POST-09", "POST-21")),
    ChecklistLine("User authentication works", ("POST-07", "POST-08", "POST-20")),
    ChecklistLine("PHI encryption working", ("POST-12", "POST-13", "POST-14", "POST-15", "POST-16")),
    ChecklistLine("No application errors in logs", ("POST-11",)),
    ChecklistLine("Response times acceptable", ("POST-10",)),
    ChecklistLine("Users can access application", ("POST-07",), ("golive",)),
    ChecklistLine("Critical functionality works", ("POST-09", "POST-16", "POST-18", "POST-19")),
)
# The same checklist, "Migration fails if:"; downtime is judged from the run's timeline.
FAILURE_LINES: tuple[ChecklistLine, ...] = (
    ChecklistLine("Data loss detected", ("INT-01", "INT-02", "INT-03", "INT-04", "BAK-03")),
    ChecklistLine("Application won't start", ("POST-06",), ("deploy",)),
    ChecklistLine("Critical endpoints broken", ("POST-08", "POST-09", "POST-21")),
    ChecklistLine("Cannot rollback successfully", ("PRE-08", "RB-01", "RB-02", "RB-03", "RB-04"),
                  ("restore", "rollback")),
    ChecklistLine("Downtime exceeds 3 hours"),
    ChecklistLine("Users cannot access application", ("POST-07",), ("golive",)),
    ChecklistLine("Critical functionality broken", ("POST-09", "POST-13", "POST-16", "POST-19")),
)
DOWNTIME_LINE = "Downtime exceeds 3 hours"
# The failure lines and the criteria whose failure means them (the suites' results JSON carries this).
FAILURE_CRITERIA: dict[str, tuple[str, ...]] = {line.text: line.criteria for line in FAILURE_LINES if line.criteria}
# Criteria only a rollback runs: on a run that never rolled back they were not needed.
ROLLBACK_ONLY = tuple(cid for cid, c in CRITERIA.items() if c.phase == "rollback")

# A criterion nothing checked: every test of it skipped. Never "passed"; red in a cut-over unless the description
# says why it does not apply ([[not_applicable]]: then NOT_APPLICABLE, with the reason).
NOT_CHECKED = Outcome.NOT_CHECKED
NOT_APPLICABLE = Outcome.NOT_APPLICABLE
PARTLY_CHECKED = Outcome.PARTLY_CHECKED


def criterion_result(outcomes: set[str], waived: bool, not_applicable: bool) -> str:
    """The one rule for a criterion's result from its tests' outcomes (pytest's passed, failed, skipped): failed
    when any failed; not checked when all skipped (not applicable when the description says so); partly checked
    when some skipped beside passes (never a bare "passed": part of it was not checked); else passed, or waived
    when it passed only because waivers matched."""
    if Outcome.FAILED in outcomes:
        return Outcome.FAILED
    if not outcomes or outcomes == {Outcome.SKIPPED}:
        return NOT_APPLICABLE if not_applicable else NOT_CHECKED
    if Outcome.SKIPPED in outcomes:
        return NOT_APPLICABLE if not_applicable else PARTLY_CHECKED
    return Outcome.WAIVED if waived else Outcome.PASSED


def unchecked_line(entry: dict) -> str:
    """One line for the terminal and the gate's detail: the criterion, its result, why."""
    why = "; ".join(entry["skipped"]) or "its tests skipped"
    if entry["result"] == NOT_APPLICABLE:
        return (f"{entry['criterion']} not applicable: {entry['reason']} (decided by {entry['decided_by']}; "
                f"skipped: {why})")
    return f"{entry['criterion']} {entry['result']}: {why}"
