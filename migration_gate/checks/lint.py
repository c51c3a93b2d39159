"""The migration's locks and rewrites, linted against the target's live table sizes (PRE-13).

Each SQL step of the migration file (migration.Step) is parsed by PostgreSQL's own parser (pglast, libpg_query)
and its AST classified by a few rules: a table rewrite (a column type change, a volatile default, VACUUM FULL,
CLUSTER...), a full scan under a lock that blocks writes (a constraint added without NOT VALID, SET NOT NULL,
an index built without CONCURRENTLY), a destructive statement (DROP TABLE/COLUMN/SCHEMA, TRUNCATE, DELETE or
UPDATE without WHERE), and a lock-taking statement that would run without any lock_timeout. Tables created
earlier in the file are new and empty: nothing on them is a hazard. A table or column renamed earlier in the
file is followed back to its name on the target, where its size (rows, bytes) is read; the time the rehearsal
measured for the statement comes from the run folder (migration.TIMES_FILE, written by PRE-08). `[lint]` in
migration.toml decides which findings are red; the rest are notes.

Messages name lines, statement labels built from the file (which holds no PHI), tables, sizes and times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
from pglast import ast, parse_sql
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType, ObjectType, VariableSetKind
from pglast.parser import ParseError
from pglast.stream import RawStream

from migration_gate.config import LINT_KINDS, GateConfig, LintConfig, duration_ms
from migration_gate.core.result import Result
from migration_gate.db import migration, sizes

REWRITE, SCAN, DESTRUCTIVE, NO_LOCK_TIMEOUT = LINT_KINDS
# Known volatile functions, for a default without a target to ask (with one, pg_proc.provolatile decides).
VOLATILE = frozenset({"random", "clock_timestamp", "timeofday", "gen_random_uuid", "uuid_generate_v1",
                      "uuid_generate_v1mc", "uuid_generate_v4", "nextval", "txid_current", "statement_timestamp"})
# Functions common in defaults that are not volatile: an added column with these is no rewrite (PostgreSQL 11+).
NOT_VOLATILE = frozenset({"now", "transaction_timestamp", "current_date", "lower", "upper", "btrim", "concat",
                          "md5", "jsonb_build_object", "json_build_object", "jsonb_build_array", "make_interval",
                          "to_jsonb", "array_fill"})
SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
COUNT_BELOW_BYTES = 64 * 1024 * 1024
# A statement of no hazardous form that took this long in the rehearsal is named too (a backfill UPDATE with a
# join rewrites every row it touches: no lock beyond ROW EXCLUSIVE, but the window's time)
SLOW_SECONDS = 1.0  # a never-analyzed table smaller than this is counted; larger ones estimated


@dataclass(frozen=True)
class Finding:
    """One hazard of one statement. `table` is named as the file names it at that point; `live` is the same
    table's name on the target today (before the file's renames), where its size is read."""

    line: int  # the statement's line in the migration file
    kind: str  # one of LINT_KINDS
    table: str  # schema-qualified
    label: str  # the statement, shortened ("ALTER TABLE public.t ALTER COLUMN c TYPE")
    what: str  # "table rewrite", "full scan", ...
    lock: str  # the lock the statement takes on the table
    step_line: int  # the migration.Step's line (the rehearsal's times are keyed by it)
    live: str = ""
    rows: int | None = None
    bytes: int | None = None
    seconds: float | None = None
    type_change: tuple[str, str] | None = None  # (live column, new type) of ALTER COLUMN TYPE: maybe no rewrite
    volatile: tuple[str, ...] = ()  # functions in an added column's default, asked of the target when connected
    sized: str = "no target to read its size from"  # why rows/bytes are None

    def size(self) -> str:
        if self.bytes is None:
            return f"size unknown: {self.sized}"
        megabytes = self.bytes / 1024 / 1024
        rows = f"{self.rows:,} rows" if self.rows is not None else "rows not counted (never analyzed, too large)"
        return f"{rows}, " + (f"{megabytes:,.0f} MB" if megabytes >= 10 else f"{megabytes:.1f} MB")

    def message(self) -> str:
        size = self.size() if self.live in ("", self.table) else f"{self.live} on the target: {self.size()}"
        took = (f"rehearsal took {seconds_text(self.seconds)} s" if self.seconds is not None
                else "no rehearsal time recorded for it")
        if self.kind == NO_LOCK_TIMEOUT:
            return f"line {self.line}: {self.label}: {self.what} ({self.table}, {size}), {took}"
        return f"line {self.line}: {self.label}: {self.what} under {self.lock} of {self.table} ({size}), {took}"


def seconds_text(seconds: float) -> str:
    """3.2, or 0.04 for a statement under a tenth of a second (0.0 would read as "not measured")."""
    return f"{seconds:.1f}" if seconds >= 0.1 else f"{seconds:.2f}"


@dataclass
class Linted:
    """What the classification found: the findings, and notes on what it could not lint or what protected it."""

    findings: list[Finding]
    notes: list[str]


class _Walk:
    """The file's state while its statements are classified in order: new tables, renames, lock_timeout."""

    def __init__(self, schema: str, runner_lock_timeout: str) -> None:
        self.schema = schema
        self.new: set[str] = set()
        self.renamed: dict[str, str] = {}  # name in the file -> live name on the target
        self.columns: dict[tuple[str, str], str] = {}  # (live table, column name in the file) -> live column
        self.lock_timeout = runner_lock_timeout
        self.lock_timeout_from = "the gate's runner ([migration] lock_timeout)"
        self.lock_judged = False  # the first lock-taking statement since the last SET lock_timeout was judged
        self.new_schemas: set[str] = set()
        self.findings: list[Finding] = []
        self.notes: list[str] = []

    def name(self, rv: ast.RangeVar) -> str:
        return f"{rv.schemaname or self.schema}.{rv.relname}"

    def live(self, name: str) -> str:
        return self.renamed.get(name, name)

    def existing(self, name: str) -> bool:
        return name not in self.new and name.split(".", 1)[0] not in self.new_schemas


