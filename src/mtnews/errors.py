"""User-facing errors. The CLI prints these as one line and exits non-zero, with no traceback."""


class MtnewsError(Exception):
    """Base class for errors caused by user input (data, config, paths), not by bugs."""


class DataError(MtnewsError):
    """A dataset file is missing, unreadable, or has the wrong schema."""


class ConfigError(MtnewsError):
    """A config file or override is invalid."""


class CheckpointError(MtnewsError):
    """A run directory or checkpoint is missing or corrupt."""
