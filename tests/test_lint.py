"""PRE-13, the migration lint: each statement classified by PostgreSQL's own parser (pglast), against the target's
live table sizes and the time the rehearsal measured for it; red only for what [lint] denies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from migration_gate.checks import lint
from migration_gate.config import ConfigError, LintAllow, LintConfig, load_lint
from migration_gate.db import migration
from migration_gate.rehearsal.scratch import rehearse_on_copy
from sandbox.synthetic import SANDBOX_KEY
from tests.conftest import GATE, _create

BIG_ROWS = 300_000


def _kinds(text: str, runner_lock_timeout: str = "10s") -> list[tuple[int, str, str]]:
    found = lint.classify(migration.parse(text), "public", runner_lock_timeout).findings
    return [(f.line, f.kind, f.table) for f in found]


@pytest.mark.parametrize(("statement", "kind"), [
    ("ALTER TABLE t ALTER COLUMN a TYPE bigint;", "table-rewrite"),
    ("ALTER TABLE t ADD COLUMN at timestamptz DEFAULT clock_timestamp();", "table-rewrite"),
    ("ALTER TABLE t ADD COLUMN u uuid DEFAULT gen_random_uuid();", "table-rewrite"),
    ("ALTER TABLE t ADD COLUMN n bigserial;", "table-rewrite"),
    ("ALTER TABLE t SET LOGGED;", "table-rewrite"),
    ("VACUUM FULL t;", "table-rewrite"),
    ("CLUSTER t USING t_pkey;", "table-rewrite"),
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0);", "full-scan-under-lock"),
    ("ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES other (id);", "full-scan-under-lock"),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE (a);", "full-scan-under-lock"),
    ("ALTER TABLE t ALTER COLUMN a SET NOT NULL;", "full-scan-under-lock"),
    ("CREATE INDEX i ON t (a);", "full-scan-under-lock"),
    ("DROP TABLE t;", "destructive"),
    ("ALTER TABLE t DROP COLUMN a;", "destructive"),
    ("TRUNCATE t;", "destructive"),
    ("DELETE FROM t;", "destructive"),
    ("UPDATE t SET a = 1;", "destructive"),
])
def test_each_hazard_is_classified_with_its_table(statement: str, kind: str) -> None:
    assert _kinds(statement) == [(1, kind, "public.t")]


def test_a_dropped_schema_is_destructive_unless_the_file_created_it() -> None:
    assert _kinds("DROP SCHEMA old CASCADE;") == [(1, "destructive", "old.*")]
    assert _kinds("CREATE SCHEMA scratch;\nCREATE TABLE scratch.t (id int);\nCREATE INDEX i ON scratch.t (id);\n"
                  "DROP SCHEMA scratch CASCADE;") == []


@pytest.mark.parametrize("statement", [
    "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID;",
    "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES other (id) NOT VALID;",
    "ALTER TABLE t VALIDATE CONSTRAINT c;",
    "ALTER TABLE t ADD CONSTRAINT u UNIQUE USING INDEX t_a_idx;",
    "CREATE INDEX CONCURRENTLY i ON t (a);",
    "ALTER TABLE t ADD COLUMN created timestamptz DEFAULT now();",
    "ALTER TABLE t ADD COLUMN tags jsonb DEFAULT '[]'::jsonb;",
    "DELETE FROM t WHERE id = 1;",
    "UPDATE t SET a = 1 WHERE a IS NULL;",
    "VACUUM t;",
])
def test_the_safe_forms_are_no_hazard(statement: str) -> None:
    assert _kinds(statement) == []


def test_a_table_created_in_the_file_is_new_and_empty_but_a_renamed_one_is_followed_to_the_target() -> None:
    text = """CREATE TABLE fresh (id int, a int);
CREATE INDEX fresh_a ON fresh (a);
ALTER TABLE fresh ALTER COLUMN a TYPE bigint, ALTER COLUMN a SET NOT NULL;
ALTER TABLE fresh RENAME TO fresher;
DROP TABLE fresher;
ALTER TABLE old_name RENAME TO new_name;
ALTER TABLE new_name RENAME COLUMN a TO b;
ALTER TABLE new_name ALTER COLUMN b TYPE bigint;
"""
    found = lint.classify(migration.parse(text), "app", "10s").findings
    assert [(f.line, f.kind, f.table, f.live, f.type_change) for f in found] == [
        (8, "table-rewrite", "app.new_name", "app.old_name", ("a", "bigint"))]


def test_lines_are_the_statements_own_in_the_file() -> None:
    text = """-- header comment