def _timeout_off(value: str) -> bool:
    try:
        return duration_ms(value) <= 0
    except ValueError:
        return False


def _funcs(node: object) -> set[str]:
    """Names of the functions called anywhere in an expression (and nextval of a serial type)."""
    found: set[str] = set()
    if isinstance(node, ast.FuncCall):
        found.add(node.funcname[-1].sval)
    if isinstance(node, ast.Node):
        for attr in node:
            found |= _funcs(getattr(node, attr))
    elif isinstance(node, tuple | list):
        for item in node:
            found |= _funcs(item)
    return found


def _type_text(type_name: ast.TypeName) -> str:
    return RawStream()(type_name)


def _label(node: ast.Node, table: str, detail: str) -> str:
    if isinstance(node, ast.IndexStmt):
        return f"CREATE {'UNIQUE ' if node.unique else ''}INDEX {detail} ON {table}".replace("  ", " ")
    head = {ast.AlterTableStmt: "ALTER TABLE", ast.IndexStmt: "CREATE INDEX", ast.VacuumStmt: "VACUUM FULL",
            ast.ClusterStmt: "CLUSTER", ast.TruncateStmt: "TRUNCATE", ast.DeleteStmt: "DELETE FROM",
            ast.UpdateStmt: "UPDATE", ast.DropStmt: "DROP"}.get(type(node), type(node).__name__)
    return " ".join(p for p in (head, table, detail) if p)


def classify(steps: list[migration.Step], schema: str = "public", runner_lock_timeout: str = "0") -> Linted:
    """Classify every step of a migration file, in order. Without a target: sizes and times are filled later."""
    walk = _Walk(schema, runner_lock_timeout)
    for step in steps:
        if step.kind == "data":
            continue  # Python: lint_migration notes it with the rehearsal's time
        try:
            parsed = parse_sql(step.text)
        except ParseError as exc:
            walk.notes.append(f"line {step.line}: not linted, PostgreSQL's parser refused it ({exc.args[0]})")
            continue
        for raw in parsed:
            line = step.line + step.text[:raw.stmt_location or 0].count("\n")
            _statement(walk, raw.stmt, line, step.line)
    return Linted(walk.findings, walk.notes)


