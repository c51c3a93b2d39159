"""A bounded load on the live app's read endpoints, to show the gate's pre-checks do not hurt it.

The pre-checks run while the app serves its users. To measure that, this drives the app the way its users do:
N worker threads, each with its own HTTP client, signed in as the fixture user, cycling through the configured
list endpoints ([api] endpoints). It is bounded twice (a fixed request count and a maximum duration) and stops by
itself; a caller may stop it earlier. What it returns holds numbers only: latencies, status counts, percentiles,
paths. Never a response body, the token or the password.

Only the app's own address is ever asked (the API_BASE_URL the checks use); it sends nothing anywhere else.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from migration_gate.app.client import http_client, login, send
from migration_gate.config import Environment, GateConfig
from migration_gate.core.errors import MigrationGateError
from migration_gate.core.result import CheckFailed

T = TypeVar("T")


class LoadError(MigrationGateError):
    """The load could not start (no login, no endpoint that answers); the message names why, never a secret."""


@dataclass(frozen=True)
class LoadPlan:
    """What to ask of the app and the bounds: at most `requests` requests and `max_seconds` seconds."""

    base_url: str
    paths: tuple[str, ...]
    username: str
    password: str = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    requests: int = 1000
    max_seconds: float = 60.0
    workers: int = 4
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.paths:
            raise LoadError("no endpoints to ask: [api] endpoints is empty")
        if self.requests < 1 or self.max_seconds <= 0 or self.workers < 1:
            raise LoadError("a load needs at least one request, one worker and a duration above zero")

    @classmethod
    def configured(cls, gate: GateConfig, base_url: str, username: str, password: str,
                   headers: dict[str, str] | None = None, **bounds: float) -> LoadPlan:
        """The mix from the description's [api] endpoints (the app's list endpoints), the given login."""
        return cls(base_url=base_url.rstrip("/"), paths=tuple(e.path for e in gate.endpoints), username=username,
                   password=password, headers=dict(headers or {}), **bounds)

    @classmethod
    def from_environment(cls, gate: GateConfig, env: Environment, **bounds: float) -> LoadPlan:
        """The app and login the checks use: API_BASE_URL, GATE_API_USERNAME/PASSWORD, GATE_API_HEADERS."""
        if not (env.api_base_url and env.api_username and env.api_password):
            raise LoadError("API_BASE_URL, GATE_API_USERNAME and GATE_API_PASSWORD are needed for a load")
        return cls.configured(gate, env.api_base_url, env.api_username, env.api_password, env.api_headers,
                              **bounds)


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (one of the measured values); 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class LoadReport:
    """What the load saw: one latency per answered request, statuses ("200", "503", or a transport error's class
    name), the endpoints used and those left out (they did not answer 2xx before the load began)."""

    paths: tuple[str, ...]
    skipped: dict[str, str]
    workers: int
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    per_path: Counter = field(default_factory=Counter)
    latencies_by_path: dict[str, list[float]] = field(default_factory=dict)  # one endpoint's own percentiles
    statuses_by_path: dict[str, Counter] = field(default_factory=dict)
    seconds: float = 0.0
    ended_by: str = ""  # "count", "duration" or "stop"

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        """Requests that did not answer 2xx: an error status or no answer at all."""
        return sum(n for status, n in self.statuses.items() if not (status.isdigit() and 200 <= int(status) < 300))

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict:
        """Numbers and paths only (fit for any report)."""
        return {"requests": self.requests, "errors": self.errors, "statuses": dict(self.statuses),
                "seconds": round(self.seconds, 2), "workers": self.workers, "ended_by": self.ended_by,
                "p50_ms": round(self.p(50), 1), "p95_ms": round(self.p(95), 1), "p99_ms": round(self.p(99), 1),
                "paths": {p: self.per_path[p] for p in self.paths}, "skipped": dict(self.skipped)}

    def line(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        return (f"{self.requests} requests in {self.seconds:.1f} s ({rate:.0f}/s, {self.workers} workers), "
                f"{self.errors} errors; p50 {self.p(50):.1f} ms, p95 {self.p(95):.1f} ms, p99 {self.p(99):.1f} ms")


def _client(plan: LoadPlan) -> httpx.Client:
    return http_client(plan.base_url, headers=plan.headers, timeout=plan.timeout_s)


def _prepare(plan: LoadPlan) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """Sign in once and ask each endpoint once: those that do not answer 2xx (a route the app's current schema
    lacks, say) are left out of the mix and named, so the load measures the app, not 404s."""
    with _client(plan) as client:
        try:
            token = login(client, plan.username, plan.password)
        except CheckFailed as exc:
            raise LoadError(str(exc)) from None
        usable, skipped = [], {}
        for path in plan.paths:
            try:
                status = send(client, "GET", path, token).status_code
            except httpx.HTTPError as exc:
                skipped[path] = type(exc).__name__
                continue
            if 200 <= status < 300:
                usable.append(path)
            else:
                skipped[path] = str(status)
    if not usable:
        raise LoadError(f"none of the endpoints answered 2xx before the load: {skipped}")
    return token, tuple(usable), skipped


def run_load(plan: LoadPlan, stop: threading.Event | None = None, requests_per_path: bool = False) -> LoadReport:
    """Drive the app until `plan.requests` requests were sent, `plan.max_seconds` passed, or `stop` is set.

    Requests cycle through the usable endpoints in order (request i asks paths[i % n]), spread over the workers;
    each worker keeps its own client (its own connections), as separate users' browsers do. With
    requests_per_path, `plan.requests` is per usable endpoint (a measurement asks each the same number)."""
    token, paths, skipped = _prepare(plan)
    report = LoadReport(paths=paths, skipped=skipped, workers=plan.workers)
    limit = plan.requests * len(paths) if requests_per_path else plan.requests
    stop = stop or threading.Event()
    lock = threading.Lock()
    issued = 0
    started = time.monotonic()
    deadline = started + plan.max_seconds

    def next_index() -> int | None:
        nonlocal issued
        with lock:
            if issued >= limit:
                report.ended_by = report.ended_by or "count"
                return None
            if stop.is_set():
                report.ended_by = report.ended_by or "stop"
                return None
            if time.monotonic() >= deadline:
                report.ended_by = report.ended_by or "duration"
                return None
            issued += 1
            return issued - 1

    def worker() -> None:
        with _client(plan) as client:
            while (index := next_index()) is not None:
                path = paths[index % len(paths)]
                began = time.perf_counter()
                try:
                    status = str(send(client, "GET", path, token).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = (time.perf_counter() - began) * 1000
                with lock:
                    report.statuses[status] += 1
                    report.per_path[path] += 1
                    report.statuses_by_path.setdefault(path, Counter())[status] += 1
                    if status.isdigit():
                        report.latencies_ms.append(elapsed)
                        report.latencies_by_path.setdefault(path, []).append(elapsed)

    threads = [threading.Thread(target=worker, name=f"load-{n}", daemon=True) for n in range(plan.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(plan.max_seconds + plan.timeout_s + 5)
    report.seconds = time.monotonic() - started
    return report


def load_during(plan: LoadPlan, work: Callable[[], T]) -> tuple[LoadReport, T, float]:
    """The load running while `work` runs in this thread; the load stops when the work ends (or at its own
    bounds, whichever comes first). Returns the load's report, the work's result and the work's seconds."""
    stop = threading.Event()
    box: dict[str, LoadReport | BaseException] = {}

    def drive() -> None:
        try:
            box["report"] = run_load(plan, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["report"] = exc

    thread = threading.Thread(target=drive, name="load", daemon=True)
    thread.start()
    began = time.monotonic()
    try:
        result = work()
    finally:
        seconds = time.monotonic() - began
        stop.set()
        thread.join(plan.max_seconds + plan.timeout_s + 10)
    found = box.get("report")
    if isinstance(found, BaseException):
        raise found
    if found is None:
        raise LoadError("the load did not finish")
    return found, result, seconds
