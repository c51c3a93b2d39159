"""The 48 hours after go-live (scripts/watch): rounds of checks on the checklist's schedule, against the live app and
database, until the watch is over or a human decides to roll back.

Why a program: the checklist asks for health, login, the critical reads, the log, error rate, latency and the
database invariants every 15 minutes for two hours, hourly to a day, every 4 hours to two days. A person doing that
by hand at 3 a.m. skips rounds and cannot say what a rollback would cost. Here each round is recorded on disk
(<run_dir>/watch/state.json), so a stopped watch resumes at the next due round and a cron line (--once) works as
well as one long process; rounds are idempotent (a round that did not finish is run again).

Each round looks only at what is new since the last one where the check allows it: PHI written since the last
round's mark (by xmin, the oldest running transaction at that round's start, so a row committed in between is never
missed), the log lines since the last round's marker. A red round calls [hooks] alert with a PHI-free message; when
a rollback criterion of [watch] is met it says so, names the decision maker recorded for the run, states what a
rollback would discard (writes since go-live by others than the gate) and prints the rollback's dry run. It never
rolls back by itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import psycopg

from migration_gate.app import logsource, ownrequests, performance
from migration_gate.app.client import http_client, send
from migration_gate.app.hooks import PLACEHOLDER_MARK, CutoverTarget, ShellHooks
from migration_gate.checks import api as app
from migration_gate.checks import encryption, organizations, schema
from migration_gate.checks.api.endpoints import p95
from migration_gate.config import ConfigError, GateConfig, WatchConfig, holding_waivers
from migration_gate.config.model import EscalationStep
from migration_gate.core import rundir
from migration_gate.core.errors import GateError
from migration_gate.core.phi import PhiCodec
from migration_gate.core.progress import Progress
from migration_gate.core.redact import describe_target, mask_values, redact_text
from migration_gate.core.result import CheckFailed, Result, collecting, error_text, waiver_match, waiving
from migration_gate.core.status import WATCH_EXIT_OF, Round
from migration_gate.db import connection as db
from migration_gate.db import writes
from migration_gate.db.connection import session_dsn
from migration_gate.report import signoff
from migration_gate.run import attest
from migration_gate.run.runstate import RunState
from migration_gate.run.watchstate import (
    API,
    INVARIANT,
    CheckRecord,
    Escalated,
    RoundRecord,
    WatchState,
    iso,
    round_offsets,
    went_live,
)
from migration_gate.watch import report as watchreport

BASELINE = rundir.BASELINE_FILE
COMPRESS = 1440.0  # --compress: a day a minute, the 48 hours in two minutes plus the rounds' own time
NO_DECISION_MAKER = "no decision maker recorded"
SCOPED = " (written since the last round)"  # the checks that look only at rows written since the last round
# The post-check criterion each round's check repeats: the [[waivers]] of that criterion hold in the watch too.
WATCH_CRITERIA = {"health": "POST-06", "login": "POST-07", "critical endpoints": "POST-09", "latency p95": "POST-10",
                  "log since the last round": "POST-11", "audit rows written": "POST-12"}


def decision_maker(gate: GateConfig, run_dir: Path) -> str:
    """Who decides on a rollback: the person the run's decision-maker attestation names (scripts/attest)."""
    found = attest.decision_maker(gate, run_dir)
    return redact_text(" ".join(found.split()))[:120] if found and found.strip() else NO_DECISION_MAKER