CREATE TABLE a (id int);

-- a comment before it
/* and another */
ALTER TABLE b
    ALTER COLUMN x TYPE text;  CREATE INDEX bi ON b (y);
-- migration-gate: data-step sandbox.data_steps:encrypt_organization_ein
ALTER TABLE s.c ADD CONSTRAINT k CHECK (z > 0);
"""
    assert _kinds(text) == [(6, "table-rewrite", "public.b"), (7, "full-scan-under-lock", "public.b"),
                            (9, "full-scan-under-lock", "s.c")]


def test_a_missing_lock_timeout_counts_the_gates_own_and_the_files() -> None:
    """The runner sets [migration] lock_timeout for every statement: only with that at 0, and none set by the
    file before its first lock-taking statement, is there no timeout."""
    text = "CREATE TABLE n (id int);\nINSERT INTO n VALUES (1);\nALTER TABLE t ADD COLUMN a int;\n"
    assert _kinds(text, runner_lock_timeout="0") == [(3, "no-lock-timeout", "public.t")]
    linted = lint.classify(migration.parse(text), "public", "10s")
    assert linted.findings == [] and "lock_timeout 10s from the gate's runner" in linted.notes[0]
    assert _kinds("SET LOCAL lock_timeout = '3s';\n" + text, runner_lock_timeout="0") == []
    assert _kinds("SET lock_timeout = 0;\n" + text)[0] == (4, "no-lock-timeout", "public.t")
    later = "ALTER TABLE t ADD COLUMN a int;\nSET LOCAL lock_timeout = 0;\nINSERT INTO t VALUES (1);\nDROP INDEX i;\n" \
            "ALTER TABLE u ADD COLUMN b int;\nALTER TABLE u ADD COLUMN c int;\n"
    assert _kinds(later) == [(5, "no-lock-timeout", "public.u")]


def test_statements_the_parser_cannot_lint_are_named_as_notes() -> None:
    text = "DO $$ BEGIN ALTER TABLE t ADD COLUMN a int; END $$;\nALTER TABLE t ALTR COLUMN;\n"
    notes = lint.classify(migration.parse(text)).notes
    assert notes[0] == "line 1: DO block: PL/pgSQL, not linted"
    assert notes[1].startswith("line 2: not linted, PostgreSQL's parser refused it")


def _finding(kind: str = "table-rewrite", line: int = 3, rows: int = 150_000) -> lint.Finding:
    return lint.Finding(line, kind, "public.t", "ALTER TABLE public.t ALTER COLUMN a TYPE bigint",
                        "table rewrite (column type change)", "ACCESS EXCLUSIVE", line, live="public.t", rows=rows,
                        bytes=48 * 1024 * 1024, seconds=3.21)


def test_lint_config_decides_what_is_red() -> None:
    def judged(config: LintConfig, *findings: lint.Finding):
        result = lint.judge(findings, config, lint.Result("lint"))
        return result.problems, result.notes

    assert judged(LintConfig(), _finding()) == ([], [
        "table-rewrite: line 3: ALTER TABLE public.t ALTER COLUMN a TYPE bigint: table rewrite (column type "
        "change) under ACCESS EXCLUSIVE of public.t (150,000 rows, 48 MB), rehearsal took 3.2 s"])
    red, _ = judged(LintConfig(deny=("table-rewrite",)), _finding())
    assert red == [judged(LintConfig(), _finding())[1][0]]
    assert judged(LintConfig(deny=("table-rewrite",), min_rows=1_000_000), _finding())[0] == []
    assert len(judged(LintConfig(deny=("table-rewrite",), min_rows=1_000_000, min_bytes=1024), _finding())[0]) == 1
    allowed = LintConfig(deny=("table-rewrite",), allow=(LintAllow(3, "table-rewrite", "a quiet weekend"),))
    problems, notes = judged(allowed, _finding())
    assert problems == [] and notes[0].endswith("(allowed: a quiet weekend)")
    problems, _ = judged(allowed, _finding(line=4))
    assert problems[1].startswith("[lint] allow line 3 kind table-rewrite matches no finding")


@pytest.mark.parametrize("spec", [{"deny": ["rewrite"]}, {"min_rows": -1}, {"min_bytes": "1MB"},
                                  {"allow": [{"line": 3, "kind": "destructive"}]}, {"denied": []}])
def test_a_bad_lint_section_is_one_line(spec: dict) -> None:
    with pytest.raises(ConfigError) as caught:
        load_lint(spec, "migration.toml [lint]")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("migration.toml [lint]")


# ---------------------------------------------------------------------------------------------------------------
# On a real embedded database: a large table, the rehearsal's times, the live sizes.

@pytest.fixture(scope="module")
def big(pg) -> str:
    """A template with a large table (BIG_ROWS rows, analyzed) beside a never-analyzed small one."""
    dsn = _create(pg, "tpl_lint_big")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.readings (id integer PRIMARY KEY, n integer NOT NULL, note text)")
        conn.execute("INSERT INTO public.readings SELECT g, g %% 1000, 'reading ' || g FROM generate_series(1, %s) g",
                     (BIG_ROWS,))
        conn.execute("ANALYZE public.readings")
        conn.execute("CREATE TABLE public.tiny (id integer PRIMARY KEY)")
        conn.execute("INSERT INTO public.tiny SELECT generate_series(1, 7)")
    return "tpl_lint_big"


REWRITES = """-- a migration that rewrites a large table
CREATE TABLE public.fresh (id int);
CREATE INDEX fresh_id ON public.fresh (id);

