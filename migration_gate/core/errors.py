"""The gate's own errors: a step that could not run, and a refusal. Each is one clear line for the CLI."""

from __future__ import annotations


class GateError(RuntimeError):
    """A step could not run or refused to; one clear line."""


class Refused(GateError):
    """The gate will not proceed (lock held, earlier phases not green, backup changed...)."""