def baseline_budgets(run_dir: Path, gate: GateConfig) -> tuple[dict[str, float], str]:
    """Per endpoint, the p95 a round is held to: the run's measured baseline x [watch] baseline_factor (plus
    [performance] p95_allowance_ms) where
    performance/baseline.json names the path, else [budgets] api_p95_ms. Read defensively: a missing, partial or
    malformed file falls back, and says so."""
    default = {e.path: gate.api_p95_ms for e in gate.endpoints}
    path = rundir.baseline_file(run_dir)
    if not path.exists():
        return default, f"[budgets] api_p95_ms {gate.api_p95_ms:g} ms (no {BASELINE})"
    try:
        endpoints = json.loads(path.read_text()).get("endpoints")
        # the performance budget's one rule (factor x baseline + allowance): a small baseline is noisy, and a round
        # 9 ms slower than a 20 ms baseline is no regression
        rule = dataclasses.replace(gate.performance, p95_factor=gate.watch.baseline_factor)
        found = {p: performance.limit_ms(float(v["p95_ms"]), rule) for p, v in endpoints.items()
                 if p in default and isinstance(v, dict) and isinstance(v.get("p95_ms"), int | float)
                 and v["p95_ms"] > 0}
    except (OSError, ValueError, TypeError, AttributeError):
        return default, f"[budgets] api_p95_ms {gate.api_p95_ms:g} ms ({BASELINE} is unreadable)"
    return default | found, (f"{BASELINE} p95 x {gate.watch.baseline_factor:g} + {rule.p95_allowance_ms:g} ms for "
                             f"{len(found)} endpoints"
                             + (f", [budgets] api_p95_ms for {len(default) - len(found)}" if len(found) < len(default)
                                else ""))


class Counted:
    """Counts what a round asks of the app (httpx event hooks): every request, and those answered 5xx."""

    def __init__(self) -> None:
        self.sent = self.answered = self.server_errors = 0

    def request(self, _request: httpx.Request) -> None:
        self.sent += 1

    def response(self, response: httpx.Response) -> None:
        self.answered += 1
        self.server_errors += response.status_code >= 500

    @property
    def errors(self) -> int:
        """Answered 5xx, or not at all (a refused or timed-out connection)."""
        return self.server_errors + self.sent - self.answered


