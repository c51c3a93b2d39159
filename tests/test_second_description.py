"""A second migration description, of our own and unlike the sandbox (tests/fixtures/clinic: schema "clinic",
text, UUID and identity keys, copied tables, an append-only table, no tenancy, no API), runs through the same
phase suites with no code change: green when the migration is right, red, naming tables and keys, when it is
broken. The suites run as a user runs them, in a child pytest against DATABASE_URL."""

from __future__ import annotations

import json
import random
import shutil
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from migration_gate import backup
from migration_gate.backup import digests as baseline_digests
from migration_gate.config import RehearsalConfig, load_config
from migration_gate.core.phi import PhiCodec
from migration_gate.db import migration, writes
from migration_gate.rehearsal.scratch import rehearse_on_copy
from migration_gate.run import forecast
from tests.conftest import ROOT, _create, gate_keys
from tests.support.suites import run_suite

CLINIC = ROOT / "tests" / "fixtures" / "clinic"
KEY = "3c" * 32  # not the sandbox's key: a suite that used the sandbox's would fail to decrypt
CONFIG = load_config(CLINIC / "migration.toml")
CODEC = PhiCodec(KEY)
MEMBERS = 30
# text keys that sort and hash differently: case, non-ASCII, a prefix of another key
CODES = [f"M-{n:04d}" for n in range(1, MEMBERS - 3)] + ["m-0001", "Ärzte-7", "M-00"]
NAMES = ["Oona Valdivia", "Teodor Brankovic", "Marisol Quenby", "Ilse Haverkamp", "Rafferty Ng"]


def _seed(dsn: str) -> list[str]:
    """The legacy clinic with synthetic PHI; returns the plaintexts that must never appear in any output."""
    rng = random.Random(7)
    secrets: list[str] = []
    with psycopg.connect(dsn) as conn:
        conn.execute((CLINIC / "legacy_schema.sql").read_text())
        for i, code in enumerate(CODES):
            name = f"{NAMES[i % len(NAMES)]} {code[-2:]}"
            born = (date(1950, 1, 1) + timedelta(days=rng.randrange(20000))).isoformat()
            secrets += [name, born]
            conn.execute("INSERT INTO clinic.members VALUES (%s, %s, %s, %s, %s)",
                         (code, name, CODEC.encrypt(born) if i % 5 else None,
                          datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=i), i % 7 == 0))
            for v in range(3):
                note = f"follow-up note {code} {v} {rng.randrange(10**6)}"
                secrets.append(note)
                conn.execute("INSERT INTO clinic.visits_v1 VALUES (%s, %s, %s, %s, %s)",
                             (uuid.UUID(int=rng.getrandbits(128)), code, CODEC.encrypt(note),
                              date(2025, 1, 1) + timedelta(days=i + v), round(rng.uniform(0, 900), 2)))
            conn.execute("INSERT INTO clinic.access_log (member_code, action) VALUES (%s, 'read'), (%s, 'update')",
                         (code, code))
    return secrets


@pytest.fixture(scope="module")
def clinic_template(pg) -> tuple[str, list[str]]:
    """A seeded legacy clinic database to clone; never changed."""
    return "tpl_clinic", _seed(_create(pg, "tpl_clinic"))


@pytest.fixture
def clinic(new_db, clinic_template) -> tuple[str, list[str]]:
    return new_db(clinic_template[0]), clinic_template[1]


