"""The rows a SQL rollback carries from the new tables back into the legacy ones (written since the migration, after
go-live: the users'): the PHI checks of the forward path (v1 format, no plaintext, decryption with the key) on
exactly those rows, by key. Before the rollback on the new tables (what carrying would bring back: the plan's
cost), after it on the legacy tables (RB-04). A corrupt value written through the new app after go-live would
otherwise go back into the old tables unchecked: RB-02 exempts the carried rows from its comparison with the
backup. Only tables, columns, counts and ids leave this module."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from migration_gate.checks import encryption
from migration_gate.core.phi import PhiCodec
from migration_gate.core.result import Result, first_ids
from migration_gate.db.writes import Carried, CarriedTable
from migration_gate.scan import decryption
from migration_gate.scan.ranges import KeyRange

CHECK = "the rows the rollback SQL carried back are v1 ciphertext that decrypts, none in the clear"


@dataclass
class CarriedPhi:
    """The checks' result on the carried rows and, per table, the rows that fail (first ids) and how many."""

    result: Result
    carried: int = 0  # rows carried (or to carry)
    failing: dict[str, int] = field(default_factory=dict)  # "schema.table" -> rows failing a check
    ids: dict[str, list] = field(default_factory=dict)  # "schema.table" -> their first ids

    @property
    def failing_rows(self) -> int:
        return sum(self.failing.values())

    def line(self) -> str:
        """One line for the plan: how many carried rows fail, where (table and first ids, never a value)."""
        if not self.carried and self.result.problems:
            return f"the rows to carry could not be read: {'; '.join(self.result.problems)}"
        if not self.carried:
            return "no rows to carry"
        if not self.failing_rows:
            return f"all {self.carried} pass the PHI checks (format, plaintext, decryption)"
        where = "; ".join(f"{table}: {n} ({first_ids(self.ids[table])})" for table, n in self.failing.items())
        return f"{self.failing_rows} of {self.carried} fail the PHI checks (format, plaintext, decryption): {where}"


def scope(key: str, ids: list) -> sql.Composable:
    """The row condition selecting exactly the carried keys (integer keys as integers, others compared as text)."""
    if all(isinstance(i, int) for i in ids):
        return sql.SQL("{} = ANY({}::bigint[])").format(sql.Identifier(key), sql.Literal(ids))
    return sql.SQL("{}::text = ANY({}::text[])").format(sql.Identifier(key), sql.Literal([str(i) for i in ids]))


def _side(table: CarriedTable, side: str) -> tuple[str, str]:
    return (table.legacy, table.legacy_key) if side == "legacy" else (table.new, table.key)


def check(conn: psycopg.Connection, codec: PhiCodec, carried: Carried | None, columns: list[tuple[str, str]],
          side: str = "legacy") -> CarriedPhi:
    """The format, plaintext and decryption checks on the carried rows only, on the `side` ("legacy": after the
    rollback SQL, "new": before it) with that side's encrypted `columns`; a failing row is a problem naming its
    table, column and id. No carried record (a restore, or no mark to count from) or nothing carried says so in a
    note: the checks read nothing, and RB-02 compares every row with the backup."""
    found = CarriedPhi(Result(CHECK))
    if carried is None:
        found.result.notes.append("no rows carried back (restored from the backup, or no record of carried rows): "
                                  "nothing to check here; RB-02 compares every row with the backup")
        return found
    schema = carried.schema
    for table in carried.tables:
        name, key = _side(table, side)
        cols = [c for t, c in columns if t == name]
        if not table.written or not cols:
            continue
        found.carried += len(table.written)
        where = scope(key, table.written)
        pairs = [(name, c) for c in cols]
        for one in (encryption.well_formed(conn, pairs, schema, scope=where),
                    encryption.no_plaintext(conn, pairs, schema, scope=where),
                    encryption.decrypts(conn, codec, pairs, schema=schema, scope=where)):
            found.result.problems += [f"{schema}.{p} (rows carried back)" for p in one.problems]
            found.result.checked += one.checked if one.unit == "values" else 0
        with found.result.guard(name):
            failing, more = _failing(conn, codec, schema, name, key, cols, where)
            if failing or more:
                found.failing[f"{schema}.{name}"] = len(failing) + more
                found.ids[f"{schema}.{name}"] = sorted(failing, key=str)
    if not found.carried:
        found.result.notes.append("no rows were carried back (nothing written since the migration): nothing to check")
    return found


def _failing(conn: psycopg.Connection, codec: PhiCodec, schema: str, table: str, key: str, cols: list[str],
             where: sql.Composable) -> tuple[set, int]:
    """The carried rows that fail: their ids where the format or a plaintext pattern names them (every one), the
    decryption's first ids, and how many more rows the decryption found beyond those it names (at most that many:
    a row failing in two columns counts twice there)."""
    bad = sql.SQL(" OR ").join(
        [encryption._bad(c) for c in cols]
        + [sql.SQL("{c} ~* {p}").format(c=sql.Identifier(c), p=sql.Literal(p))
           for c in cols for p in encryption.PLAINTEXT_PATTERNS.values()])
    ids = {row[0] for row in conn.execute(sql.SQL("SELECT {k} FROM {t} WHERE ({w}) AND ({b})").format(
        k=sql.Identifier(key), t=sql.Identifier(schema, table), w=where, b=bad))}
    outcome = decryption.decrypt_range(conn, codec.aead(), decryption.Task(schema, table, key, KeyRange(),
                                                                            columns=tuple(cols)), where)
    named = {i for kept in outcome.ids.values() for i in kept}
    beyond = sum(outcome.counts.values()) - sum(len(kept) for kept in outcome.ids.values())
    return ids | named, beyond