ALTER TABLE public.readings
    ADD COLUMN read_at timestamptz DEFAULT clock_timestamp();
ALTER TABLE readings ALTER COLUMN n TYPE bigint;
ALTER TABLE readings ALTER COLUMN note TYPE varchar;
ALTER TABLE tiny ADD CONSTRAINT tiny_positive CHECK (id > 0);
"""


def test_a_rewrite_of_a_large_table_is_flagged_with_its_size_and_rehearsal_time(pg, big, tmp_path: Path) -> None:
    path = tmp_path / "002_rewrite.sql"
    path.write_text(REWRITES)
    copy = _create(pg, "lint_copy", big)  # as PRE-08: migrate a copy, keep each statement's time
    migration.save_times(migration.run_file(copy, path, SANDBOX_KEY), tmp_path)
    recorded = json.loads((tmp_path / migration.TIMES_FILE).read_text())["steps"]
    target = _create(pg, "lint_target", big)
    with psycopg.connect(target, autocommit=True) as conn:
        noted = lint.lint_migration(conn, path, LintConfig(), "public", "10s", tmp_path)
        denied = lint.lint_migration(conn, path, LintConfig(deny=("table-rewrite", "full-scan-under-lock"),
                                                            min_rows=10_000), "public", "10s", tmp_path)
        (size,) = conn.execute("SELECT pg_total_relation_size('readings')").fetchone()
    assert noted.ok and len(noted.notes) > 2
    assert len(denied.problems) == 2, denied.problems
    for problem, line, statement in zip(denied.problems, (5, 7), (
            "ALTER TABLE public.readings ADD COLUMN read_at DEFAULT clock_timestamp(): table rewrite (volatile "
            "default)", "ALTER TABLE public.readings ALTER COLUMN n TYPE bigint: table rewrite (column type "
                        "change)"), strict=True):
        seconds = recorded[str(line)]["seconds"]
        assert seconds > 0.02
        assert problem == (f"table-rewrite: line {line}: {statement} under ACCESS EXCLUSIVE of public.readings "
                           f"({BIG_ROWS:,} rows, {size / 1048576:,.0f} MB), rehearsal took "
                           f"{lint.seconds_text(seconds)} s"), problem
    assert problem in noted.notes[1]  # the same finding, a note when [lint] denies nothing
    # varchar without a length is binary-coercible from text: no rewrite; the small table's CHECK stays a note
    assert any(n.startswith("line 8: ALTER TABLE public.readings ALTER COLUMN note TYPE varchar: no rewrite")
               for n in denied.notes), denied.notes
    assert any("line 9: ALTER TABLE public.tiny ADD CONSTRAINT tiny_positive CHECK" in n and "(7 rows, " in n
               and "below [lint] min_rows" in n for n in denied.notes), denied.notes
    assert not [n for n in denied.notes if "fresh" in n]


def test_a_slow_statement_of_no_hazardous_form_is_named_with_its_time(tmp_path: Path) -> None:
    path = tmp_path / "003.sql"
    path.write_text("UPDATE t SET a = 1 WHERE b > 0;\nUPDATE t SET a = 2 WHERE b > 0;\n")
    times = tmp_path / migration.TIMES_FILE
    times.parent.mkdir()
    times.write_text(json.dumps({"sha256": migration.file_sha256(path), "steps": {
        "1": {"seconds": 4.25}, "2": {"seconds": 0.5}}}))
    result = lint.lint_migration(None, path, LintConfig(), "public", "10s", tmp_path)
    assert result.ok and result.notes == [
        "line 1: UPDATE t SET a = 1 WHERE b > 0;: no hazard by its form, rehearsal took 4.2 s"]
    path.write_text(path.read_text() + "-- edited since\n")  # times of another version of the file are not used
    assert lint.lint_migration(None, path, LintConfig(), "public", "10s", tmp_path).notes == [
        "no rehearsal times of this file in the run folder (PRE-08 records them)"]


def test_the_sandbox_migration_is_not_red_and_its_rehearsal_times_are_read(legacy_db: str, tmp_path: Path) -> None:
    """PRE-08 records each statement's time (rehearse_on_copy(record_to=...)); PRE-13 reads them. The renamed
    legacy tables are measured under their live names; the varchar-to-text changes are no rewrite."""
    assert rehearse_on_copy(legacy_db, GATE, SANDBOX_KEY, record_to=tmp_path).ok
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        result = lint.lint_gate(conn, GATE, tmp_path)
        (patients,) = conn.execute("SELECT count(*) FROM public.clients_hipaa").fetchone()
    assert result.ok, result.problems
    assert any(n.startswith("full-scan-under-lock: line 202: ALTER TABLE public.patients ALTER COLUMN "
                            "organization_id SET NOT NULL: full scan (SET NOT NULL) under ACCESS EXCLUSIVE of "
                            f"public.patients (public.clients_hipaa on the target: {patients:,} rows, ") and
               "rehearsal took " in n for n in result.notes), result.notes
    assert any("data step sandbox.data_steps:encrypt_organization_ein: Python, not linted, rehearsal took" in n
               for n in result.notes)
    assert not [n for n in result.notes if "table-rewrite" in n], "varchar to text rewrites nothing"
    assert not [n for n in result.notes if " of public.organizations " in n], "a table the file created is new"


def test_the_cli_names_the_red_lines(big, pg, tmp_path: Path) -> None:
    path = tmp_path / "002.sql"
    path.write_text(REWRITES)
    config = tmp_path / "migration.toml"
    config.write_text(GATE.path.read_text().replace("deny = []", 'deny = ["table-rewrite"]')
                      .replace('file = "sandbox/', f'file = "{GATE.path.parent}/sandbox/'))
    env = {**os.environ, "DATABASE_URL": _create(pg, "lint_cli", big)}
    done = subprocess.run([sys.executable, "-m", "migration_gate.cli.lint", str(path), "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stdout.count("RED  table-rewrite: line ") == 2 and "no rehearsal time recorded" in done.stdout
    assert "password" not in done.stdout + done.stderr


@pytest.mark.rehearsal
@pytest.mark.parametrize(("args", "env", "fragment"), [
    (["/nonexistent.sql"], {}, "lint: migration file /nonexistent.sql not found"),
    ([], {"GATE_CONFIG": "/nonexistent.toml"}, "lint: configuration file /nonexistent.toml not found"),
    ([], {"DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/x"}, "lint: cannot read sizes from DATABASE_URL"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], env: dict[str, str], fragment: str) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GATE_CONFIG")}
    done = subprocess.run(["bash", str(GATE.path.parent / "scripts" / "lint"), *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith(fragment) and done.stderr.count("\n") == 1, done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_a_default_calling_a_function_the_file_creates_is_a_rewrite_until_the_target_knows_it(pg, big,
                                                                                               tmp_path: Path) -> None:
    """The target has no such function yet: unknown is counted volatile, never "no rewrite"."""
    path = tmp_path / "003_own_function.sql"
    path.write_text("CREATE FUNCTION public.next_code() RETURNS text LANGUAGE sql\n"
                    "    AS $$ SELECT md5(random()::text) $$;\n"
                    "ALTER TABLE public.readings ADD COLUMN code text DEFAULT next_code();\n")
    target = _create(pg, "lint_own_function", big)
    with psycopg.connect(target, autocommit=True) as conn:
        found = lint.lint_migration(conn, path, LintConfig(deny=("table-rewrite",)), "public", "10s")
    assert [p for p in found.problems if p.startswith("table-rewrite: line 3: ALTER TABLE public.readings ADD "
                                                      "COLUMN code DEFAULT next_code()")], found.problems
