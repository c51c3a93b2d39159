"""PHI checks at scale: one scan per table, decryption split by key range over processes (the same findings with one
worker or two, a failure in the last range found), the per-value parse exactly the v1 rule, and ciphertext proven
before the window not decrypted again, unless it changed (a write after the pre-checks, a re-encrypted value)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from migration_gate.checks import encryption
from migration_gate.config import load_config
from migration_gate.core.phi import PhiCodec, is_blank, is_v1
from migration_gate.db import migration
from migration_gate.scan import decryption, proven, ranges
from migration_gate.scan.decryption import Malformed, open_v1
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import MIGRATION

GATE = load_config()
CODEC = PhiCodec(SANDBOX_KEY)
WRONG = PhiCodec("22" * 32)
LEGACY_PHI = GATE.legacy_phi_columns()
NEW_PHI = GATE.new_encrypted_columns()
NOTES = "session_progress_notes_encrypted"
MAPPED = "session_clinical_notes_encrypted"  # from sessions_hipaa.notes_encrypted
SMALL_BUCKETS = 40  # keys per bucket here, so that 120 patients' sessions make several ranges


@pytest.fixture
def small_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encryption, "ROWS_PER_BUCKET", SMALL_BUCKETS)


def _do(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _last_id(dsn: str, table: str, column: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT max(id) FROM {table} WHERE {column} LIKE 'v1:%'").fetchone()[0]  # noqa: S608


def _corrupt(table: str, column: str, row_id: int) -> str:
    return (f"UPDATE {table} SET {column} = overlay({column} placing (CASE WHEN substr({column}, 40, 1) = 'a' "  # noqa: S608
            f"THEN 'b' ELSE 'a' END) from 40 for 1) WHERE id = {row_id}")


def test_one_worker_and_two_find_the_same_failures_including_one_in_the_last_range(migrated_db, small_buckets) -> None:
    last = _last_id(migrated_db, "clinical_sessions", NOTES)
    double = CODEC.encrypt(CODEC.encrypt("jane@example.com"))
    _do(migrated_db, _corrupt("clinical_sessions", NOTES, last),
        f"UPDATE clinical_sessions SET {NOTES} = '{double}' WHERE id = 3")  # noqa: S608
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        one = encryption.decrypts(conn, CODEC, NEW_PHI, workers=1)
        two = encryption.decrypts(conn, CODEC, NEW_PHI, workers=2)
    assert one.problems == two.problems and one.checked == two.checked
    assert f"clinical_sessions.{NOTES}: 1 values do not decrypt with this key (wrong key or corrupted) " \
           f"(first ids: {last})" in two.problems
    assert f"clinical_sessions.{NOTES}: 1 values decrypt to ciphertext again (double encryption) (first ids: 3)" \
        in two.problems
    assert any(re.search(r"\d+ key ranges over 2 process", n) for n in two.notes), two.notes
    assert int(re.search(r"(\d+) key ranges", two.notes[-1]).group(1)) > 2 * len({t for t, _ in NEW_PHI}) - 1


def test_first_ids_across_ranges_are_the_smallest_and_say_there_are_more(migrated_db, small_buckets) -> None:
    _do(migrated_db, f"UPDATE clinical_sessions SET {NOTES} = overlay({NOTES} placing '0000' from 40 for 4) "  # noqa: S608
                     f"WHERE {NOTES} LIKE 'v1:%' AND substr({NOTES}, 40, 4) <> '0000'")
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(f"SELECT id FROM clinical_sessions WHERE {NOTES} LIKE 'v1:%' "  # noqa: S608
                                          "ORDER BY id LIMIT 5")]
        result = encryption.decrypts(conn, CODEC, [("clinical_sessions", NOTES)], workers=2)
    assert f"(first ids: {', '.join(map(str, ids))}, ...)" in result.problems[0]


def test_search_hashes_are_the_same_with_one_worker_or_two(migrated_db, small_buckets) -> None:
    last = _last_id(migrated_db, "patients", "patient_contact_email_encrypted")
    _do(migrated_db, "UPDATE patients SET patient_contact_email_search_hash = md5('x') || md5('y') "
                     f"WHERE id IN (2, {last})")
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        one = encryption.search_hashes(conn, CODEC, GATE.search_hashes, workers=1)
        two = encryption.search_hashes(conn, CODEC, GATE.search_hashes, workers=2)
    assert one.problems == two.problems and one.checked == two.checked
    assert f"patients.patient_contact_email_search_hash: 2 hashes differ from the hash of the decrypted value " \
           f"(first ids: 2, {last})" in two.problems


V1 = "v1:" + "ab" * 16 + ":" + "cd" * 16 + ":"


@pytest.mark.parametrize("stored", [
    V1, V1 + "e", V1 + "EF", V1 + "ef\n", V1 + "e f0", V1 + " ef", V1 + "ef:00", "v1:" + "AB" * 16 + ":" + "cd" * 16
    + ":ef", "v1:" + "ab" * 15 + "a b:" + "cd" * 16 + ":ef", "v2:" + "ab" * 16 + ":" + "cd" * 16 + ":ef",
    "V1:" + "ab" * 16 + ":" + "cd" * 16 + ":ef", "v1:" + "ab" * 17 + ":" + "cd" * 15 + ":ef", "jane@example.com",
    "v1:" + "ab" * 16 + ":" + "cd" * 16 + ":\u0661\u0662", " " + V1 + "ef"])
def test_the_lean_parse_refuses_exactly_what_the_format_rule_refuses(stored: str) -> None:
    assert not is_v1(stored)
    with pytest.raises(Malformed):
        open_v1(CODEC.aead(), stored)


@given(st.text(alphabet="v1:0123456789abcdefABCDEF \n", min_size=70, max_size=80))
def test_the_lean_parse_agrees_with_the_regex_on_near_misses(text: str) -> None:
    try:
        open_v1(CODEC.aead(), text)
        parsed = True
    except Malformed:
        parsed = False
    except Exception:  # noqa: BLE001 - well-formed, but not made with this key
        parsed = True
    assert parsed == is_v1(text)


@given(st.text(min_size=1).filter(lambda s: not is_blank(s)))
def test_the_lean_parse_decrypts_what_the_codec_decrypts(plaintext: str) -> None:
    assert open_v1(CODEC.aead(), CODEC.encrypt(plaintext)).decode("utf-8") == plaintext


def test_a_change_between_two_format_checks_is_seen(migrated_db) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        assert encryption.well_formed(conn, NEW_PHI).ok
        assert encryption.no_plaintext(conn, NEW_PHI).ok  # the same scan, reused
        _do(migrated_db, "UPDATE patients SET patient_contact_email_encrypted = 'jane@example.com' WHERE id = 4")
        assert "patients.patient_contact_email_encrypted: 1 values are not v1 ciphertext (first ids: 4)" in \
            encryption.well_formed(conn, NEW_PHI).problems
        assert "patients.patient_contact_email_encrypted: 1 values look like an email in the clear (first ids: 4)" \
            in encryption.no_plaintext(conn, NEW_PHI).problems


def _split(result: encryption.Result) -> tuple[int, int]:
    note = next(n for n in result.notes if "proven by digest" in n)
    found = re.match(r"(\d+) values proven by digest .*?, (\d+) decrypted", note)
    return int(found.group(1)), int(found.group(2))


def test_phi_proven_before_the_window_is_not_decrypted_again_unless_it_changed(legacy_db, tmp_path: Path,
                                                                              small_buckets) -> None:
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        assert encryption.decrypts(conn, CODEC, LEGACY_PHI, record_to=tmp_path, workers=2).ok
    record = (tmp_path / "phi" / "proven.json").read_text()
    assert "v1:" not in record and SANDBOX_KEY not in record and json.loads(record)["tables"]
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    proof = proven.load(tmp_path, GATE, CODEC)
    assert proof.columns, proof.note
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        everything = encryption.decrypts(conn, CODEC, NEW_PHI)
        untouched = encryption.decrypts(conn, CODEC, NEW_PHI, proof=proof, workers=2)
    assert untouched.ok and untouched.checked == everything.checked
    by_digest, decrypted = _split(untouched)
    mapped = {(t, c) for t, c in NEW_PHI if proof.get(t, c)}
    assert by_digest > 0 and by_digest + decrypted == everything.checked
    with psycopg.connect(legacy_db) as conn:  # what is left to decrypt: the columns no legacy column maps to
        unmapped = sum(conn.execute(f"SELECT count(*) FROM {t} WHERE {c} LIKE 'v1:%'").fetchone()[0]  # noqa: S608
                       for t, c in NEW_PHI if (t, c) not in mapped)
    assert decrypted == unmapped

    with psycopg.connect(legacy_db, autocommit=True) as conn:  # the format checks skip the proven buckets too
        formats = encryption.well_formed(conn, NEW_PHI, proof=proof)
        assert formats.ok and formats.notes[0].startswith(f"{by_digest} values proven before the window")
        assert encryption.no_plaintext(conn, NEW_PHI, proof=proof).ok
        _do(legacy_db, f"UPDATE clinical_sessions SET {MAPPED} = 'v2' || substr({MAPPED}, 3) WHERE id = 3",  # noqa: S608
            f"UPDATE clinical_sessions SET {MAPPED} = 'jane@example.com' WHERE id = 4")  # noqa: S608
        assert encryption.well_formed(conn, NEW_PHI, proof=proof).problems == [
            f"clinical_sessions.{MAPPED}: 2 values are not v1 ciphertext, 1 of them v2: (first ids: 3, 4)"]
        assert encryption.no_plaintext(conn, NEW_PHI, proof=proof).problems == [
            f"clinical_sessions.{MAPPED}: 1 values look like an email in the clear (first ids: 4)"]
        assert "2 values are not v1 ciphertext (see the format check)" in \
            encryption.decrypts(conn, CODEC, NEW_PHI, proof=proof).notes  # its changed bucket was read again
    _do(legacy_db, f"UPDATE clinical_sessions SET {MAPPED} = '{CODEC.encrypt('x')}' WHERE id IN (3, 4)")  # noqa: S608

    # a value re-encrypted with another key after the pre-checks: its bucket differs, is decrypted, and is red
    assert proof.get("clinical_sessions", MAPPED).legacy == "sessions_hipaa.notes_encrypted"
    last = _last_id(legacy_db, "clinical_sessions", MAPPED)
    _do(legacy_db, f"UPDATE clinical_sessions SET {MAPPED} = '{WRONG.encrypt('a later note')}' WHERE id = {last}")  # noqa: S608
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        red = encryption.decrypts(conn, CODEC, NEW_PHI, proof=proof, workers=2)
    assert f"clinical_sessions.{MAPPED}: 1 values do not decrypt with this key (wrong key or corrupted) " \
           f"(first ids: {last})" in red.problems
    assert _split(red)[1] > decrypted

    # a record made with another key proves nothing
    assert not proven.load(tmp_path, GATE, WRONG).columns
    assert "another key" in proven.load(tmp_path, GATE, WRONG).note


def test_a_legacy_write_after_the_pre_checks_is_decrypted_after_the_migration(legacy_db, tmp_path: Path,
                                                                             small_buckets) -> None:
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        assert encryption.decrypts(conn, CODEC, LEGACY_PHI, record_to=tmp_path).ok
    double = CODEC.encrypt(CODEC.encrypt("a note"))
    _do(legacy_db, f"UPDATE sessions_hipaa SET notes_encrypted = '{double}' WHERE id = 7")  # noqa: S608
    migration.run_file(legacy_db, MIGRATION, SANDBOX_KEY)
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        result = encryption.decrypts(conn, CODEC, NEW_PHI, proof=proven.load(tmp_path, GATE, CODEC))
    assert result.problems == [f"clinical_sessions.{MAPPED}: 1 values decrypt to ciphertext again (double "
                               "encryption) (first ids: 7)"]


def test_a_failed_bucket_is_not_recorded_as_proven(legacy_db, tmp_path: Path, small_buckets) -> None:
    _do(legacy_db, _corrupt("sessions_hipaa", "notes_encrypted", 5))
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        assert not encryption.decrypts(conn, CODEC, LEGACY_PHI, record_to=tmp_path).ok
    buckets = json.loads((tmp_path / "phi" / "proven.json").read_text())["tables"]["sessions_hipaa"]
    assert "0" not in buckets["columns"]["notes_encrypted"] and "1" in buckets["columns"]["notes_encrypted"]


def test_small_tables_are_read_in_process_unless_more_workers_are_asked_for(migrated_db,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool costs more to start than a small table takes to read; an explicit request or GATE_WORKERS wins."""
    monkeypatch.delenv("GATE_WORKERS", raising=False)
    with psycopg.connect(migrated_db) as conn:
        assert ranges.workers_for(conn, "public", ["patients", "clinical_sessions"]) == 1
        assert ranges.workers_for(conn, "public", ["patients"], requested=2) == 2
        monkeypatch.setenv("GATE_WORKERS", "2")
        assert ranges.workers_for(conn, "public", ["patients"]) == 2
        monkeypatch.delenv("GATE_WORKERS")
        monkeypatch.setattr(ranges, "PARALLEL_FROM_BYTES", 0)
        assert ranges.workers_for(conn, "public", ["patients"]) == ranges.worker_count()


