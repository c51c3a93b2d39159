"""The configuration's one error: what the environment reader and the description's loaders raise."""


from migration_gate.core.errors import MigrationGateError


class ConfigError(MigrationGateError, ValueError):
    """The configuration is unusable; the message is one line naming what and where."""
