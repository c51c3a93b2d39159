"""The app's own role against the new schema: exactly the privileges [app_role] gives it, on every table.

The app does not connect as the owner of the schema, so a table the migration creates without granting it is a
table the app cannot read or write (every request touching it fails with a permission error after go-live), and
a grant beyond the configuration widens what a stolen app credential can do: UPDATE, DELETE or TRUNCATE on an
append-only audit table lets it rewrite the audit trail. Read from one inspected Catalog (relacl, per table and
per sequence).
"""

from __future__ import annotations

import psycopg

from migration_gate.checks import catalog_of, missing
from migration_gate.config import APPEND_ONLY_FORBIDDEN, AppRole
from migration_gate.core.result import Result
from migration_gate.db.catalog import Catalog, quote

_CANNOT = {"SELECT": "read", "INSERT": "insert into", "UPDATE": "update", "DELETE": "delete from",
           "TRUNCATE": "truncate", "REFERENCES": "reference", "TRIGGER": "create triggers on"}


def app_privileges(source: psycopg.Connection | Catalog, app_role: AppRole, tables: list[str],
                   schema: str = "public", append_only: frozenset[str] = frozenset()) -> Result:
    """Each table grants the app's role exactly its configured privileges, each sequence a nextval default of
    the table draws from the configured sequence privileges; no UPDATE/DELETE/TRUNCATE on append-only tables,
    whatever the configuration says."""
    catalog = catalog_of(source, schema)
    role = app_role.name
    result = Result(f"privileges of the app's role {quote(role)}")
    for name in tables:
        if missing(result, catalog, schema, name):
            continue
        table = catalog.table(name, schema)
        where = quote(schema, name)
        want, have = set(app_role.table_privileges(name)), table.privileges(role)
        result.checked += 1
        for privilege in sorted(want - have):
            result.add(f"the app cannot {_CANNOT[privilege]} {where}: role {quote(role)} lacks {privilege}")
        for privilege in sorted(have - want):
            if name in append_only and privilege in APPEND_ONLY_FORBIDDEN:
                continue
            result.add(f"role {quote(role)} has {privilege} on {where}, which [app_role] does not give it")
        if name in append_only:
            for privilege in sorted((have | want) & set(APPEND_ONLY_FORBIDDEN)):
                result.add(f"{where} is append-only but role {quote(role)} "
                           f"{'has' if privilege in have else 'is configured with'} {privilege} on it "
                           "(the app could rewrite or erase the audit trail)")
        for column in sorted(table.columns.values(), key=lambda c: c.name):
            if not (column.default or "").startswith("nextval("):
                continue  # identity columns draw from their sequence without any privilege on it
            sequence = catalog.owned_sequence(schema, name, column.name)
            if sequence is None:
                continue  # the sequences check (POST-05) reports a default without an owned sequence
            result.checked += 1
            seq_have = sequence.privileges(role)
            for privilege in sorted(app_role.sequences - seq_have):
                result.add(f"the app cannot insert into {where}: role {quote(role)} lacks {privilege} on sequence "
                           f"{quote(sequence.schema, sequence.name)} (the default of {quote(column.name)})")
            for privilege in sorted(seq_have - app_role.sequences):
                result.add(f"role {quote(role)} has {privilege} on sequence {quote(sequence.schema, sequence.name)}, "
                           "which [app_role] does not give it")
    return result


def deploy_privileges(source: psycopg.Connection | Catalog, app_role: AppRole, app_tables: list[str],
                      schema: str = "public") -> Result:
    """The tables the app's deploy created ([deploy] app_tables, those that exist) grant the app's role exactly
    its [app_role] privileges, as the migration's own tables must; a declared table the deploy did not create is
    noted, and a deploy that created none says so."""
    catalog = catalog_of(source, schema)
    created = [name for name in app_tables if catalog.table(name, schema) is not None]
    result = app_privileges(catalog, app_role, created, schema)
    result.check = f"privileges of the app's role {quote(app_role.name)} on the deploy's own tables"
    absent = sorted(set(app_tables) - set(created))
    if not created:
        result.notes.append(f"the deploy created none of the {len(app_tables)} declared tables: nothing to check")
    elif absent:
        result.notes.append(f"{len(absent)} declared tables not created by this deploy: {', '.join(absent)}")
    return result