def test_workers_come_from_gate_workers_or_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATE_WORKERS", "3")
    assert ranges.worker_count() == 3 and ranges.worker_count(1) == 1
    monkeypatch.setenv("GATE_WORKERS", "many")
    with pytest.raises(ranges.WorkersError, match="positive integer"):
        ranges.worker_count()
    monkeypatch.delenv("GATE_WORKERS")
    assert ranges.worker_count() >= 1


def test_buckets_cover_every_key_once() -> None:
    spans = ranges.Buckets(low=10, width=7, count=4).ranges()
    assert [str(s) for s in spans] == ["[, 17)", "[17, 24)", "[24, 31)", "[31, )"]
    assert ranges.Buckets().ranges() == [ranges.KeyRange()]


@pytest.mark.parametrize("clear, label", [("jane@example.com", "an email"), ("(555) 123-4567", "a phone number"),
                                          ("123-45-6789", "an SSN"), ("1984-02-29", "a date"), ("2/29/84", "a date")])
def test_every_plaintext_pattern_is_found_in_the_one_scan(migrated_db, clear: str, label: str) -> None:
    _do(migrated_db, f"UPDATE patients SET patient_dob_encrypted = '{clear}' WHERE id IN (5, 9)")  # noqa: S608
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        found = encryption.no_plaintext(conn, NEW_PHI)
    assert found.problems == [f"patients.patient_dob_encrypted: 2 values look like {label} in the clear "
                              "(first ids: 5, 9)"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_range_that_cannot_be_read_is_a_finding_naming_its_table(migrated_db, small_buckets, workers: int) -> None:
    _do(migrated_db, "ALTER TABLE patients ALTER COLUMN patient_dob_encrypted TYPE bytea "
                     "USING convert_to(patient_dob_encrypted, 'UTF8')")
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        found = encryption.decrypts(conn, CODEC, NEW_PHI, workers=workers)
    assert [p for p in found.problems if p.startswith("patients:")] == [
        "patients: could not be checked: TypeError (a bytes-like object is required, not '…')"]
    assert not any(p.startswith("clinical_sessions") for p in found.problems)  # the other tables were read


def test_with_a_text_key_the_whole_table_is_one_bucket_and_a_changed_value_is_decrypted(new_db) -> None:
    dsn = new_db()
    _do(dsn, "CREATE TABLE notes (code text PRIMARY KEY, note text)")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(30):
            conn.execute("INSERT INTO notes VALUES (%s, %s)", (f"N-{i:03d}", CODEC.encrypt(f"note {i}")))
        digests = decryption.ciphertext_digests(conn, "public", "notes", "code", ["note"], ranges.Buckets())
        proof = proven.Proven({("notes", "note"): proven.ProvenColumn("legacy.note", ranges.Buckets(),
                                                                     {0: digests[("note", 0)]}, {0: 30})})
        same = encryption.decrypts(conn, CODEC, [("notes", "note")], proof=proof, workers=2)
        assert same.ok and "30 values proven by digest" in same.notes[-1] and same.notes[-1].endswith("0 decrypted")
        conn.execute("UPDATE notes SET note = %s WHERE code = 'N-017'", (WRONG.encrypt("later"),))
        changed = encryption.decrypts(conn, CODEC, [("notes", "note")], proof=proof, workers=2)
    assert changed.problems == ["notes.note: 1 values do not decrypt with this key (wrong key or corrupted) "
                                "(first ids: N-017)"]
    assert changed.notes[-1].startswith("0 values proven by digest")


def test_chunks_are_sized_by_time_and_capped_by_values_in_memory() -> None:
    wide = ranges.ChunkSizer(budget=0.5, first=100, columns=10)
    wide.done(wide.start())  # a chunk that took no time: as big as the memory cap allows, 100,000 values
    assert wide.size == ranges.MOST_VALUES // 10
    slow = ranges.ChunkSizer(budget=0.5, first=1_000)
    slow.start()
    time.sleep(0.1)  # 1,000 rows in 0.1 s: about 5,000 rows fill half a second
    slow.done(1_000)
    assert 2_000 <= slow.size <= 5_000
