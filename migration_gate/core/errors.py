"""The gate's own errors: one root, a step that could not run, and a refusal. Each is one clear line for the CLI.

Every exception the library raises derives from MigrationGateError (keeping the builtin base code catches it by,
e.g. ConfigError is a ValueError too), so a caller can tell the gate's own composed errors, whose text names
tables, columns, files and keys but never values, from a library's (core/redact.own_error). CheckFailed is the
exception: a failed check is a verdict, raised as pytest's AssertionError.
"""

from __future__ import annotations


class MigrationGateError(Exception):
    """The root of the gate's own errors."""


class GateError(MigrationGateError, RuntimeError):
    """A step could not run or refused to; one clear line."""


class Refused(GateError):
    """The gate will not proceed (lock held, earlier phases not green, backup changed...)."""
