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


class UnsafePathError(LadarunError):
    """A run would write outside its folder (a symbolic link in it, a name that climbs out)."""


class DataMismatchError(LadarunError):
    """A run would resume on other data than it started on."""


class TrainingDivergedError(LadarunError):
    """The classifier's training loss became non-finite or exploded."""


class FileAccessError(LadarunError):
    """A file or folder the run needs cannot be read or written (permissions, read-only)."""
