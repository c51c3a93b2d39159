"""The sign-off looked at in a real browser (issue 11 item 7): headless Chromium shows every required section,
draws the performance chart with marks in it, and logs no error."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.browser import look_at

SIGNOFF_SECTIONS = ("timeline", "success", "failure", "criteria", "phi", "performance", "people", "backup",
                    "environment", "artifacts", "approvals")


def test_the_rehearsals_sign_off_renders_complete_in_chromium(rehearsal, tmp_path: Path) -> None:
    done, _ = rehearsal
    assert done.returncode == 0, done.stderr[-2000:]
    signoff = Path(json.loads(done.stdout)["signoff"])
    page = look_at(signoff, screenshot=tmp_path / "signoff.png")
    assert page.errors == []
    missing = [s for s in SIGNOFF_SECTIONS if s not in page.sections]
    assert not missing, f"sections missing from the sign-off: {missing}"
    assert page.charts and all(c["width"] > 100 and c["height"] > 50 and c["marks"] >= 3 for c in page.charts)
    assert (tmp_path / "signoff.png").stat().st_size > 10_000
