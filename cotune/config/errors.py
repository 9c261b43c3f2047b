"""The one error type for configuration problems, raised before any work starts."""


class ConfigError(ValueError):
    """A config key holds something unusable; the message names the key and what was expected."""

    def __init__(self, key: str, expected: str, got: object) -> None:
        self.key, self.expected, self.got = key, expected, got
        super().__init__(f"config key '{key}': expected {expected}, got {got!r}")


def require(condition: bool, key: str, expected: str, got: object) -> None:
    """Raise ConfigError unless `condition` holds; keeps section validators to one line per rule."""
    if not condition:
        raise ConfigError(key, expected, got)
