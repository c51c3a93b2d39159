"""When the new app does not turn healthy after the deploy: the checklist's "If application won't start" steps, in
its order, recorded before anyone decides between a redeploy and the rollback.

1. environment: what the app itself reports on /health and /api/status (or that it does not answer), filtered to
   flags, states, counts and names: never a value the app holds, never its error texts.
2. logs: its lines since the deploy through the configured log source: how many, per level, the safe names of the
   error lines (event, exception class) with their line numbers; never a line's text (it may hold PHI).
3. database: the database answers the app's role ([app_role], SET ROLE in a read-only transaction) with the app's
   smoke queries ([deploy] smoke_queries): per query ok with its row count, or its SQLSTATE; never a row.
4. version: the version answering against the one expected ([deploy] expected_version, else what the deploy hook
   printed), and whether the previous release still answers (the host never swapped the instance).

Each step is a DiagnosisStep (ok true, false, or None when it could not tell); a Diagnosis is one attempt's steps
and what was decided after it (redeploy or rollback) with why. The run keeps them in state.json
(RunState.deploy_diagnosis); the sign-off shows them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from psycopg import sql

from migration_gate.app.client import body_of, send
from migration_gate.app.logsource import LogMarker, LogSource, LogsUnseen, read_since
from migration_gate.checks.api.health import SAFE_VERSION
from migration_gate.checks.api.logs import line_levels
from migration_gate.config import GateConfig
from migration_gate.core.redact import error_line
from migration_gate.core.result import first_ids
from migration_gate.db import connection as db

STEPS = ("environment", "logs", "database", "version")
SMOKE_TIMEOUT = "10s"  # each smoke query's statement_timeout: a diagnosis never hangs the window
STATES = ("ok", "degraded", "error", "configured", "missing")  # the words of the app's report that may be repeated
PINO_LEVELS = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}


@dataclass
class DiagnosisStep:
    step: str  # one of STEPS
    ok: bool | None  # None: the step could not tell (nothing configured to ask, a role it may not take)
    detail: str  # one PHI-free line
    facts: dict[str, Any] = field(default_factory=dict)  # what the line says, for a machine (flags, counts, names)


@dataclass
class Diagnosis:
    attempt: int  # 1: after the deploy; 2: after the redeploy [deploy] retries allowed
    at: str
    problem: str  # why health did not turn (the wait's first problem, or the deploy hook's failure)
    steps: list[DiagnosisStep]
    decision: str = ""  # "redeploy" or "rollback"
    why: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    def red(self, step: str) -> bool:
        return any(s.step == step and s.ok is False for s in self.steps)


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _word(value: Any) -> str | None:
    return value if isinstance(value, str) and value in STATES else None


def _name(value: Any) -> str | None:
    """A short name (production, development) or a version: safe to record; anything else is left out."""
    return value if isinstance(value, str) and SAFE_VERSION.match(value) else None


def _count(value: Any) -> int | None:
    return len(value) if isinstance(value, list) else None


def reported_environment(health: dict, status: dict) -> dict[str, Any]:
    """What the app says of itself, filtered: states, flags, counts and names only (its error texts, timestamps
    and anything not listed here are left out). Keys are the app's own, dotted."""
    database = health.get("database") if isinstance(health.get("database"), dict) else {}
    encryption = health.get("encryption") if isinstance(health.get("encryption"), dict) else {}
    config = health.get("config") if isinstance(health.get("config"), dict) else {}
    validation = health.get("validation") if isinstance(health.get("validation"), dict) else {}
    env_valid = validation.get("environment") if isinstance(validation.get("environment"), dict) else {}
    facts = {
        "status": _word(health.get("status")), "environment": _name(health.get("environment")),
        "database.connected": _flag(database.get("connected")),
        "database.schemaValid": _flag(database.get("schemaValid")),
        "database.errors": _count(database.get("errors")), "encryption.configured": _flag(encryption.get("configured")),
        "encryption.valid": _flag(encryption.get("valid")),
        **{f"config.{k}": _word(config.get(k)) for k in ("databaseUrl", "sessionSecret", "phiEncryptionKey")},
        "config.useHipaaSchema": _flag(config.get("useHipaaSchema")),
        "validation.environment.valid": _flag(env_valid.get("valid")),
        "validation.environment.errors": _count(env_valid.get("errors")),
        "api/status.env": _name(status.get("env")), "api/status.commit": _name(status.get("commit")),
        "api/status.uptimeSec": status.get("uptimeSec") if isinstance(status.get("uptimeSec"), int | float) else None}
    return {k: v for k, v in facts.items() if v is not None}


