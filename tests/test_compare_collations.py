"""A comparison compares every row whatever the two databases' collations: text keys with mixed case, accents and
punctuation, the legacy side in a database with the server's default collation (C.UTF-8) and the new side in one
whose default is ICU en-US (which orders `lc-000001` before `LC-000001`, and `Ärztelabor-7` among the a's). Each
check says how much it read on each side and matched; a shortfall is red, and nothing compared says so."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from migration_gate.checks import integrity
from migration_gate.config import TableMap
from migration_gate.core.phi import PhiCodec
from migration_gate.core.result import Result
from migration_gate.report import signoff
from sandbox.synthetic import SANDBOX_KEY

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CODEC = PhiCodec(SANDBOX_KEY)
LAB = TableMap(new="lab_results", legacy="lab", key="code", columns={"note": "note"}, phi={"result": "result"},
               hashes={})
TRICKY = ["LC-000001", "lc-000001", "Ärztelabor-7", "arztelabor-8", "a_b", "a-b", "a b", "ab", "AB", "Ab", "a.b",
          "é", "e", "E", "z", "Z", "-z", "_a", "Zürich", "zurich", "Øre", "ö", "o-1", "O_2", "ß", "ss"]
KEYS = st.lists(st.one_of(st.sampled_from(TRICKY),
                          st.text(alphabet="aAbBzZäÄöÖéÉßø-_. 0123456789", min_size=1, max_size=8)),
                min_size=3, max_size=40, unique=True)


@pytest.fixture(scope="module")
def sides(pg) -> tuple[psycopg.Connection, psycopg.Connection]:
    """The legacy database with the server's default collation, the new one with ICU en-US as its default."""
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        if admin.execute("SELECT count(*) FROM pg_collation WHERE collprovider = 'i'").fetchone()[0] == 0:
            pytest.skip("this PostgreSQL has no ICU")
        admin.execute("CREATE DATABASE collate_legacy")
        admin.execute("CREATE DATABASE collate_new TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                      "ENCODING 'UTF8'")
    with psycopg.connect(pg.dsn("collate_legacy"), autocommit=True) as old, \
            psycopg.connect(pg.dsn("collate_new"), autocommit=True) as new:
        order = "SELECT array_agg(k ORDER BY k) FROM unnest(ARRAY['LC-000001', 'lc-000001', 'Ärztelabor-7', 'b']) k"
        assert old.execute(order).fetchone() != new.execute(order).fetchone()  # the two orders disagree
        yield old, new


def _fill(old: psycopg.Connection, new: psycopg.Connection, rows: dict[str, str]) -> None:
    """The legacy table and the migrated one (re-encrypted: new IVs) with these keys and plaintexts."""
    for conn, table in ((old, LAB.legacy), (new, LAB.new)):
        name = sql.Identifier(table)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        conn.execute(sql.SQL("CREATE TABLE {} (code text PRIMARY KEY, note text, result text)").format(name))
        with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(name)) as copy:
            for key, plain in rows.items():
                copy.write_row((key, f"note {len(plain)}", CODEC.encrypt(plain)))


def _compared(result: Result, n: int) -> None:
    assert result.compared == {"legacy": n, "new": n, "matched": n, "unit": "rows"}, result


@SETTINGS
@given(keys=KEYS, data=st.data())
def test_every_row_is_compared_and_a_swap_between_text_keys_is_red(sides, keys, data):
    old, new = sides
    rows = {k: f"result {i}" for i, k in enumerate(keys)}
    _fill(old, new, rows)
    first, second = data.draw(st.lists(st.sampled_from(keys), min_size=2, max_size=2, unique=True))
    new.execute("UPDATE lab_results SET result = CASE code WHEN %s THEN %s ELSE %s END WHERE code IN (%s, %s)",
                (first, CODEC.encrypt(rows[second]), CODEC.encrypt(rows[first]), first, second))
    swapped = integrity.phi_equal(old, new, LAB, CODEC)
    assert "lab_results.result: 2 values differ from the legacy value after decryption" in "\n".join(swapped.problems)
    _compared(swapped, len(keys))
    for result in (integrity.rows_correspond(old, new, LAB), integrity.columns_equal(old, new, LAB)):
        assert result.ok, result.problems
        _compared(result, len(keys))


def test_rows_the_comparison_did_not_reach_are_red_with_how_many(sides):
    old, new = sides
    _fill(old, new, {f"LC-{i:06d}": f"r{i}" for i in range(1, 443)})
    new.execute("UPDATE lab_results SET code = lower(code) WHERE code <> 'LC-000442'")  # keys the merge cannot meet
    result = integrity.phi_equal(old, new, LAB, CODEC)
    assert "lab_results: compared 1 of 442 rows (442 read on the legacy side, 442 on the new side)" in result.problems
    assert result.summary()["compared"] == {"legacy": 442, "new": 442, "matched": 1, "unit": "rows"}
    assert "lab_results: compared 1 of 442 rows" in "\n".join(integrity.columns_equal(old, new, LAB).problems)


def test_a_comparison_of_nothing_says_so(sides):
    old, new = sides
    _fill(old, new, {})
    for result in (integrity.phi_equal(old, new, LAB, CODEC), integrity.rows_correspond(old, new, LAB)):
        assert "lab_results: compared nothing (no rows on either side)" in result.notes
        assert result.compared == {"legacy": 0, "new": 0, "matched": 0, "unit": "rows"}
    _fill(old, new, {"LC-000001": "a"})
    new.execute("DELETE FROM lab_results")
    assert "lab_results: compared 0 of 1 rows" in "\n".join(integrity.phi_equal(old, new, LAB, CODEC).problems)


def test_a_partial_mapping_may_have_more_new_rows_but_never_fewer_compared(sides):
    old, new = sides
    _fill(old, new, {"LC-000001": "a", "lc-000001": "b", "Ärztelabor-7": "c"})
    new.execute("INSERT INTO lab_results VALUES ('Zürich', 'own row', NULL)")
    partial = dataclasses.replace(LAB, partial=True)
    assert integrity.phi_equal(old, new, partial, CODEC).ok
    assert integrity.phi_equal(old, new, partial, CODEC).compared == {"legacy": 3, "new": 4, "matched": 3,
                                                                      "unit": "rows"}
    assert "lab_results: compared 3 of 4 rows" in "\n".join(integrity.phi_equal(old, new, LAB, CODEC).problems)


def test_the_signoff_shows_what_each_comparison_read_and_matched():
    html = "".join(signoff._comparisons_section([
        {"phase": "integrity", "check": "lab -> lab_results: PHI equal after decryption", "problems": 1,
         "compared": {"legacy": 442, "new": 442, "matched": 1, "unit": "rows"}},
        {"phase": "integrity", "check": "x -> y: one new row per legacy row", "problems": 0, "checked": 3}]))
    assert "442 rows</td><td>442 rows</td><td class='bad'>1 of 442</td>" in html
    assert "x -&gt; y" not in html  # a check that compared no two sides is not listed
    empty = {"phase": "integrity", "check": "c", "problems": 0,
             "compared": {"legacy": 0, "new": 0, "matched": 0, "unit": "rows"}}
    assert "nothing compared (both sides empty)" in "".join(signoff._comparisons_section([empty]))