class Watch:
    """Runs the rounds of one run's watch; its state and reports live in <run_dir>/watch/."""

    def __init__(self, gate: GateConfig, target: CutoverTarget, run_dir: Path, progress: Progress,
                 factor: float | None = None, sandbox: bool = False,
                 log_source: logsource.LogSource | None = None) -> None:
        self.gate, self.target, self.run_dir, self.progress = gate, target, run_dir, progress
        self.folder = run_dir / rundir.WATCH
        self.run = _live_run(run_dir, target)
        self.codec = PhiCodec(target.key)
        self.log_source = log_source or (logsource.LogSource.from_json(self.run.log_source) if self.run.log_source
                                         else logsource.configured(gate.logs, gate.hooks, target.app_log_file,
                                                                   gate.hook_pass_env))
        self.folder.mkdir(parents=True, exist_ok=True)
        offsets = round_offsets(gate.watch.schedule)
        state = WatchState.load(self.folder)
        if state is None:
            factor = factor or 1.0  # compressed or not, the rounds count from go-live (a late start catches up)
            state = WatchState(run_dir=str(run_dir), target=self.run.target,
                               anchor=float(self.run.maintenance_off_at), factor=factor,
                               offsets=offsets, sandbox=sandbox)
        elif factor is not None and factor != state.factor:
            raise ConfigError(f"this watch runs {state.factor:g} times faster than real time; it cannot change "
                              f"to {factor:g} (start over by moving {self.folder} away)")
        elif state.offsets != offsets:
            raise ConfigError(f"[watch] schedule changed since this watch started ({state.total} rounds then, "
                              f"{len(offsets)} now): start over by moving {self.folder} away")
        self.state = state
        self.dsn = session_dsn(target.dsn, gate.precheck.settings(), "migration-gate watch")

    # -- the loop -----------------------------------------------------------------------------------------------
    def run_rounds(self, once: bool = False, sleep: Callable[[float], None] = time.sleep) -> int:
        """Run the due rounds in order (waiting for each when it is not yet due); with once, at most one round and
        no waiting. Returns the exit code of every round so far: 0 green, 1 a red round, 3 a criterion met."""
        with self._locked():
            while True:
                self.escalate()
                number = len(self.state.rounds) + 1
                escalation = self.next_escalation()
                if number > self.state.total:
                    if escalation is None or once:  # a red last round still escalates until acknowledged
                        self.progress.say(f"watch over: {self.state.total} rounds, {self._tally()}")
                        break
                    due = escalation
                else:
                    due = self.state.due(number)
                wait = min(due, escalation or due) - time.time()
                if wait > 0:
                    if once:
                        self.progress.say(f"round {number}/{self.state.total} due at {iso(due)}: not yet "
                                          f"({self._tally()})")
                        break
                    if wait >= 1:
                        self.progress.say(f"round {number}/{self.state.total} due at {iso(due)}: waiting {wait:.0f} s"
                                          if number <= self.state.total else
                                          f"next escalation of an unacknowledged red round in {wait:.0f} s")
                    sleep(wait)
                    continue
                if number > self.state.total or time.time() < self.state.due(number):
                    continue  # an escalation fell due first
                self.run_round(number)
                if once:
                    break
        return WATCH_EXIT_OF[self.state.worst()]

    def _tally(self) -> str:
        red = sum(r.verdict == Round.RED for r in self.state.rounds)
        return f"{len(self.state.rounds)} done, {red} red" + (", a rollback criterion met" if
                                                               self.state.worst() == "criterion" else "")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One watch of a run at a time (a cron tick while the last one still runs, or a second long process)."""
        with open(self.folder / "lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise GateError(f"another watch of {self.run_dir.name} is running") from None
            yield

    # -- one round ------------------------------------------------------------------------------------------------
    def run_round(self, number: int) -> RoundRecord:
        """Every check of one round, recorded; then the criteria, the reports, and the alert when red."""
        total = self.state.total
        self.progress.say(f"round {number}/{total} due at {iso(self.state.due(number))}: running")
        began = time.monotonic()
        record = RoundRecord(number=number, due=iso(self.state.due(number)), started=iso(time.time()))
        previous = self.state.rounds[-1] if self.state.rounds else None
        counted = Counted()
        self._token: str | None = None
        self._user_id: tuple[dict[str, str], object | None] = ({}, None)
        self._budgets, self._baseline_note = baseline_budgets(self.run_dir, self.gate)
        try:
            with db.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
                record.db_mark = writes.oldest_running_xid(conn)
                since = previous.db_mark if previous else (self.run.write_mark or {}).get("xid")
                scope = writes.written_since(int(since)) if since is not None else None
                with http_client(self.target.api_base_url, timeout=15, headers=self.target.api_headers,
                                 event_hooks={"request": [counted.request], "response": [counted.response]}
                                 ) as client:
                    self._api_checks(record, client, conn, counted, previous)
                    self._invariants(record, conn, scope, since, client)
            if any("could not be checked" in p for c in record.checks if c.name.endswith(SCOPED) for p in c.problems):
                record.db_mark = int(since) if since is not None else None  # the next round looks at these rows again
        except psycopg.Error as exc:  # the database is gone mid-round: red, and the next round tries again
            record.checks.append(CheckRecord("database reachable", INVARIANT, [f"database: {error_text(exc)}"]))
            record.db_mark = previous.db_mark if previous else None
            record.log_marker = record.log_marker or (previous.log_marker if previous else None)
        record.requests, record.errors = counted.sent, counted.errors
        record.checks.insert(sum(c.group == API for c in record.checks), self._error_rate(record))
        record.verdict = Round.RED if any(not c.ok for c in record.checks) else Round.GREEN
        record.seconds = round(time.monotonic() - began, 2)
        self.state.rounds.append(record)
        record.criteria = self._criteria()
        if record.criteria:
            record.rollback_cost = self._rollback_cost()
        record.ended_at = time.time()  # a red round's escalation counts from here
        if record.verdict == Round.RED:
            record.alert = self._alert(record)
        self.state.save(self.folder)
        watchreport.write(self.state, self.folder, self.gate, decision_maker(self.gate, self.run_dir),
                          self._baseline_note)
        if (self.run_dir / rundir.SIGNOFF).is_file():  # the sign-off carries the rounds as they run
            signoff.rewrite(self.run_dir, self.gate)
        failed = [c.name for c in record.checks if not c.ok]
        self.progress.say(f"round {number}/{total}: {len(record.checks)} checks, "
                          + (f"red: {', '.join(failed)}" if failed else "all green")
                          + f"; p95 max {max(record.p95_ms.values(), default=0):.0f} ms, error rate "
                            f"{record.error_rate:.1%} ({record.requests} requests); {record.seconds:.1f} s: "
                          + record.verdict.upper())
        for line in record.criteria:
            self.progress.say(f"ROLLBACK CRITERION MET: {line}")
        return record

    def _check(self, record: RoundRecord, name: str, group: str, run: Callable[[], Result]) -> Result | None:
        """One check judged as the suites judge theirs (Result.expect(), the waivers of its post-check criterion
        holding) and recorded from the summary it travels with (collecting()); an exception is its problem (class
        and masked first line), never a crash."""
        began = time.monotonic()
        result = None
        try:
            result = judged = run()
        except CheckFailed as exc:
            judged = Result(name, list(exc.problems) or [str(exc).splitlines()[0]])
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is red, and the round goes on
            judged = Result(name, [f"could not be checked: {error_text(exc)}"])
        seconds = round(time.monotonic() - began, 3)
        held = holding_waivers(self.gate.waivers, WATCH_CRITERIA.get(name), date.today())
        with waiving(waiver_match(held)), collecting() as heard:
            try:
                judged.expect()
                problems: list[str] = []
            except CheckFailed as failed:
                problems = failed.problems
        check = CheckRecord.judged(name, group, heard[-1], problems, seconds)
        check.notes += [self._waived_note(hit) for hit in heard[-1].get("waived", [])]
        secrets = [self.target.key, self.target.api_password, *self.target.api_headers.values()]
        check.problems = [mask_values(redact_text(p), secrets) for p in check.problems]
        check.notes = [mask_values(redact_text(n), secrets) for n in check.notes]
        record.checks.append(check)
        return result

    def _waived_note(self, hit: dict) -> str:
        """A finding a [[waivers]] entry of the check's criterion held today is a note naming the waiver, not a
        problem: the watch judges what the post-checks judged, waivers included (expired ones waive nothing)."""
        waiver = self.gate.waivers[hit["waiver"]]
        return (f"waived by {waiver.label} (decided by {waiver.decided_by}, expires {waiver.expires.isoformat()}): "
                f"{hit['finding']}")

    def _api_checks(self, record: RoundRecord, client: httpx.Client, conn: psycopg.Connection, counted: Counted,
                    previous: RoundRecord | None) -> None:
        self._check(record, "health", API, lambda: app.health(client, expect_hipaa=True))
        token: list[str] = []

        def login() -> Result:
            token.append(app.login(client, self.target.api_username, self.target.api_password))
            return Result("login", checked=1)
        self._check(record, "login", API, login)
        self._token = token[0] if token else None
        self._user_id = writes.attribution(self.gate, self.dsn, self.target.api_username)
        if self._token is None:
            for name in ("critical endpoints", "latency p95"):
                record.checks.append(CheckRecord(name, API, ["not checked: the login failed"]))
        else:
            self._check(record, "critical endpoints", API, lambda: self._endpoints(client, conn))
            self._check(record, "latency p95", API, lambda: self._latency(record, client))
        self._check(record, "log since the last round", API, lambda: self._logs(record, previous, counted))

    def _endpoints(self, client: httpx.Client, conn: psycopg.Connection) -> Result:
        """The configured reads answer their shape and the database's totals; a total that disagrees is asked once
        more (a user's insert between the count and the request is not a fault)."""
        user_id = self._user_id[1]
        result = app.endpoint_shapes(client, self._token, self.gate.api, conn, user_id, True)
        if not result.ok:
            result = app.endpoint_shapes(client, self._token, self.gate.api, conn, user_id, True)
        return result

    def _latency(self, record: RoundRecord, client: httpx.Client) -> Result:
        budgets = self._budgets
        samples = self.gate.watch.latency_samples
        result = Result(f"p95 of {samples} timed GETs per endpoint within budget")
        for endpoint in self.gate.endpoints:
            path = endpoint.path
            times = []
            send(client, "GET", path, self._token)  # warm-up, untimed
            for _ in range(samples):
                began = time.perf_counter()
                try:
                    response = send(client, "GET", path, self._token, params={"limit": 10})
                except httpx.HTTPError as exc:
                    result.add(f"GET {path}: no answer ({type(exc).__name__})")
                    break
                times.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    result.add(f"GET {path}: answered {response.status_code} (expected 200)")
                    break
            result.checked += 1
            if not times:
                continue
            measured = round(p95(times), 1)
            record.p95_ms[path], record.budget_ms[path] = measured, round(budgets[path], 1)
            result.notes.append(f"GET {path}: p95 {measured:.1f} ms (budget {budgets[path]:.0f} ms)")
            if measured > budgets[path]:
                result.add(f"GET {path}: p95 {measured:.1f} ms over {samples} samples exceeds {budgets[path]:.0f} ms")
        result.notes.append(f"budgets: {self._baseline_note}")
        return result

    def _logs(self, record: RoundRecord, previous: RoundRecord | None, counted: Counted) -> Result:
        """The log's lines since the last round (since the deploy for the first): no error lines, nothing that
        looks like PHI or a secret. The marker is taken before reading, so no line falls between two rounds (a line
        written while this round reads may be read again by the next: counted twice, never missed)."""
        start = (previous.log_marker if previous else None) or self.run.log_marker
        marker = logsource.LogMarker.from_json(start) if start else None
        record.log_marker = logsource.mark(self.log_source).to_json()
        result = app.logs_clean(self.log_source, marker, requests_made=max(counted.sent, 1),
                                own_requests=ownrequests.read(self.run_dir))  # the go-live's forged tokens
        result.problems = [p.replace("since the deploy", "since the last round" if previous else "since the deploy")
                           for p in result.problems]
        return result

    def _error_rate(self, record: RoundRecord) -> CheckRecord:
        limit = self.gate.watch.error_rate_over
        check = CheckRecord("error rate", API, checked=record.requests,
                            notes=[f"{record.errors} of {record.requests} requests answered 5xx or not at all "
                                   f"({record.error_rate:.1%}; threshold {limit:.1%})"])
        if record.requests and record.error_rate > limit:
            check.problems.append(f"{record.errors} of {record.requests} requests answered 5xx or not at all "
                                  f"({record.error_rate:.1%}, over {limit:.1%})")
        return check

    def _invariants(self, record: RoundRecord, conn: psycopg.Connection, scope: object, since: object,
                    client: httpx.Client) -> None:
        """What must hold on a live database: PHI written since the last round well-formed, decryptable, with
        consistent search hashes; tenancy; no orphans; sequences ahead; audit rows still written."""
        gate, where = self.gate, self.gate.schema
        columns = gate.new_encrypted_columns()
        scoped = (f"rows written by transaction {since} or later (since the last round)" if since is not None
                  else "every row (the run has no mark from its migration)")
        for name, run in (("PHI well-formed", lambda: encryption.well_formed(conn, columns, schema=where, scope=scope)),
                          ("PHI decrypts", lambda: encryption.decrypts(conn, self.codec, columns, schema=where,
                                                                       scope=scope)),
                          ("search hashes", lambda: encryption.search_hashes(conn, self.codec, gate.search_hashes,
                                                                             schema=where, scope=scope))):
            result = self._check(record, name + SCOPED, INVARIANT, run)
            record.checks[-1].notes.append(f"scope: {scoped}" + (f"; {result.checked} values" if result else ""))
        if gate.tenancy is not None:
            self._check(record, "every row in its organization", INVARIANT,
                        lambda: organizations.rows_in_their_organization(conn, gate.tenancy, schema=where))
            self._check(record, "one active primary owner per organization", INVARIANT,
                        lambda: organizations.one_primary_owner(conn, gate.tenancy, schema=where))
        self._check(record, "no orphans", INVARIANT, lambda: schema.orphans(conn, gate.new_foreign_keys, schema=where))
        self._check(record, "sequences ahead of their keys", INVARIANT,
                    lambda: schema.sequences(conn, list(gate.new_schema), schema=where))
        if self._token is None:
            record.checks.append(CheckRecord("audit rows written", INVARIANT, ["not checked: the login failed"]))
        else:
            self._check(record, "audit rows written", INVARIANT, lambda: app.audit_rows_written(
                client, self._token, conn, self._user_id[1], gate.audited, gate.api.audit))

    # -- criteria, cost, alert -------------------------------------------------------------------------------------
    def _criteria(self) -> list[str]:
        """The [watch] rollback_criteria met as of the latest round, one line each."""
        rules: WatchConfig = self.gate.watch
        rounds, met = self.state.rounds, []
        latest = rounds[-1]
        if rules.invariant_red and latest.invariants_red:
            met.append(f"a database invariant is red: {', '.join(latest.invariants_red)}")
        last = rounds[-rules.error_rate_rounds:]
        if len(last) == rules.error_rate_rounds and all(r.error_rate > rules.error_rate_over for r in last):
            met.append(f"error rate over {rules.error_rate_over:.1%} for {rules.error_rate_rounds} rounds in a row "
                       f"({', '.join(f'{r.error_rate:.1%}' for r in last)})")
        n = rules.p95_over_budget_rounds
        if n and len(rounds) >= n and all(r.latency_over for r in rounds[-n:]):
            met.append(f"p95 over budget for {n} rounds in a row")
        return met

    def _rollback_cost(self) -> str:
        """What a rollback would discard now: rows written since go-live by others than the gate (counted from the
        run's mark after the migration, or the watch's own first mark), by table; names and counts only."""
        mark = self.run.write_mark or self.state.write_mark
        if mark is None:
            return "cannot be counted (the run has no mark from the migration)"
        try:
            columns, own_id = self._user_id
            since = writes.count_since(self.dsn, writes.WriteMark.from_json(mark), columns, own_id)
        except (psycopg.Error, OSError, KeyError, ValueError) as exc:
            return f"cannot be counted now ({error_text(exc)})"
        return (f"{since.others} changes by others than the gate since the migration "
                f"({since.summary('others')})")

    def rollback_command(self) -> str:
        return f"scripts/rollback --run-dir {self.run_dir} --dry-run"

    def message(self, record: RoundRecord) -> str:
        """The alert: PHI-free by construction (check names and their problem lines, which name tables, ids and
        counts, never values), with the run's secrets masked again."""
        failed = [c for c in record.checks if not c.ok]
        lines = [f"watch {self.run_dir.name}: round {record.number}/{self.state.total} RED: "
                 + "; ".join(f"{c.name}: {c.problems[0]}" for c in failed[:4])
                 + (f"; and {len(failed) - 4} more checks" if len(failed) > 4 else "")]
        if self.gate.escalation:
            lines.append(f"Unacknowledged, it goes to {self.gate.escalation[0].name} in "
                         f"{self.gate.escalation[0].after_minutes:g} min. Acknowledge: {self.ack_command(record)}")
        if record.criteria:
            lines.append("ROLLBACK CRITERION MET: " + "; ".join(record.criteria))
            lines.append(f"Decision maker: {decision_maker(self.gate, self.run_dir)}")
            lines.append(f"A rollback would discard: {record.rollback_cost}")
            lines.append(f"The watch never rolls back by itself. Dry run: {self.rollback_command()}")
        text = "\n".join(lines)
        return mask_values(redact_text(text), [self.target.key, self.target.api_password,
                                               *self.target.api_headers.values()])

    def _alert(self, record: RoundRecord) -> str:
        text = self.message(record)
        print(text, file=sys.stderr)
        hooks = self._alert_hooks()
        if hooks is None:
            return "no [hooks] alert configured: the alert is in this report and on stderr only"
        env = {"GATE_ALERT_MESSAGE": text, "GATE_RUN_ID": self.run_dir.name, "GATE_WATCH_ROUND": str(record.number),
               "GATE_WATCH_CRITERION_MET": "1" if record.criteria else "0"}
        try:
            hooks.alert(env)
        except GateError as exc:
            return f"the alert hook failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - code hooks (the sandbox's): a failed alert is recorded, never a crash
            return f"the alert hook failed: {error_text(exc)}"
        return "sent through [hooks] alert"

    def _alert_hooks(self) -> Any:
        """Who carries the alert: the [hooks] alert command when one is configured (not the shipped placeholder),
        else the target's own hooks when they are code with an alert (the sandbox's), else nobody."""
        command = (self.gate.hooks.get("alert") or "").strip()
        if command and PLACEHOLDER_MARK not in command:
            return ShellHooks(self.gate.hooks, timeout=self.gate.hook_timeout_seconds,
                              pass_env=self.gate.hook_pass_env)
        hooks = self.target.hooks
        if not isinstance(hooks, ShellHooks) and callable(getattr(hooks, "alert", None)):
            return hooks
        return None

    # -- escalation ------------------------------------------------------------------------------------------------
    def _pending(self) -> list[tuple[float, RoundRecord, int, EscalationStep]]:
        """Every [[escalation]] step not yet called for a red round nobody acknowledged: (due, round, step, ...)."""
        self.state.take_acks(self.folder)
        called = {(e.round, e.step) for e in self.state.escalations}
        pending = []
        for record in self.state.rounds:
            for number, step in enumerate(self.gate.escalation, 1):
                due = self.state.escalation_due(record.number, step.after_minutes)
                if due is not None and (record.number, number) not in called:
                    pending.append((due, record, number, step))
        return sorted(pending, key=lambda p: (p[0], p[1].number, p[2]))

    def next_escalation(self) -> float | None:
        """When the next escalation step falls due (epoch), None when none is pending."""
        pending = self._pending()
        return pending[0][0] if pending else None

    def escalate(self, now: float | None = None) -> list[Escalated]:
        """Call every [[escalation]] step due by now for a red round not acknowledged (scripts/watch --ack), in
        order, each once; recorded in the watch state (who, when, the outcome) and its report."""
        now = time.time() if now is None else now
        called = []
        for due, record, number, step in self._pending():
            if due > now:
                break
            minutes = (due - record.ended_at) * self.state.factor / 60
            text = (f"{self.message(record)}\nNot acknowledged within {minutes:g} min: escalated to {step.name} "
                    f"(step {number} of {len(self.gate.escalation)}). Acknowledge: {self.ack_command(record)}")
            env = {"GATE_ALERT_MESSAGE": text, "GATE_RUN_ID": self.run_dir.name,
                   "GATE_WATCH_ROUND": str(record.number), "GATE_WATCH_CRITERION_MET": "1" if record.criteria else "0",
                   "GATE_ESCALATION_NAME": step.name, "GATE_ESCALATION_STEP": str(number)}
            try:
                ShellHooks({"escalate": step.command}, timeout=self.gate.hook_timeout_seconds,
                           pass_env=self.gate.hook_pass_env).escalate(env)
                outcome = "sent"
            except GateError as exc:
                outcome = f"the escalation command failed: {exc}"
            entry = Escalated(round=record.number, step=number, name=step.name, at=iso(now), outcome=outcome)
            self.state.escalations.append(entry)
            called.append(entry)
            self.progress.say(f"round {record.number} red and not acknowledged: escalated to {step.name} "
                              f"(step {number}): {outcome}")
        if called:
            self.state.save(self.folder)
        return called

    def ack_command(self, record: RoundRecord) -> str:
        return f"scripts/watch --run-dir {self.run_dir} --ack {record.number} --by NAME"


def _live_run(run_dir: Path, target: CutoverTarget) -> RunState:
    """The run to watch: it went live (green, forced or over the downtime limit; maintenance off) against this
    target."""
    run = RunState.open(run_dir)
    if run.target != describe_target(target.dsn):
        raise ConfigError(f"{run_dir.name} is a run against {run.target}, not {describe_target(target.dsn)}")
    # a forced run went live too (every phase after the forced ones passed): its 48 hours are watched like any
    if not went_live(run):
        raise ConfigError(f"{run_dir.name} did not go live (status {run.status}): there is nothing to watch")
    return run


def summary(watch: Watch, code: int) -> dict:
    """Numbers, names and verdicts only."""
    state = watch.state
    return {"run_dir": str(watch.run_dir), "rounds": state.total, "done": len(state.rounds),
            "red": [r.number for r in state.rounds if r.verdict == Round.RED],
            "criteria": {r.number: r.criteria for r in state.rounds if r.criteria}, "exit_code": code,
            "report": str(watch.folder / watchreport.REPORT), "factor": state.factor}