def environment(client: httpx.Client, expect_hipaa: bool = True) -> DiagnosisStep:
    """Step 1: the app's environment as /health and /api/status report it, or that it does not answer."""
    bodies: dict[str, dict] = {}
    answers: dict[str, str] = {}
    for path in ("/health", "/api/status"):
        try:
            response = send(client, "GET", path)
        except httpx.HTTPError as exc:
            answers[path] = f"no answer ({type(exc).__name__})"
            continue
        body = body_of(response)
        bodies[path] = body if isinstance(body, dict) else {}
        answers[path] = f"{response.status_code}" + ("" if isinstance(body, dict) else ", not a JSON object")
    facts = reported_environment(bodies.get("/health", {}), bodies.get("/api/status", {}))
    said = "; ".join(f"{path} {answer}" for path, answer in answers.items())
    if not bodies:
        return DiagnosisStep("environment", False, f"the app does not answer: {said}", {"answers": answers})
    shown = ", ".join(f"{k} {json.dumps(v)}" for k, v in facts.items()) or "nothing the gate may repeat"
    flag = facts.get("config.useHipaaSchema")
    ok = facts.get("status") == "ok" and flag is expect_hipaa
    return DiagnosisStep("environment", ok, f"{said}: {shown}", {"answers": answers} | facts)


def _level(line: str) -> str:
    """A JSON line's level by name (pino's numbers mapped); a plain-text line is "text"."""
    try:
        record = json.loads(line)
    except ValueError:
        return "text"
    level = record.get("level") if isinstance(record, dict) else None
    if isinstance(level, bool):
        return "unknown"
    if isinstance(level, int):
        return PINO_LEVELS.get(level, "unknown")
    return level.lower() if isinstance(level, str) and level.isalpha() and len(level) <= 10 else "unknown"


def logs(source: LogSource | None, marker: LogMarker | None) -> DiagnosisStep:
    """Step 2: the app's lines since the deploy, counted per level, its error lines by number and safe name."""
    if source is None:
        return DiagnosisStep("logs", None, "no log source (set APP_LOG_FILE, or [logs] in migration.toml): the "
                             "app's lines since the deploy cannot be read")
    marker = marker or LogMarker()
    try:
        lines = read_since(source, marker)
    except LogsUnseen as exc:
        return DiagnosisStep("logs", None, f"cannot see the logs: {exc}", {"source": source.label})
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    levels = Counter(_level(line) for _, line in numbered)
    errors, kinds = line_levels([line for _, line in numbered], source)
    error_numbers = [numbered[i][0] for i in errors]
    facts = {"source": source.label, "since": marker.since, "lines": len(numbered), "levels": dict(levels),
             "error_lines": len(error_numbers), "error_kinds": dict(Counter(kinds).most_common(5))}
    per_level = ", ".join(f"{level} {n}" for level, n in levels.most_common()) or "none"
    detail = f"{source.label}: {len(numbered)} lines since {marker.since or 'the deploy'} ({per_level})"
    if error_numbers:
        kinds_shown = ", ".join(f"{kind} x{n}" for kind, n in Counter(kinds).most_common(5))
        detail += (f"; {len(error_numbers)} error lines "
                   f"({first_ids(error_numbers).replace('first ids', 'lines')}; {kinds_shown})")
    return DiagnosisStep("logs", not error_numbers, detail, facts)


