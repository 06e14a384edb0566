"""`ConfigError`: the one error a config raises (an unknown key, a wrong type, a value out of range)."""


class ConfigError(ValueError):
    """A config key that is unknown, of the wrong type, or out of range."""
