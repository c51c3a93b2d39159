"""The configuration's one error: what the environment reader and the description's loaders raise."""


class ConfigError(ValueError):
    """The configuration is unusable; the message is one line naming what and where."""
