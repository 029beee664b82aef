"""Errors a user is meant to read: each names the file, line or option at fault.

The CLI prints a :class:`SpeechkeepError` as one line (no traceback) and exits with its
``exit_code``: 2 for usage errors (the command line or a config is wrong: an unknown key, a value out
of range, a model spec that does not resolve, an output directory that cannot be used, a path that
does not exist), 1 for data errors (the *content* of an input is wrong: a malformed manifest line,
undecodable or non-finite audio, truncated weights, a training loss that stopped being finite).
"""


class SpeechkeepError(Exception):
    """Base class of every error speechkeep raises on purpose (bad input, bad config, missing package).

    The CLI prints these as one clean message (no traceback)."""

    exit_code = 2


class UsageError(SpeechkeepError):
    """The command line is wrong: a missing or contradictory option, a path that does not exist."""


class ConfigError(UsageError):
    """A config file or a ``key=value`` override is invalid."""


class RangeError(ConfigError, ValueError):
    """A numeric setting is outside its allowed range (names the dotted key and the range)."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} must be {allowed}, got {value!r}")


class OutputError(UsageError):
    """An output directory cannot be used (a file, read-only, not empty, or too precious to write to)."""


class ModelSpecError(UsageError):
    """A model spec string cannot be resolved."""


class MissingPackageError(UsageError):
    """A bundled-model package is not installed."""


class DataError(SpeechkeepError):
    """Input data (questions, manifests, audio, weights files) is malformed."""

    exit_code = 1


class TrainingError(DataError):
    """Training cannot go on (e.g. the loss is no longer finite); the last good checkpoint is kept."""
