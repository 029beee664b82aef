"""Errors a user is meant to read: each names the file, line or option at fault."""


class SpeechkeepError(Exception):
    """Base class of every error speechkeep raises on purpose (bad input, bad config, missing package).

    The CLI prints these as one clean message (no traceback)."""


class ConfigError(SpeechkeepError):
    """A config file or a ``key=value`` override is invalid."""


class ModelSpecError(SpeechkeepError):
    """A model spec string cannot be resolved."""


class MissingPackageError(SpeechkeepError):
    """A bundled-model package is not installed."""


class DataError(SpeechkeepError):
    """Input data (questions, manifests, audio) is malformed."""
