"""Errors a user can cause. The CLI prints their message alone, without a traceback."""


class LadarunError(Exception):
    """Base class: the message says what went wrong and how to fix it."""


class ConfigError(LadarunError):
    """An impossible or out-of-range configuration value."""


class DataNotFoundError(LadarunError):
    """A dataset's files are missing and could not be downloaded."""


class RunLockedError(LadarunError):
    """Another live process is running the same run directory."""


class DamagedFileError(LadarunError):
    """A file of a run directory cannot be read (truncated, empty or corrupt)."""


class DiskFullError(LadarunError):
    """A write failed for lack of space; finished iterations are kept and a rerun resumes."""