def _add(walk: _Walk, node: ast.Node, line: int, step_line: int, kind: str, table: str, detail: str, what: str,
         lock: str, **extra: object) -> None:
    walk.findings.append(Finding(line, kind, table, _label(node, table, detail), what, lock, step_line,
                                 live=walk.live(table), **extra))


def _lock_taken(walk: _Walk, node: ast.Node, line: int, step_line: int, table: str, lock: str) -> None:
    """The first statement that queues for a lock on an existing table (from the start, and again after each SET
    lock_timeout in the file): is a lock_timeout in force?"""
    if walk.lock_judged or not walk.existing(table):
        return
    walk.lock_judged = True
    if _timeout_off(walk.lock_timeout):
        _add(walk, node, line, step_line, NO_LOCK_TIMEOUT, table, "",
             f"waits for {lock} with no lock_timeout (none set by {walk.lock_timeout_from} nor by the file before "
             "it): queued behind one long query, it holds every later query on the table", lock)
    else:
        walk.notes.append(f"line {line}: the first lock-taking statement ({lock} on {table}) runs with "
                          f"lock_timeout {walk.lock_timeout} from {walk.lock_timeout_from}")


def _statement(walk: _Walk, node: ast.Node, line: int, step_line: int) -> None:
    if isinstance(node, ast.VariableSetStmt) and node.name == "lock_timeout":
        if node.kind == VariableSetKind.VAR_SET_VALUE and node.args:
            value = node.args[0].val
            walk.lock_timeout = str(getattr(value, "sval", None) or getattr(value, "ival", 0))
        else:
            walk.lock_timeout = "0"  # RESET / DEFAULT: the server's default, 0 unless the role sets one
        walk.lock_timeout_from = f"the file's line {line}"
        walk.lock_judged = False
    elif isinstance(node, ast.CreateSchemaStmt):
        walk.new_schemas.add(node.schemaname)
    elif isinstance(node, ast.CreateStmt):
        walk.new.add(walk.name(node.relation))
    elif isinstance(node, ast.CreateTableAsStmt):
        walk.new.add(walk.name(node.into.rel))
    elif isinstance(node, ast.RenameStmt) and node.relation is not None and node.renameType in (
            ObjectType.OBJECT_TABLE, ObjectType.OBJECT_COLUMN, ObjectType.OBJECT_TABCONSTRAINT):
        table = walk.name(node.relation)
        _lock_taken(walk, node, line, step_line, table, "ACCESS EXCLUSIVE")
        if node.renameType == ObjectType.OBJECT_TABLE:
            new = f"{table.split('.', 1)[0]}.{node.newname}"
            walk.renamed[new] = walk.live(table)
            if table in walk.new:
                walk.new.add(new)
        elif node.renameType == ObjectType.OBJECT_COLUMN:
            live = walk.live(table)
            walk.columns[(live, node.newname)] = walk.columns.get((live, node.subname), node.subname)
    elif isinstance(node, ast.AlterTableStmt) and node.objtype == ObjectType.OBJECT_TABLE:
        _alter_table(walk, node, line, step_line)
    elif isinstance(node, ast.IndexStmt):
        table = walk.name(node.relation)
        if not node.concurrent:
            _lock_taken(walk, node, line, step_line, table, "SHARE")
            if walk.existing(table):
                _add(walk, node, line, step_line, SCAN, table, node.idxname or "",
                     "full scan (index built without CONCURRENTLY)", "SHARE (writes blocked)")
    elif isinstance(node, ast.VacuumStmt) and node.is_vacuumcmd and any(
            o.defname == "full" for o in node.options or ()):
        for rel in node.rels or ():
            table = walk.name(rel.relation)
            _lock_taken(walk, node, line, step_line, table, "ACCESS EXCLUSIVE")
            if walk.existing(table):
                _add(walk, node, line, step_line, REWRITE, table, "", "table rewrite", "ACCESS EXCLUSIVE")
    elif isinstance(node, ast.ClusterStmt) and node.relation is not None:
        table = walk.name(node.relation)
        _lock_taken(walk, node, line, step_line, table, "ACCESS EXCLUSIVE")
        if walk.existing(table):
            _add(walk, node, line, step_line, REWRITE, table, "", "table rewrite", "ACCESS EXCLUSIVE")
    elif isinstance(node, ast.TruncateStmt):
        for rel in node.relations:
            table = walk.name(rel)
            _lock_taken(walk, node, line, step_line, table, "ACCESS EXCLUSIVE")
            if walk.existing(table):
                _add(walk, node, line, step_line, DESTRUCTIVE, table, "", "every row deleted", "ACCESS EXCLUSIVE")
    elif isinstance(node, ast.DeleteStmt | ast.UpdateStmt) and node.whereClause is None:
        table = walk.name(node.relation)
        if walk.existing(table):
            verb = "deleted" if isinstance(node, ast.DeleteStmt) else "updated (no WHERE)"
            _add(walk, node, line, step_line, DESTRUCTIVE, table, "", f"every row {verb}", "ROW EXCLUSIVE")
    elif isinstance(node, ast.DropStmt) and node.removeType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_SCHEMA):
        for obj in node.objects:
            if node.removeType == ObjectType.OBJECT_SCHEMA:
                name, detail = obj.sval, "SCHEMA"
                table = f"{name}.*"
                walk.new = {t for t in walk.new if not t.startswith(f"{name}.")}
                if name in walk.new_schemas:
                    continue
            else:
                parts = [p.sval for p in obj]
                table = ".".join(parts) if len(parts) > 1 else f"{walk.schema}.{parts[0]}"
                detail = "TABLE"
                _lock_taken(walk, node, line, step_line, table, "ACCESS EXCLUSIVE")
                if not walk.existing(table):
                    walk.new.discard(table)
                    continue
            walk.findings.append(Finding(line, DESTRUCTIVE, table, f"DROP {detail} {table}",
                                         "its rows are gone", "ACCESS EXCLUSIVE", step_line, live=walk.live(table)))
    elif isinstance(node, ast.DoStmt):
        walk.notes.append(f"line {line}: DO block: PL/pgSQL, not linted")
    elif isinstance(node, ast.LockStmt):
        for rel in node.relations:
            _lock_taken(walk, node, line, step_line, walk.name(rel), "an explicit LOCK")


