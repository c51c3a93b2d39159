"""The compare engine on examples (keys of every sign and kind, composite keys, rendering settings) and on
generated tables of mixed value types."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from migration_gate.scan import compare as engine
from migration_gate.scan.compare import Side, bucket_digests, compare

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
VALUES = "t text, i int, n numeric, ts timestamptz"
COLUMNS = ("t", "i", "n", "ts")


@pytest.fixture(scope="module")
def db(pg) -> psycopg.Connection:
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE compare_examples")
    with psycopg.connect(pg.dsn("compare_examples"), autocommit=True) as conn:
        yield conn


def _table(conn: psycopg.Connection, name: str, columns: str, rows: list[tuple], schema: str = "public") -> None:
    table = sql.Identifier(schema, name)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(columns)))
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(table)) as copy:
        for row in rows:
            copy.write_row(row)


def _diff(conn: psycopg.Connection, key="id", columns=("v",), chunk: int = 7, other=None, **side):
    return compare(Side(conn, "a", key, list(columns), **side), Side(other or conn, "b", key, list(columns), **side),
                   chunk)


def _only(diff, **expected) -> bool:
    """True if the differences are exactly the expected ones (columns by name)."""
    found = {"missing": diff.missing, "extra": diff.extra, "duplicated": diff.duplicated,
             "unexplained": diff.unexplained, **{c: keys for c, keys in diff.columns.items()}}
    return {k: v for k, v in found.items() if v} == expected


def test_negative_keys_have_buckets_of_their_own(db):
    rows = [(k, f"v{k}") for k in range(-15, 16)]
    _table(db, "a", "id int, v text", rows)
    _table(db, "b", "id int, v text", rows[::-1])
    assert _diff(db).equal
    digests = bucket_digests(Side(db, "a", "id", ["v"]), 7)
    assert sorted(digests) == [-3, -2, -1, 0, 1, 2] and digests[-1][0] == 7 and digests[-3][0] == 1
    _table(db, "b", "id int, v text", [(k, "changed" if k == -3 else v) for k, v in rows if k != -15] + [(-16, "x")])
    assert _only(_diff(db), missing=[-15], extra=[-16], v=[-3])


def test_bigint_keys_at_the_edges(db):
    edges = [2**62, -(2**62), 2**63 - 8, -(2**63) + 8]
    keys = sorted({e + d for e in edges for d in range(-8, 8)} | {2**63 - 1, -(2**63)})
    rows = [(k, str(k)) for k in keys]
    _table(db, "a", "id bigint, v text", rows)
    _table(db, "b", "id bigint, v text", rows)
    assert _diff(db).equal
    changed = [(k, "x" if k == -(2**62) - 1 else v) for k, v in rows if k != 2**63 - 1]
    _table(db, "b", "id bigint, v text", changed)
    assert _only(_diff(db), missing=[2**63 - 1], v=[-(2**62) - 1])


def test_numeric_and_integer_keys_are_the_same_keys(db):
    _table(db, "a", "id numeric, v text", [(Decimal("-5.0"), "a"), (Decimal("2.50"), "b"), (Decimal(7), "c")])
    _table(db, "b", "id numeric, v text", [(-5, "a"), (Decimal("2.5"), "b"), (7, "c")])
    assert _diff(db).equal
    _table(db, "b", "id bigint, v text", [(-5, "a"), (7, "c")])
    assert _only(_diff(db), missing=[Decimal("2.50")])


@pytest.mark.parametrize("kind, keys", [
    ("text", ["", " ", "a", "A", "ä", 'quo"te', "com,ma", "(paren)", "back\\slash", "NULL", None]),
    ("uuid", [uuid.UUID(int=i * 2**120 + i) for i in range(12)] + [None]),
])
def test_text_and_uuid_keys(db, kind, keys):
    rows = [(k, str(i)) for i, k in enumerate(keys)]
    _table(db, "a", f"id {kind}, v text", rows)
    _table(db, "b", f"id {kind}, v text", random.Random(1).sample(rows, len(rows)))
    diff = _diff(db, chunk=2)
    assert diff.equal and diff.buckets_compared > 1
    extra = "zz" if kind == "text" else uuid.UUID(int=99)
    changed = [(k, "x" if k == keys[4] else v) for k, v in rows[1:]] + [(extra, "new")]
    _table(db, "b", f"id {kind}, v text", changed)
    assert _only(_diff(db, chunk=2), missing=[keys[0]], extra=[extra], v=[keys[4]])


def test_composite_keys(db):
    rows = [(org, n, f"{org}{n}") for org in ("north", "south", None) for n in (-2, 0, 3, None)]
    _table(db, "a", "org text, n int, v text", rows)
    _table(db, "b", "org text, n int, v text", rows[::-1])
    assert _diff(db, key=("org", "n"), chunk=3).equal
    changed = [(o, n, "x" if (o, n) == (None, 3) else v) for o, n, v in rows if (o, n) != ("south", None)]
    _table(db, "b", "org text, n int, v text", [*changed, ("west", 1, "w"), ("north", 0, "dup")])
    diff = _diff(db, key=["org", "n"], chunk=3)
    assert diff.missing == [("south", None)] and diff.extra == [("west", 1)] and diff.duplicated == [("north", 0)]
    assert (None, 3) in diff.columns["v"] and set(diff.columns["v"]) <= {(None, 3), ("north", 0)}
    with pytest.raises(ValueError, match="max_key"):
        _diff(db, key=("org", "n"), max_key=3)


def test_integer_against_text_key_compares_through_text(db):
    _table(db, "a", "id int, v text", [(k, str(k)) for k in range(-3, 4)])
    _table(db, "b", "id text, v text", [(str(k), str(k)) for k in range(-3, 4)])
    assert _diff(db, chunk=2).equal
    _table(db, "b", "id text, v text", [(str(k), "x" if k == -2 else str(k)) for k in range(-3, 3)] + [("07", "7")])
    assert _only(_diff(db, chunk=2), missing=["3"], extra=["07"], v=["-2"])


def test_duplicated_keys_found_even_when_both_sides_agree(db):
    rows = [(1, "a"), (2, "b"), (2, "b"), (-9, "c")]
    _table(db, "a", "id int, v text", rows)
    _table(db, "b", "id int, v text", rows[::-1])
    assert _only(_diff(db), duplicated=[2])


def test_digests_that_differ_with_no_row_to_show_are_red(db, monkeypatch):
    _table(db, "a", "id int, v text", [(-1, "a"), (20, "b")])
    _table(db, "b", "id int, v text", [(-1, "changed"), (20, "b")])
    monkeypatch.setattr(engine, "_row_hashes", lambda view, bucket: ({-1: ("same",)}, set()))
    diff = _diff(db)
    assert diff.equal is False and diff.unexplained == [-1] and not any(diff.columns.values())


def test_rendering_settings_never_make_equal_data_differ(db, pg):
    rows = [(k, datetime(2024, 3, 9, 23, 30, tzinfo=UTC) + timedelta(hours=k), date(2024, 3, 9 + k),
             timedelta(days=k, seconds=5), 0.1 * k + 1e-17, bytes([k + 2, 200]))
            for k in range(-2, 3)]
    columns = "id int, ts timestamptz, d date, span interval, f float8, raw bytea"
    _table(db, "a", columns, rows)
    _table(db, "b", columns, rows)
    with psycopg.connect(pg.dsn("compare_examples")) as other:  # not autocommit, inside a transaction
        db.execute("SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard'; SET extra_float_digits = 0; "
                   "SET bytea_output = 'escape'")
        other.execute("SET TimeZone = 'Asia/Tokyo'")
        try:
            texts = [c.execute("SELECT ROW(ts, d, span, f, raw)::text FROM a ORDER BY id").fetchall()
                     for c in (db, other)]
            assert texts[0] != texts[1]  # the settings matter
            assert _diff(db, columns=["ts", "d", "span", "f", "raw"], other=other).equal
            assert db.execute("SHOW DateStyle").fetchone()[0] == "SQL, DMY"  # nothing leaks to the caller
            assert other.execute("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo"
            assert other.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        finally:
            db.execute("RESET ALL")


def test_schema_qualified_tables(db):
    db.execute("CREATE SCHEMA IF NOT EXISTS \"old data\"")
    _table(db, "a", "id int, v text", [(1, "public")])
    _table(db, "b", "id int, v text", [(1, "public")])
    _table(db, "a", "id int, v text", [(1, "other")], schema="old data")
    right = Side(db, "b", "id", ["v"], None)  # positional, as callers build it
    assert compare(Side(db, "a", "id", ["v"], None), right).equal
    assert compare(Side(db, "a", "id", ["v"], None, "old data"), right).columns["v"] == [1]
    with pytest.raises(ValueError, match="no key column"):
        compare(Side(db, "a", "nope", ["v"]), right)


def test_max_key_bounds_both_sides(db):
    _table(db, "a", "id int, v text", [(-4, "a"), (1, "b")])
    _table(db, "b", "id int, v text", [(-4, "a"), (1, "b"), (2, "later")])
    assert _diff(db, max_key=1).equal and _diff(db).extra == [2]


# -- generated tables: mixed value types, integer keys of either sign, or text keys ---------------------------

TABLES = {"int": "id bigint", "text": "id text"}
texts = st.text(max_size=6).filter(lambda s: "\0" not in s)
KEYS = {"int": st.one_of(st.integers(-40, 40), st.integers(-(2**63), 2**63 - 1)), "text": texts}
values = st.tuples(
    st.one_of(st.none(), texts),
    st.one_of(st.none(), st.integers(-(2**31), 2**31 - 2)),
    st.one_of(st.none(), st.decimals(-10**12, 10**12, allow_nan=False, places=3)),
    st.one_of(st.none(), st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30),
                                      timezones=st.sampled_from([UTC, timezone(timedelta(hours=9))]))))


def _dataset(kind: str, min_size: int = 0):
    return st.lists(st.tuples(KEYS[kind], values).map(lambda r: (r[0], *r[1])), unique_by=lambda r: r[0],
                    min_size=min_size, max_size=20)


def _changed(row: tuple, column: int) -> tuple:
    """The row with one value changed so that it renders differently (NULL becomes empty or zero)."""
    value = row[column]
    if column == 4:
        new = datetime(2000, 1, 1, tzinfo=UTC) if value is None else value - timedelta(microseconds=1)
    elif column == 1:
        new = "" if value is None else value + "x"
    else:
        new = 0 if value is None else value + 1
    return (*row[:column], new, *row[column + 1:])


def _generated(conn: psycopg.Connection, kind: str, left: list[tuple], right: list[tuple]):
    _table(conn, "a", f"{TABLES[kind]}, {VALUES}", left)
    _table(conn, "b", f"{TABLES[kind]}, {VALUES}", right)
    return _diff(conn, columns=COLUMNS, chunk=3)


@SETTINGS
@given(st.sampled_from(sorted(TABLES)), st.data())
def test_generated_row_order_never_matters(db, kind, draw):
    data = draw.draw(_dataset(kind))
    assert _generated(db, kind, data, draw.draw(st.permutations(data))).equal


@SETTINGS
@given(st.sampled_from(sorted(TABLES)), st.data())
def test_generated_single_change_is_found_at_its_key(db, kind, draw):
    data = draw.draw(_dataset(kind, min_size=1))
    index = draw.draw(st.integers(0, len(data) - 1))
    column = draw.draw(st.integers(1, 4))
    changed = data[:index] + [_changed(data[index], column)] + data[index + 1:]
    assert _only(_generated(db, kind, data, changed), **{COLUMNS[column - 1]: [data[index][0]]})


@SETTINGS
@given(st.sampled_from(sorted(TABLES)), st.data())
def test_generated_single_missing_or_extra_row_is_found_at_its_key(db, kind, draw):
    data = draw.draw(_dataset(kind, min_size=1))
    index = draw.draw(st.integers(0, len(data) - 1))
    assert _only(_generated(db, kind, data, data[:index] + data[index + 1:]), missing=[data[index][0]])
    assert _only(_generated(db, kind, data[:index] + data[index + 1:], data), extra=[data[index][0]])


@pytest.mark.parametrize("parallel", [2, 3, 5])
def test_digests_split_by_key_range_over_sessions_equal_one_scan(db, parallel):
    rows = [(k, f"v{k}") for k in [*range(-40, -20), *range(0, 9), *range(300, 331)]]
    _table(db, "a", "id int, v text", rows)
    side = Side(db, "a", "id", [])
    cut = engine.plan(side, 7)
    hashes = {"rows": engine.columns_hash([]), "v": engine.columns_hash(["v"])}
    one = engine.digest_sets(side, cut, hashes)
    assert engine.digest_sets(side, cut, hashes, parallel=parallel) == one
    assert one["v"] == bucket_digests(Side(db, "a", "id", ["v"]), bucketing=cut)


def test_recorded_digests_stand_in_for_the_left_side_until_a_bucket_differs(db):
    rows = [(k, f"v{k}") for k in range(-9, 30)]
    _table(db, "a", "id int, v text", rows)
    _table(db, "b", "id int, v text", rows[::-1])
    left = Side(db, "a", "id", ["v"])
    cut = engine.plan(left, 7)
    recorded = bucket_digests(left, bucketing=cut)
    asked = []

    def restored() -> Side:
        asked.append(1)
        return left
    assert engine.compare_recorded(recorded, cut, Side(db, "b", "id", ["v"]), restored).equal and not asked
    db.execute("UPDATE b SET v = 'changed' WHERE id = 12")
    db.execute("DELETE FROM b WHERE id = -9")
    diff = engine.compare_recorded(recorded, cut, Side(db, "b", "id", ["v"]), restored)
    assert _only(diff, missing=[-9], v=[12]) and diff.buckets_drilled == 2 and asked


def test_recorded_digests_of_an_integer_key_do_not_cut_a_text_key(db):
    _table(db, "a", "id int, v text", [(1, "x")])
    _table(db, "b", "id text, v text", [("1", "x")])
    cut = engine.plan(Side(db, "a", "id", []), 7)
    with pytest.raises(engine.BucketingMismatch):
        engine.compare_recorded({}, cut, Side(db, "b", "id", ["v"]), lambda: Side(db, "a", "id", ["v"]))
