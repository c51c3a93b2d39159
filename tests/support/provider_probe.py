"""A sandbox provider for our tests: the real sandbox with a key of the wrong shape, so a run shows (PRE-03 red)
which provider it was given."""

from sandbox.provider import SandboxProvider


class WrongKeyProvider(SandboxProvider):
    key = "not-a-key"
