"""Where the project's own files are: the checkout (or installed tree) the shipped description and reports sit in."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