def database(dsn: str, gate: GateConfig) -> DiagnosisStep:
    """Step 3: the database answers as the app's role, the app's smoke queries in a read-only transaction; each
    query's row count or SQLSTATE (never a row, never the server's message text beyond its masked first line)."""
    queries = list(gate.deploy.smoke_queries) or ["SELECT 1"]
    role = gate.app_role.name if gate.app_role else None
    facts: dict[str, Any] = {"role": role, "queries": []}
    try:
        conn = db.connect(dsn, connect_timeout=10)
    except psycopg.Error as exc:
        return DiagnosisStep("database", False, f"the database does not answer: {error_line(exc)}", facts)
    notes = [] if gate.deploy.smoke_queries else ["no [deploy] smoke_queries configured: only SELECT 1 ran"]
    with conn:
        conn.read_only = True  # whatever a query says, nothing is written
        with conn.transaction(force_rollback=True):
            conn.execute("SELECT set_config('statement_timeout', %s, true), set_config('search_path', %s, true)",
                         (SMOKE_TIMEOUT, gate.schema))
            if role is None:
                notes.append("no [app_role]: the queries ran as the gate's role")
            else:
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                except psycopg.Error as exc:
                    facts["role"] = None
                    notes.append(f"the gate's role may not act as {role} ({type(exc).__name__}): the queries ran "
                                 "as the gate's role")
            for number, query in enumerate(queries, 1):
                try:
                    with conn.transaction():
                        rows = len(conn.execute(query).fetchall())  # type: ignore[arg-type] - the description's own
                    facts["queries"].append({"query": number, "ok": True, "rows": rows})
                except psycopg.Error as exc:
                    facts["queries"].append({"query": number, "ok": False, "sqlstate": exc.sqlstate,
                                             "error": type(exc).__name__})
    failed = [q for q in facts["queries"] if not q["ok"]]
    who = f"as {role}" if facts["role"] else "as the gate's role"
    lines = [f"query {q['query']}: {q['error']} (SQLSTATE {q['sqlstate']})" for q in failed]
    detail = (f"the database answers {who}: {len(queries) - len(failed)} of {len(queries)} smoke queries ran"
              + (f"; {'; '.join(lines)}" if lines else "") + (f" ({'; '.join(notes)})" if notes else ""))
    # SELECT 1 answering, or the queries answering another role, is not the app's queries answering the app's
    # role: said, never passed as checked
    ok = False if failed else (True if gate.deploy.smoke_queries and facts["role"] else None)
    return DiagnosisStep("database", ok, detail, facts)


def hook_version(output: str | None) -> str | None:
    """The version a deploy hook printed: its last non-empty line, a version itself or a JSON object with a commit
    ({"commit": {"id": ...}} as `render deploys create -o json` prints, or "commit"/"version" as a string)."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1]
    try:
        body = json.loads(last)
    except ValueError:
        return last if SAFE_VERSION.match(last) else None
    if isinstance(body, dict):
        commit = body.get("commit")
        for value in (commit.get("id") if isinstance(commit, dict) else commit, body.get("version")):
            if isinstance(value, str) and SAFE_VERSION.match(value):
                return value
    return None


def version(answering: str | None, expected: str | None, expected_from: str, legacy: str | None) -> DiagnosisStep:
    """Step 4: the version answering against the one expected; the previous release still answering says the host
    never swapped the instance."""
    facts = {"answering": answering, "expected": expected, "expected_from": expected_from, "legacy": legacy}
    if answering is None:
        return DiagnosisStep("version", False, "no version answers (GET /api/status has no commit, /health no "
                             "version, or the app does not answer)", facts)
    previous = (f"; it is the previous release ({legacy}): the deploy did not replace the running app"
                if legacy and answering == legacy and answering != expected else "")
    if expected is None:
        return DiagnosisStep("version", False if previous else None,
                             f"version {answering} answers; the version expected is not known (set [deploy] "
                             f"expected_version, or let the deploy hook print it){previous}", facts)
    if answering == expected:
        return DiagnosisStep("version", True, f"version {answering} answers, the one expected ({expected_from})",
                             facts)
    return DiagnosisStep("version", False, f"version {answering} answers, not {expected} ({expected_from})"
                         f"{previous}", facts)


def decide(diagnosis: Diagnosis, retries: int) -> None:
    """Redeploy once where [deploy] retries allows and a redeploy can help; else roll back. Says why, either way."""
    used = diagnosis.attempt - 1
    if used >= retries:
        diagnosis.decision = "rollback"
        diagnosis.why = ("rolling back: [deploy] retries = 0 (no redeploy allowed)" if retries == 0 else
                         f"rolling back: still not healthy after {used} redeploy(s) ([deploy] retries = {retries})")
    elif diagnosis.red("database"):
        diagnosis.decision = "rollback"
        diagnosis.why = ("rolling back without the redeploy [deploy] retries allows: the database does not answer "
                         "the app role's smoke queries, which a redeploy of the app cannot change")
    else:
        diagnosis.decision = "redeploy"
        diagnosis.why = (f"redeploying once ([deploy] retries = {retries}, {used} used): the database answers the "
                         "app's role, so the app's start may not have been its last")


def diagnose(attempt: int, problem: str, client: httpx.Client, dsn: str, gate: GateConfig,
             source: LogSource | None, marker: LogMarker | None, answering: str | None, expected: str | None,
             expected_from: str, legacy: str | None) -> Diagnosis:
    """The four steps in the checklist's order, then the decision ([deploy] retries)."""
    steps = [environment(client), logs(source, marker), database(dsn, gate),
             version(answering, expected, expected_from, legacy)]
    found = Diagnosis(attempt, datetime.now(UTC).isoformat(timespec="seconds"), problem, steps)
    decide(found, gate.deploy.retries)
    return found