def _alter_table(walk: _Walk, node: ast.AlterTableStmt, line: int, step_line: int) -> None:
    table = walk.name(node.relation)
    cmds = list(node.cmds)
    only_fks = all(c.subtype == AT.AT_AddConstraint and c.def_.contype == ConstrType.CONSTR_FOREIGN for c in cmds)
    lock = "SHARE ROW EXCLUSIVE" if only_fks else (
        "SHARE UPDATE EXCLUSIVE" if all(c.subtype == AT.AT_ValidateConstraint for c in cmds) else "ACCESS EXCLUSIVE")
    _lock_taken(walk, node, line, step_line, table, lock)
    if not walk.existing(table):
        return
    live = walk.live(table)
    for cmd in cmds:
        if cmd.subtype == AT.AT_AlterColumnType:
            new_type = _type_text(cmd.def_.typeName)
            change = None if cmd.def_.raw_default is not None else (walk.columns.get((live, cmd.name), cmd.name),
                                                                    new_type)
            _add(walk, node, line, step_line, REWRITE, table, f"ALTER COLUMN {cmd.name} TYPE {new_type}",
                 "table rewrite (column type change)", lock, type_change=change)
        elif cmd.subtype == AT.AT_AddColumn:
            col = cmd.def_
            kinds = {c.contype for c in col.constraints or ()}
            serial = col.typeName.names[-1].sval in SERIAL_TYPES
            stored = ConstrType.CONSTR_GENERATED in kinds or ConstrType.CONSTR_IDENTITY in kinds
            called = set().union(*(_funcs(c.raw_expr) for c in col.constraints or ()
                                   if c.contype == ConstrType.CONSTR_DEFAULT)) - NOT_VOLATILE
            detail = f"ADD COLUMN {col.colname}"
            if serial or stored:
                _add(walk, node, line, step_line, REWRITE, table, detail,
                     "table rewrite (a serial, identity or generated column fills every row)", lock)
            elif called:
                _add(walk, node, line, step_line, REWRITE, table, f"{detail} DEFAULT {', '.join(sorted(called))}()",
                     "table rewrite (volatile default)", lock, volatile=tuple(sorted(called)))
        elif cmd.subtype in (AT.AT_SetLogged, AT.AT_SetUnLogged, AT.AT_SetTableSpace, AT.AT_SetAccessMethod):
            _add(walk, node, line, step_line, REWRITE, table, AT(cmd.subtype).name[3:], "table rewrite", lock)
        elif cmd.subtype == AT.AT_SetNotNull:
            _add(walk, node, line, step_line, SCAN, table, f"ALTER COLUMN {cmd.name} SET NOT NULL",
                 "full scan (SET NOT NULL)", lock)
        elif cmd.subtype == AT.AT_AddConstraint:
            con = cmd.def_
            kind = {"FOREIGN": "FOREIGN KEY", "PRIMARY": "PRIMARY KEY", "EXCLUSION": "EXCLUDE"}.get(
                ConstrType(con.contype).name[7:], ConstrType(con.contype).name[7:])
            if con.contype in (ConstrType.CONSTR_CHECK, ConstrType.CONSTR_FOREIGN) and not con.skip_validation:
                _add(walk, node, line, step_line, SCAN, table, f"ADD CONSTRAINT {con.conname or ''} {kind}".replace(
                    "  ", " "), "full scan (constraint added without NOT VALID)", lock)
            elif con.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY,
                                 ConstrType.CONSTR_EXCLUSION) and not con.indexname:
                _add(walk, node, line, step_line, SCAN, table, f"ADD CONSTRAINT {con.conname or ''} {kind}".replace(
                    "  ", " "), "full scan (index built for the constraint; USING INDEX of one built CONCURRENTLY "
                    "avoids it)", lock)
        elif cmd.subtype == AT.AT_DropColumn:
            _add(walk, node, line, step_line, DESTRUCTIVE, table, f"DROP COLUMN {cmd.name}",
                 "the column's values are gone", lock)


