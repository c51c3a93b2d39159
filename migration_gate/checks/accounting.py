"""Every column accounted for: the description maps each legacy column (or says why it is dropped) and gives
each new column a source or a rule that a check verifies, so no column escapes the integrity phase unnoticed."""

from __future__ import annotations

from migration_gate.config import GateConfig
from migration_gate.core.result import Result
from migration_gate.db.catalog import quote


def columns_accounted_for(gate: GateConfig) -> Result:
    result = Result("every column accounted for in the migration description")
    s = gate.schema
    fed = {m.new for m in gate.tables}
    sources = {m.legacy for m in gate.tables}
    for table in sorted(set(gate.legacy_schema) - sources - set(gate.dropped_tables)):
        result.add(f"legacy table {quote(s, table)} is neither mapped ([tables]) nor dropped ([dropped_tables])")
    for table in sorted(set(gate.new_schema) - fed - set(gate.new_tables)):
        result.add(f"new table {quote(s, table)} has no source ([tables]) and no rule ([new_tables])")
    for legacy in sorted(sources):
        maps = [m for m in gate.tables if m.legacy == legacy]
        covered = set().union(*(m.mapped_legacy() | set(m.dropped) for m in maps))
        for column in sorted(set(gate.legacy_schema.get(legacy, {})) - covered):
            result.add(f"legacy column {quote(s, legacy, column)} is neither mapped nor dropped")
        result.checked += len(gate.legacy_schema.get(legacy, {}))
    tenancy_columns = {(r.table, r.column) for r in gate.tenancy.rows} if gate.tenancy else set()
    hashes = {(h.table, h.hash) for h in gate.search_hashes}
    for new in sorted(fed):
        maps = [m for m in gate.tables if m.new == new]
        rules = {c: r for m in maps for c, r in m.new_columns.items()}
        covered = set().union(*(m.mapped_new() for m in maps)) | set(rules)
        for column in sorted(set(gate.new_schema.get(new, {})) - covered):
            result.add(f"new column {quote(s, new, column)} has neither a source nor a rule (new_columns)")
        for column, rule in sorted(rules.items()):
            if rule.kind == "tenancy" and (new, column) not in tenancy_columns:
                result.add(f"new column {quote(s, new, column)}: rule 'tenancy' but [tenancy] rows do not name it")
            if rule.kind == "search_hash" and (new, column) not in hashes:
                result.add(f"new column {quote(s, new, column)}: rule 'search_hash' but [[search_hashes]] does not "
                           "name it")
            if rule.kind == "derived" and not rule.reason:
                result.add(f"new column {quote(s, new, column)}: rule 'derived' needs the how ('derived: ...')")
        result.checked += len(gate.new_schema.get(new, {}))
    return result


