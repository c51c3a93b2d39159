"""Progress for long work: a bar with counts on a terminal, plain timestamped lines elsewhere (CI, logs)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self._last_line = 0.0
        self._bar_open = False
        self._shown: dict[str, int] = {}

    def _stamp(self) -> str:
        return datetime.now(UTC).strftime("%H:%M:%SZ")

    def say(self, message: str) -> None:
        if self.quiet:
            return
        self._close_bar()
        print(f"[{self._stamp()}] {message}", file=self.stream, flush=True)

    def count(self, label: str, done: int, total: int) -> None:
        """A bar on a terminal; otherwise a line at most every 5 seconds and at the end."""
        if self.quiet or self._shown.get(label) == done:
            return
        share = done / total if total else 1.0
        if self.tty:
            filled = int(share * 30)
            self.stream.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,}")
            self.stream.flush()
            self._shown[label] = done
            self._bar_open = True
            if done >= total:
                self._close_bar()
            return
        now = time.monotonic()
        if done >= total or now - self._last_line >= 5:
            self._last_line = now
            self._shown[label] = done
            print(f"[{self._stamp()}] {label}: {done:,}/{total:,} ({share:.0%})", file=self.stream, flush=True)

    def _close_bar(self) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False
