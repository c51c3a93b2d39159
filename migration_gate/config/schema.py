"""The migration description as a JSON Schema, for editors (taplo, VS Code's Even Better TOML: `#:schema
./docs/migration.schema.json` at the top of a description). The sections declared in model.py are described field
by field from their declarations; the open tables (a name of the team's own = a value: [hooks], [new_schema],
[new_catalog]...) by their values' shapes; [budgets] is named (so a misspelt section is flagged) and left open.

    python -m migration_gate.config.schema > docs/migration.schema.json   # tests/test_config_schema.py checks it
"""

from __future__ import annotations

import json

import msgspec

from migration_gate.config.load import SECTIONS
from migration_gate.config.model import (
    AnswersSection,
    ApiSection,
    AppRoleSection,
    BackupConfig,
    DeployConfig,
    EscalationStep,
    ForeignKeyEntry,
    LintConfig,
    LogsSection,
    MigrationSection,
    NotApplicable,
    NotifyConfig,
    PeopleItem,
    PerformanceConfig,
    PrecheckConfig,
    PreconditionsSection,
    RehearsalSection,
    SandboxSection,
    SearchHash,
    SecurityConfig,
    TableObjects,
    TableSection,
    TenancySection,
    Waiver,
    WatchSection,
)

# The sections whose checks are their declarations (load.py's _section); the others are checked by hand.
DECLARED = {"backup": BackupConfig, "precheck": PrecheckConfig, "performance": PerformanceConfig,
            "notify": NotifyConfig, "lint": LintConfig, "watch": WatchSection, "security": SecurityConfig,
            "deploy": DeployConfig, "logs": LogsSection, "rehearsal": RehearsalSection,
            "app_role": AppRoleSection, "migration": MigrationSection, "sandbox": SandboxSection,
            "answers": AnswersSection, "tenancy": TenancySection,
            "api": ApiSection, "preconditions": PreconditionsSection}

# The arrays of tables whose entries are declared (load.py's _entries).
ENTRIES = {"people": PeopleItem, "waivers": Waiver, "not_applicable": NotApplicable, "search_hashes": SearchHash,
           "escalation": EscalationStep}


def json_schema() -> dict:
    """The description's JSON Schema (draft 2020-12): every section, the declared ones in full."""
    models = [*DECLARED.values(), *ENTRIES.values(), TableSection, TableObjects, ForeignKeyEntry]
    refs, components = msgspec.json.schema_components(models, ref_template="#/$defs/{name}")
    for component in components.values():
        component["additionalProperties"] = False  # a misspelt key is refused, as load.py refuses it
    properties: dict[str, dict] = {name: {"type": "object"} for name in SECTIONS}
    properties.update(dict(zip(DECLARED, refs[:len(DECLARED)], strict=True)))
    for name, ref in zip(ENTRIES, refs[len(DECLARED):-3], strict=True):
        properties[name] = {"type": "array", "items": ref}
    table, objects, foreign_key = refs[-3:]
    properties["tables"] = {"type": "object", "additionalProperties": table}  # [tables.<name>]
    for side in ("new", "legacy"):  # <table> = its objects; <table> = [its foreign keys]
        properties[f"{side}_objects"] = {"type": "object", "additionalProperties": objects}
        properties[f"{side}_foreign_keys"] = {"type": "object",
                                              "additionalProperties": {"type": "array", "items": foreign_key}}
    # The open tables (a name of the user's own = a value), checked by hand in load.py: their values' shapes.
    strings = {"type": "object", "additionalProperties": {"type": "string"}}
    for name in ("new_tables", "dropped_tables", "new_catalog", "legacy_catalog"):
        properties[name] = strings
    for name in ("new_schema", "legacy_schema"):  # <table> = { <column> = "<type>..." }
        properties[name] = {"type": "object", "additionalProperties": strings}
    properties["hooks"] = {"type": "object", "additionalProperties": {"type": "string"}, "properties": {
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
        "pass_env": {"type": "array", "items": {"type": "string"}},
        "rehearsal_max_age_hours": {"type": "number", "exclusiveMinimum": 0}}}
    properties["extends"] = {"type": "string", "description": "another description this one is laid over"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "migration.toml",
            "description": "The migration description of hipaa-migration-gate", "type": "object",
            "properties": properties, "additionalProperties": False, "$defs": components}


def rendered() -> str:
    return json.dumps(json_schema(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(rendered(), end="")
