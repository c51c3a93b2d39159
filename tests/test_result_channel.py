"""A judged Result travels one way: expect() hands its summary (Result.summary(), the shape the suites' results and
the watch's records are made from) to every collecting() block open around it; a log line is only a log line."""

from __future__ import annotations

import logging
import re

import pytest

from migration_gate.core.result import LOG, CheckFailed, Result, collecting, waiver_match, waiving


class Finding:
    """A waiver as waiver_match needs it: something that says whether it matches a problem line."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def matches(self, line: str) -> bool:
        return re.search(self.pattern, line) is not None


def test_every_open_collector_hears_a_judged_result_as_its_summary_even_with_logging_off() -> None:
    level = LOG.level
    LOG.setLevel(logging.CRITICAL)  # the channel is data, not the logger's records
    try:
        with collecting() as outer:
            Result("rows counted", checked=3, unit="rows", notes=["t: 3 rows"]).expect()
            with collecting() as inner, pytest.raises(CheckFailed):
                Result("orphans", problems=["t.owner_id: 2 rows with no owner (first ids: 4, 9)"]).expect()
    finally:
        LOG.setLevel(level)
    assert outer == [{"check": "rows counted", "checked": 3, "unit": "rows", "problems": 0, "notes": ["t: 3 rows"]},
                     {"check": "orphans", "checked": 0, "unit": "values", "problems": 1, "notes": []}]
    assert inner == outer[1:]
    Result("nobody collects").expect()  # outside any block: no error, nowhere to go
    assert len(outer) == 2


def test_a_waived_finding_travels_in_the_summary_with_its_waivers_number_and_fails_nothing() -> None:
    problems = ["t.c: 1 value not decryptable (first ids: 7)", "u.d: 2 rows differ (first ids: 1, 2)"]
    with waiving(waiver_match([(3, Finding("^t.c: "))])), collecting() as heard, pytest.raises(CheckFailed) as failed:
        Result("PHI decrypts", problems=list(problems)).expect()
    assert failed.value.problems == problems[1:]
    assert heard == [{"check": "PHI decrypts", "checked": 0, "unit": "values", "problems": 1, "notes": [],
                      "waived": [{"finding": problems[0], "waiver": 3}]}]
    with waiving(waiver_match([(0, Finding("."))])), collecting() as heard:
        assert Result("all waived", problems=problems[:1]).expect().problems == problems[:1]
    assert heard[0]["problems"] == 0 and heard[0]["waived"] == [{"finding": problems[0], "waiver": 0}]
    assert waiver_match([]) is None  # no waiver holds: nothing is waived