# ---------------------------------------------------------------------------------------------------------------
# Against the target: sizes, whether a type change or a default really rewrites, the rehearsal's times.

def _split(name: str) -> tuple[str, str]:
    schema, _, table = name.partition(".")
    return schema, table


def table_size(conn: psycopg.Connection, name: str) -> tuple[int | None, int] | None:
    """(rows, bytes) of a table on the target by the one size reader (sizes.table_size): a table never analyzed
    or looking empty is counted when its heap is below COUNT_BELOW_BYTES, else rows None (unknown: never
    "small"). None: no such table."""
    schema, table = _split(name)
    size = sizes.table_size(conn, schema, table, count_below=COUNT_BELOW_BYTES)
    return None if size is None else (size.rows, size.bytes)


def _no_rewrite(conn: psycopg.Connection, finding: Finding) -> bool:
    """A type change the server does without a rewrite (binary-coercible: varchar(n) to text), or a default of
    functions none of which is volatile on the target."""
    if finding.type_change is not None:
        schema, table = _split(finding.live)
        column, new_type = finding.type_change
        if "(" in new_type:  # a length or precision: varchar(n) may need a scan; counted as a rewrite
            return False
        row = conn.execute(
            "SELECT a.atttypid = to_regtype(%s) OR EXISTS (SELECT 1 FROM pg_cast WHERE castsource = a.atttypid"
            " AND casttarget = to_regtype(%s) AND castmethod = 'b') FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s AND NOT a.attisdropped",
            (new_type, new_type, schema, table, column)).fetchone()
        return bool(row and row[0])
    if finding.volatile:
        # every function known to the target (one the file creates is not there yet: unknown, counted volatile)
        # and none of them volatile
        names = sorted(set(finding.volatile))
        row = conn.execute("SELECT count(DISTINCT proname), count(*) FILTER (WHERE provolatile = 'v') FROM pg_proc "
                           "WHERE proname = ANY(%s)", (names,)).fetchone()
        return row[0] == len(names) and row[1] == 0
    return False