def _env(dsn: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": dsn, "PHI_ENCRYPTION_KEY": KEY, "GATE_CONFIG": str(CLINIC / "migration.toml"), **extra}


def _phase(marker: str, env: dict[str, str], run_dir: Path, secrets: list[str]) -> tuple[int, dict, str]:
    """Run one phase suite; (exit code, criteria JSON, all output and reports) with no PHI anywhere in them."""
    done = run_suite("-m", marker, "-q", "-rfE", env=env, run_dir=run_dir)
    results = next(run_dir.glob(f"criteria-{'-'.join(marker.split())}.json"), None)
    criteria = json.loads(results.read_text()) if results else {}
    text = done.stdout + done.stderr + "".join(p.read_text() for p in run_dir.glob("*.*ml"))
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"{len(leaked)} PHI plaintexts in the output or reports of -m {marker!r}"
    return done.returncode, criteria, done.stdout[-3000:]


def _verdicts(criteria: dict) -> dict[str, str]:
    return {cid: c["result"] for cid, c in criteria.get("criteria", {}).items()}


def test_the_second_description_is_green_through_every_phase(clinic, tmp_path: Path) -> None:
    dsn, secrets = clinic
    cutover = tmp_path / "cutover"  # the one run folder, shared by the phases: PRE-05's proof lives there
    code, pre, out = _phase("premigration and not app", _env(dsn), cutover, secrets)
    assert code == 0, out
    assert {c: _verdicts(pre)[c] for c in ("PRE-04", "PRE-05", "PRE-06", "PRE-07", "PRE-08", "PRE-13")} == \
        dict.fromkeys(("PRE-04", "PRE-05", "PRE-06", "PRE-07", "PRE-08", "PRE-13"), "passed")
    # the lint (no [lint] here: notes only) names the copied-then-dropped legacy tables, their live sizes and the
    # time PRE-08's rehearsal took for each DROP; the tables the migration creates are no hazard
    linted = next(c for c in pre["checks"] if c["check"].startswith("the migration's locks and rewrites"))
    assert any(n.startswith(f"destructive: line 28: DROP TABLE clinic.visits_v1: its rows are gone under ACCESS "
                            f"EXCLUSIVE of clinic.visits_v1 ({3 * len(CODES)} rows, ") and "rehearsal took" in n
               for n in linted["notes"]), linted["notes"]
    assert not [n for n in linted["notes"] if "clinic.people" in n or "clinic.encounters" in n]

    # as the gate's backup
    dump = baseline_digests.record_backup(dsn, tmp_path / "backup", CONFIG, KEY, keys=gate_keys(KEY)).path
    env = _env(dsn, BACKUP_FILE=str(dump))
    code, _, out = _phase("backup", env, tmp_path / "bak", secrets)
    assert code == 0, out

    migration.run_file(dsn, CLINIC / "migrate.sql", KEY)
    with psycopg.connect(dsn) as conn:  # the app appends to the append-only table after the backup: expected
        conn.execute("INSERT INTO clinic.access_log (member_code, action) VALUES ('M-0001', 'read')")
    code, post, out = _phase("postmigration and not app", env, cutover, secrets)
    assert code == 0, out
    assert {"POST-01", "POST-03", "POST-04", "POST-05", "POST-13", "POST-14", "POST-15"} <= set(_verdicts(post))
    # text and UUID keys: each proven column is one bucket, the whole table; unchanged by the migration, it is
    # proven by digest instead of decrypted again
    decrypted = next(c for c in post["checks"] if c["check"] == "PHI decrypts with the key")
    assert any(n.startswith(f"{decrypted['checked']} values proven by digest") for n in decrypted["notes"]), decrypted
    code, integrity, out = _phase("integrity", env, tmp_path / "int", secrets)
    assert code == 0, out
    tests = [t for c in integrity["criteria"].values() for t in c["tests"]]
    for table in ("people", "encounters", "access_log"):  # one test per mapping of the description
        assert any(f"[{table}]" in t for t in tests), f"no integrity test ran for the {table} mapping"
    # no [tenancy] in this description: INT-05's organization test has nothing to check, and says so
    assert _verdicts(integrity) == dict.fromkeys(_verdicts(integrity), "passed") | {"INT-05": "partly checked"}
    assert integrity["not_checked"] == [{"criterion": "INT-05", "result": "partly checked", "skipped": [
        "the description has no [tenancy]: no organization to check rows against"]}]
    compared = [c for c in integrity["checks"] if c["check"].endswith((
        "one new row per legacy row", "non-PHI columns equal", "PHI equal after decryption"))]
    assert compared and all(any("digests recorded in the backup's snapshot" in n for n in c["notes"]) for c in compared)
    assert not [n for c in integrity["checks"] for n in c["notes"] if "restored backup" in n]

    with psycopg.connect(dsn) as conn:  # issue 10's business: the SQL rollback keeps it, the backup has not got it
        conn.execute("DELETE FROM clinic.access_log WHERE id > (SELECT min(id) + %s FROM clinic.access_log)",
                     (2 * len(CODES) - 1,))
    migration.run_file(dsn, CLINIC / "rollback.sql", KEY)
    code, rolled, out = _phase("rollback and not app", env, tmp_path / "rb", secrets)
    assert code == 0, out
    assert _verdicts(rolled) == {"RB-01": "passed", "RB-02": "passed", "RB-04": "passed"}


def test_the_second_description_rehearses_on_a_local_copy(clinic) -> None:
    """PRE-08 on a throwaway local cluster ([rehearsal] kind "local"): the clinic's schema, keys and grants
    restored there, the same checks green, the copy named."""
    dsn, _ = clinic
    result = rehearse_on_copy(dsn, replace(CONFIG, rehearsal=RehearsalConfig(kind="local")), KEY)
    assert result.ok, result.problems
    assert result.notes[0].startswith("rehearsed on local throwaway cluster (PostgreSQL "), result.notes


def _broken_migration(tmp_path: Path, old: str, new: str) -> Path:
    text = (CLINIC / "migrate.sql").read_text()
    assert old in text
    path = tmp_path / "migrate-broken.sql"
    path.write_text(text.replace(old, new))
    shutil.copy(CLINIC / "rollback.sql", tmp_path / "rollback.sql")
    return path


def test_a_migration_that_loses_rows_is_red_in_integrity(clinic, tmp_path: Path) -> None:
    dsn, secrets = clinic
    dump = baseline_digests.record_backup(dsn, tmp_path / "backup", CONFIG, KEY, keys=gate_keys(KEY)).path
    broken = _broken_migration(tmp_path, "FROM clinic.visits_v1;", "FROM clinic.visits_v1 WHERE fee >= 100;")
    migration.run_file(dsn, broken, KEY)
    code, criteria, out = _phase("integrity", _env(dsn, BACKUP_FILE=str(dump)), tmp_path / "int", secrets)
    assert code == 1
    assert _verdicts(criteria)["INT-01"] == "failed" and _verdicts(criteria)["INT-02"] == "failed"
    assert '"clinic"."visits_v1"' in out or "visits_v1 -> encounters" in out, out


def test_a_wrong_phi_value_is_red_naming_the_uuid_key(clinic, tmp_path: Path) -> None:
    dsn, secrets = clinic
    dump = baseline_digests.record_backup(dsn, tmp_path / "backup", CONFIG, KEY, keys=gate_keys(KEY)).path
    migration.run_file(dsn, CLINIC / "migrate.sql", KEY)
    with psycopg.connect(dsn) as conn:
        (victim,) = conn.execute("SELECT id FROM clinic.encounters ORDER BY id LIMIT 1").fetchone()
        conn.execute("UPDATE clinic.encounters SET notes_encrypted = %s WHERE id = %s",
                     (CODEC.encrypt("a different note"), victim))
    code, criteria, out = _phase("integrity", _env(dsn, BACKUP_FILE=str(dump)), tmp_path / "int", secrets)
    assert code == 1 and _verdicts(criteria)["INT-04"] == "failed"
    assert str(victim) in out, out
    assert "a different note" not in out


def test_schema_drift_on_either_side_is_red(clinic, tmp_path: Path) -> None:
    """A legacy column the description does not know, then a new-side foreign key without its index."""
    dsn, secrets = clinic
    with psycopg.connect(dsn) as conn:
        conn.execute("ALTER TABLE clinic.members ADD COLUMN nickname text")
    code, criteria, out = _phase("premigration and not app", _env(dsn), tmp_path / "pre", secrets)
    assert code == 1 and _verdicts(criteria)["PRE-06"] == "failed"
    assert '"clinic"."members"' in out and "nickname" in out, out
    with psycopg.connect(dsn) as conn:
        conn.execute("ALTER TABLE clinic.members DROP COLUMN nickname")
    migration.run_file(dsn, CLINIC / "migrate.sql", KEY)
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP INDEX clinic.encounters_person_code_idx")
    code, criteria, out = _phase("postmigration and not app", _env(dsn), tmp_path / "post", secrets)
    assert code == 1 and _verdicts(criteria)["POST-04"] == "failed" and _verdicts(criteria)["POST-01"] == "failed"
    assert "person_code" in out, out


def test_rows_written_since_the_migration_are_counted_and_carried_back_by_text_and_uuid_key(clinic,
                                                                                          tmp_path: Path) -> None:
    """Issue 10 item 3 on the second description: the writes since the migration counted per table (exact for
    the identity-keyed log, inserted-or-updated for text and UUID keys), carried back by its rollback SQL and
    proven by key, RB-02 green against the backup but those rows; a row the rollback changed that nobody wrote
    since is red, by key."""
    dsn, secrets = clinic
    dump = backup.take_backup(dsn, tmp_path / "backup", keys=gate_keys(KEY)).path
    migration.run_file(dsn, CLINIC / "migrate.sql", KEY)
    mark = writes.take_mark(dsn)
    visit = uuid.uuid4()
    with psycopg.connect(dsn) as conn:  # after go-live: a new member and visit, an edited and a deleted visit
        conn.execute("INSERT INTO clinic.people (code, full_name, joined_at) VALUES ('N-0001', %s, now())",
                     ("Wren Abernathy",))
        conn.execute("INSERT INTO clinic.encounters (id, person_code, notes_encrypted, visited_on) "
                     "VALUES (%s, 'N-0001', %s, current_date)", (visit, CODEC.encrypt("first visit notes")))
        edited, deleted = conn.execute("SELECT id FROM clinic.encounters ORDER BY id LIMIT 2").fetchall()
        conn.execute("UPDATE clinic.encounters SET fee = fee + 1 WHERE id = %s", edited)
        conn.execute("DELETE FROM clinic.encounters WHERE id = %s", deleted)
        conn.execute("INSERT INTO clinic.access_log (member_code, action) VALUES ('N-0001', 'read')")
    since = writes.count_since(dsn, mark)
    assert since.of("clinic.people").line() == "clinic.people: 1 inserted or updated"
    assert since.of("clinic.encounters").line() == "clinic.encounters: 2 inserted or updated"
    assert since.of("clinic.access_log").line() == "clinic.access_log: 1 inserted, 0 updated, 0 deleted"
    gate = load_config(CLINIC / "migration.toml")
    carried = writes.what_to_carry(dsn, gate, mark, since)
    assert set(carried.table("visits_v1").written) == {str(visit), str(edited[0])}

    migration.run_file(dsn, CLINIC / "rollback.sql", KEY)
    assert writes.verify_carried(dsn, carried) == []
    env = _env(dsn, BACKUP_FILE=str(dump), GATE_CARRIED_ROWS=str(carried.save(tmp_path / "carried.json")))
    code, rolled, out = _phase("rollback and not app", env, tmp_path / "rb", secrets + ["Wren Abernathy"])
    assert code == 0, out
    assert _verdicts(rolled) == {"RB-01": "passed", "RB-02": "passed", "RB-04": "passed"}

    with psycopg.connect(dsn) as conn:  # a change nobody made since the migration: the rollback's own doing
        untouched = conn.execute("SELECT visit_uid FROM clinic.visits_v1 WHERE visit_uid <> ALL(%s) "
                                 "ORDER BY visit_uid LIMIT 1", ([visit, edited[0]],)).fetchone()[0]
        conn.execute("UPDATE clinic.visits_v1 SET fee = fee + 5 WHERE visit_uid = %s", (untouched,))
    code, rolled, out = _phase("rollback and not app", env, tmp_path / "rb-red", secrets + ["Wren Abernathy"])
    assert code == 1 and _verdicts(rolled)["RB-02"] == "failed"
    assert "clinic.visits_v1: 1 rows differ from backup time but were not written since the migration" in out
    assert str(untouched) in out


def test_a_denied_hazard_is_red_at_pre13_through_the_suite(clinic, tmp_path: Path) -> None:
    """[lint] denying destructive statements: the pre-checks go red at PRE-13 alone, naming the line, the table,
    its live rows and the time PRE-08's rehearsal (run before it in the same suite) measured for the DROP."""
    dsn, secrets = clinic
    described = tmp_path / "clinic"
    shutil.copytree(CLINIC, described)
    config = described / "migration.toml"
    config.write_text(config.read_text() + '\n[lint]\ndeny = ["destructive"]\n'
                      'allow = [{line = 29, kind = "destructive", reason = "members live on in people"}]\n')
    code, pre, out = _phase("premigration and not app", _env(dsn, GATE_CONFIG=str(config)), tmp_path / "pre",
                            secrets)
    assert code == 1 and {c for c, v in _verdicts(pre).items() if v != "passed"} == {"PRE-13"}, out
    assert (f"destructive: line 28: DROP TABLE clinic.visits_v1: its rows are gone under ACCESS EXCLUSIVE of "
            f"clinic.visits_v1 ({3 * len(CODES)} rows, ") in out and "rehearsal took" in out, out
    assert "the migration's locks and rewrites against live table sizes: 1 problem(s)" in out, out  # 29 allowed


def test_the_forecast_measures_the_description_s_own_tables(clinic) -> None:
    """The forecast scales by the description's legacy tables in its own schema, whatever their names."""
    dsn, _ = clinic
    sizes = forecast.measure(dsn, CONFIG)
    assert set(sizes["tables"]) == set(CONFIG.legacy_schema)
    assert sizes["tables"]["members"]["rows"] == len(CODES) and all(t["bytes"] > 0 for t in sizes["tables"].values())
    assert sizes["database_bytes"] >= sum(t["bytes"] for t in sizes["tables"].values())
