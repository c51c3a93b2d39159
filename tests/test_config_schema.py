"""The description's declared sections: one-line errors from their declarations, and the JSON Schema editors read."""

from __future__ import annotations

import json

import pytest

from migration_gate.config import ConfigError, load_backup, load_lint, load_notify, load_performance, load_precheck
from migration_gate.config.load import SECTIONS
from migration_gate.config.schema import json_schema, rendered
from migration_gate.core.paths import ROOT


def test_the_committed_json_schema_is_current() -> None:
    """docs/migration.schema.json is what the declarations give (regenerate: python -m migration_gate.config.schema
    > docs/migration.schema.json)."""
    assert (ROOT / "docs" / "migration.schema.json").read_text() == rendered()


def test_the_schema_names_every_section_and_refuses_others() -> None:
    schema = json_schema()
    assert set(SECTIONS) <= set(schema["properties"]) and schema["additionalProperties"] is False
    assert schema["$defs"]["PerformanceConfig"]["properties"]["workers"] == {
        "type": "integer", "minimum": 1, "default": 1, "description": "a number of at least 1"}
    json.dumps(schema)


@pytest.mark.parametrize(("load", "spec", "line"), [
    (load_backup, {"identty": "x"}, "m.toml [backup]: unknown key identty"),
    (load_backup, {"jobs": True}, "m.toml [backup]: jobs must be a whole number from 0 to 64"),
    (load_performance, {"requests": "many"}, "m.toml [performance]: requests must be a number of at least 1"),
    (load_precheck, {"statement_timeout": 600}, "m.toml [precheck]: statement_timeout must be a duration above zero"),
    (load_notify, {"timeout_seconds": -1}, "m.toml [notify]: timeout_seconds must be a positive number"),
    (load_lint, {"allow": [{"line": 1, "kind": "destructive", "reason": "r", "by": "x"}]},
     "m.toml [lint]: unknown key allow[0].by"),
])
def test_a_declared_section_s_problem_is_one_line_naming_section_and_key(load, spec: dict, line: str) -> None:
    section = line.split("[")[1].split("]")[0]
    with pytest.raises(ConfigError) as caught:
        load(spec, f"m.toml [{section}]")
    assert str(caught.value).startswith(line) and "\n" not in str(caught.value)