def measure(conn: psycopg.Connection | None, linted: Linted, times: dict[int, float] | None) -> list[Finding]:
    """Each finding with its table's live size and the rehearsal's time; findings the target proves harmless
    (a binary-coercible type change, a stable default) dropped with a note."""
    sizes: dict[str, tuple[int | None, int] | None] = {}
    measured = []
    for finding in linted.findings:
        if conn is not None and (finding.type_change or finding.volatile) and _no_rewrite(conn, finding):
            linted.notes.append(f"line {finding.line}: {finding.label}: no rewrite on the target "
                                "(binary-coercible type, or no volatile function)")
            continue
        if conn is not None and not finding.live.endswith(".*"):
            if finding.live not in sizes:
                sizes[finding.live] = table_size(conn, finding.live)
            size = sizes[finding.live]
            finding = (replace(finding, rows=size[0], bytes=size[1]) if size is not None
                       else replace(finding, sized="no such table on the target"))
        if times is not None and finding.step_line in times:
            finding = replace(finding, seconds=times[finding.step_line])
        measured.append(finding)
    return measured


def judge(findings: Iterable[Finding], config: LintConfig, result: Result) -> Result:
    """Red only for what [lint] denies, on a table at or above a size threshold, not allowed by line and kind."""
    allowed = {(a.line, a.kind): a for a in config.allow}
    used = set()
    for finding in findings:
        result.checked += 1
        text = f"{finding.kind}: {finding.message()}"
        allow = allowed.get((finding.line, finding.kind))
        if allow is not None:
            used.add((allow.line, allow.kind))
            result.notes.append(f"{text} (allowed: {allow.reason})")
        elif finding.kind not in config.deny:
            result.notes.append(text)
        elif finding.kind != NO_LOCK_TIMEOUT and _small(finding, config):
            result.notes.append(f"{text} (below [lint] min_rows/min_bytes)")
        else:
            result.add(text)
    for key in sorted(set(allowed) - used):
        result.add(f"[lint] allow line {key[0]} kind {key[1]} matches no finding (has the file changed? a stale "
                   "allowance would excuse whatever statement moves onto that line)")
    return result


def _small(finding: Finding, config: LintConfig) -> bool:
    if not (config.min_rows or config.min_bytes) or finding.rows is None or finding.bytes is None:
        return False  # no threshold, or a size the target cannot tell: every hazard counts
    return (not config.min_rows or finding.rows < config.min_rows) and (
        not config.min_bytes or finding.bytes < config.min_bytes)


def lint_migration(conn: psycopg.Connection | None, migration_file: Path, config: LintConfig, schema: str,
                   runner_lock_timeout: str, run_dir: Path | None = None, sha256: str | None = None) -> Result:
    """The whole lint of a migration file: classify, measure on the target (when connected), judge by [lint].
    With sha256 (the run's record of the file), other bytes are refused: what is linted is what runs."""
    result = Result("the migration's locks and rewrites against live table sizes", unit="statements")
    try:
        steps = migration.load(migration_file, sha256=sha256)
    except migration.MigrationFileError as exc:
        result.add(str(exc))
        return result
    linted = classify(steps, schema, runner_lock_timeout)
    times = migration.load_times(run_dir, migration_file) if run_dir is not None else None
    if run_dir is not None and times is None:
        result.notes.append("no rehearsal times of this file in the run folder (PRE-08 records them)")
    with result.guard("sizes on the target"):
        findings = measure(conn, linted, times)
        judge(findings, config, result)
        flagged = {f.step_line for f in findings}
        for step in steps:
            took = (times or {}).get(step.line)
            if step.kind == "sql" and took is not None and took >= SLOW_SECONDS and step.line not in flagged:
                result.notes.append(f"line {step.line}: {step.label}: no hazard by its form, rehearsal took "
                                    f"{seconds_text(took)} s")
    for step in steps:
        if step.kind == "data":
            took = (f"rehearsal took {seconds_text(times[step.line])} s" if times and step.line in times
                    else "no rehearsal time")
            result.notes.append(f"line {step.line}: data step {step.text}: Python, not linted, {took}")
    result.notes.extend(linted.notes)
    return result


def lint_gate(conn: psycopg.Connection | None, gate: GateConfig, run_dir: Path | None = None,
              sha256: str | None = None) -> Result:
    """PRE-13: the configured migration file, linted as the gate's runner will run it (the bytes of sha256)."""
    return lint_migration(conn, gate.migration_file, gate.lint, gate.schema, gate.lock_timeout, run_dir, sha256)
