"""PHI at rest: every stored value is v1 ciphertext that decrypts with the key, is not itself ciphertext,
has its own IV, and search hashes are hashes of the decrypted values.

Format checks run in SQL. Decryption streams each table once through a server-side cursor, in key order, all
of its encrypted columns together; only counts and row ids come back out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

import psycopg
from psycopg import sql

from migration_gate.catalog import Catalog
from migration_gate.checks import Result, catalog_of, first_ids, key_of, missing
from migration_gate.config import SearchHash
from migration_gate.phi import V1_PATTERN, CiphertextFormatError, DecryptionError, PhiCodec, is_blank, search_hash

BATCH = 2_000
# What PHI looks like in the clear: an email, a US phone number, an SSN, an ISO or US date.
PLAINTEXT_PATTERNS = {
    "an email": r"[^\s@:]+@[^\s@]+\.[a-z]{2,}",
    "a phone number": r"^\+?1?[\s.(-]*\d{3}[\s.)-]*\d{3}[\s.-]*\d{4}$",
    "an SSN": r"^\d{3}-\d{2}-\d{4}$",
    "a date": r"^(\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4})$",
}


def by_table(columns: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for table, column in columns:
        grouped[table].append(column)
    return dict(grouped)


def _ids(conn: psycopg.Connection, schema: str, table: str, condition: sql.Composable, key: str) -> list[int]:
    query = sql.SQL("SELECT {k} FROM {t} WHERE {cond} ORDER BY 1").format(
        k=sql.Identifier(key), t=sql.Identifier(schema, table), cond=condition)
    return [r[0] for r in conn.execute(query)]


def _present(result: Result, catalog: Catalog, schema: str, columns: Iterable[tuple[str, str]]
             ) -> dict[str, tuple[str, list[str]]]:
    """The configured columns the database has, by table with its key; the others are findings."""
    found = {}
    for table, cols in by_table(columns).items():
        if missing(result, catalog, schema, table):
            continue
        have = [c for c in cols if not missing(result, catalog, schema, table, [c])]
        with result.guard(table):
            found[table] = (key_of(catalog, schema, table), have)
    return found


def _scoped(condition: sql.Composable, scope: sql.Composable | None) -> sql.Composable:
    """A check's row condition narrowed to `scope` (e.g. the rows written since a mark: the watch's rounds)."""
    return condition if scope is None else sql.SQL("({}) AND ({})").format(condition, scope)


def well_formed(conn: psycopg.Connection, columns: Iterable[tuple[str, str]], schema: str = "public",
                scope: sql.Composable | None = None) -> Result:
    """Every non-empty value matches ^v1:<32 hex>:<32 hex>:(hex pairs)+$ (no plaintext, v2 or truncation).
    With `scope` (a row condition), only the rows it selects: a watch round checks what was written since the last."""
    result = Result("PHI values are v1 ciphertext")
    for table, (key, cols) in _present(result, catalog_of(conn, schema), schema, columns).items():
        if scope is not None and not conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {t} WHERE {s})").format(
                t=sql.Identifier(schema, table), s=scope)).fetchone()[0]:
            continue  # nothing in scope: one scan of the table instead of two per column
        for column in cols:
            c = sql.Identifier(column)
            with result.guard(table, column):
                malformed = sql.SQL("{c} IS NOT NULL AND {c} !~ '^\\s*$' AND {c} !~ {p}").format(
                    c=c, p=sql.Literal(V1_PATTERN))
                bad = _ids(conn, schema, table, _scoped(malformed, scope), key)
                result.checked += conn.execute(sql.SQL("SELECT count({c}) FROM {t} WHERE {s}").format(
                    c=c, t=sql.Identifier(schema, table), s=_scoped(sql.SQL("true"), scope))).fetchone()[0]
                if bad:
                    v2 = len(_ids(conn, schema, table, _scoped(sql.SQL("{c} LIKE 'v2:%'").format(c=c), scope), key))
                    kind = f", {v2} of them v2:" if v2 else ""
                    result.add(f"{table}.{column}: {len(bad)} values are not v1 ciphertext{kind} ({first_ids(bad)})")
    return result


def _stream(conn: psycopg.Connection, schema: str, table: str, columns: list[str], limit: int | None,
            key: str, scope: sql.Composable | None = None) -> Iterator[tuple]:
    query = sql.SQL("SELECT {k}, {cols} FROM {t} WHERE {s} ORDER BY {k}{limit}").format(
        k=sql.Identifier(key), cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        t=sql.Identifier(schema, table), s=_scoped(sql.SQL("true"), scope),
        limit=sql.SQL(" LIMIT {}").format(sql.Literal(limit)) if limit else sql.SQL(""))
    with conn.cursor(name=f"gate_{table}") as cur:
        cur.itersize = BATCH
        cur.execute(query)
        yield from cur


def decrypts(conn: psycopg.Connection, codec: PhiCodec, columns: Iterable[tuple[str, str]],
             sample: int | None = None, check: str = "PHI decrypts with the key", schema: str = "public",
             scope: sql.Composable | None = None) -> Result:
    """Every v1 value (or those of the first `sample` rows per table) decrypts, and its plaintext is not
    ciphertext again. Values that are not v1 at all are left to well_formed()."""
    result = Result(check)
    malformed = 0
    present = _present(result, catalog_of(conn, schema), schema, columns)
    with conn.transaction():
        for table, (key, cols) in present.items():
            if not cols:
                continue
            failures: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
            for row in _stream(conn, schema, table, cols, sample, key, scope):
                row_id = row[0]
                for column, value in zip(cols, row[1:], strict=True):
                    if is_blank(value):
                        continue
                    result.checked += 1
                    try:
                        plain = codec.decrypt(value)
                    except CiphertextFormatError:
                        malformed += 1  # well_formed() names these; here only the key is in question
                        continue
                    except DecryptionError:
                        failures[column]["do not decrypt with this key (wrong key or corrupted)"].append(row_id)
                        continue
                    if plain.startswith(("v1:", "v2:")):
                        failures[column]["decrypt to ciphertext again (double encryption)"].append(row_id)
            for column, kinds in failures.items():
                for kind, ids in kinds.items():
                    result.add(f"{table}.{column}: {len(ids)} values {kind} ({first_ids(ids)})")
    if malformed:
        result.notes.append(f"{malformed} values are not v1 ciphertext (see the format check)")
    return result


def unique_ivs(conn: psycopg.Connection, columns: Iterable[tuple[str, str]], schema: str = "public") -> Result:
    """No two stored values share an IV (GCM with a repeated IV leaks plaintext)."""
    result = Result("no two PHI values share an IV")
    present = _present(result, catalog_of(conn, schema), schema, columns)
    parts = [sql.SQL("SELECT {tn} AS tbl, {cn} AS col, {k}::text AS id, substr({c}, 4, 32) AS iv FROM {t} "
                     "WHERE {c} LIKE 'v1:%'").format(tn=sql.Literal(t), cn=sql.Literal(c), c=sql.Identifier(c),
                                                       k=sql.Identifier(key), t=sql.Identifier(schema, t))
             for t, (key, cols) in present.items() for c in cols]
    if not parts:
        return result
    query = sql.SQL("WITH v AS ({u}) SELECT iv, count(*), array_agg(tbl || '.' || col || ' id ' || id ORDER BY "
                    "tbl, col, id) FROM v GROUP BY iv HAVING count(*) > 1").format(u=sql.SQL(" UNION ALL ").join(parts))
    repeats = conn.execute(query).fetchall()
    result.checked = conn.execute(sql.SQL("WITH v AS ({u}) SELECT count(*) FROM v").format(
        u=sql.SQL(" UNION ALL ").join(parts))).fetchone()[0]
    if repeats:
        places = [p for _, _, where in repeats for p in where][:6]
        result.add(f"{len(repeats)} IVs are used by more than one value (e.g. {'; '.join(places)})")
    return result


def no_plaintext(conn: psycopg.Connection, columns: Iterable[tuple[str, str]], schema: str = "public") -> Result:
    """No encrypted column holds something that looks like PHI in the clear."""
    result = Result("no plaintext-looking PHI in encrypted columns", unit="columns")
    for table, (key, cols) in _present(result, catalog_of(conn, schema), schema, columns).items():
        for column in cols:
            c = sql.Identifier(column)
            for label, pattern in PLAINTEXT_PATTERNS.items():
                ids = _ids(conn, schema, table, sql.SQL("{c} ~* {p}").format(c=c, p=sql.Literal(pattern)), key)
                if ids:
                    result.add(f"{table}.{column}: {len(ids)} values look like {label} in the clear "
                               f"({first_ids(ids)})")
            result.checked += 1
    return result


def search_hashes(conn: psycopg.Connection, codec: PhiCodec, specs: Iterable[SearchHash],
                  schema: str = "public", scope: sql.Composable | None = None) -> Result:
    """Each hash equals sha256(lower(trim(decrypted source))); NULL exactly when the source is blank."""
    result = Result("search hashes are hashes of the decrypted values")
    catalog = catalog_of(conn, schema)
    grouped: dict[str, list[SearchHash]] = defaultdict(list)
    for spec in specs:
        if not missing(result, catalog, schema, spec.table, [spec.hash, spec.source]):
            grouped[spec.table].append(spec)
    with conn.transaction():
        for table, table_specs in grouped.items():
            cols = [c for s in table_specs for c in (s.hash, s.source)]
            wrong: dict[str, list[int]] = defaultdict(list)
            absent: dict[str, list[int]] = defaultdict(list)
            for row in _stream(conn, schema, table, cols, None, key_of(catalog, schema, table), scope):
                for i, spec in enumerate(table_specs):
                    stored, source = row[1 + 2 * i], row[2 + 2 * i]
                    try:
                        plain = source if spec.plaintext else codec.decrypt(source)
                    except (CiphertextFormatError, DecryptionError):
                        continue  # reported by the decryption check
                    expected = search_hash(plain)
                    result.checked += 1
                    if stored is None and expected is not None:
                        absent[spec.hash].append(row[0])
                    elif stored != expected:
                        wrong[spec.hash].append(row[0])
            for column, ids in absent.items():
                result.add(f"{table}.{column}: {len(ids)} hashes missing where the source has a value "
                           f"({first_ids(ids)})")
            for column, ids in wrong.items():
                result.add(f"{table}.{column}: {len(ids)} hashes differ from the hash of the decrypted value "
                           f"({first_ids(ids)})")
    return result
