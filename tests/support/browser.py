"""A report as a person sees it: opened in headless Chromium (Debian's, installed by scripts/setup) through
Playwright, which reports the page's console errors and uncaught exceptions and measures what was drawn."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import sync_playwright

# The flags this machine's closed network needs (no background connections, no component updates).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("no chromium on PATH: scripts/setup installs Debian's chromium package")
    return found


@dataclass
class Page:
    sections: list[str]  # the ids of the page's h2 headings, in order
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    charts: list[dict] = field(default_factory=list)  # per <svg>: its drawn size and how many marks it has


def look_at(report: Path, screenshot: Path | None = None) -> Page:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")
            sections = page.eval_on_selector_all("h2[id]", "els => els.map(e => e.id)")
            charts = page.eval_on_selector_all("svg", """els => els.map(e => {
                const box = e.getBoundingClientRect();
                const marks = [...e.querySelectorAll('rect, path, polyline, circle, line')].filter(m => {
                    const b = m.getBoundingClientRect(); return b.width > 0 || b.height > 0; });
                return {width: box.width, height: box.height, marks: marks.length}; })""")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()
    return Page(sections=sections, errors=errors, charts=charts)
