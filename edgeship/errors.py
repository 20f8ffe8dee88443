"""One exception tree for edgeship.

Library code raises these; the CLI prints ``error: <message>`` on one line and exits 1.
Every message says what was expected and what was found, naming the file or value.
"""

from __future__ import annotations


class EdgeshipError(Exception):
    """Base class for every error edgeship reports to a user."""


class InputError(EdgeshipError):
    """A path, value or option given by the user is missing or malformed."""


class SpecError(InputError):
    """An InputSpec is invalid or does not fit the model or data."""


class CalibrationError(EdgeshipError):
    """A calibration source could not be read or produced no samples."""


class ModelError(EdgeshipError):
    """A model or artifact file cannot be loaded."""


class ConversionError(EdgeshipError):
    """A conversion, pruning or quantization step failed."""


class SourceError(EdgeshipError):
    """A camera, stream or video source cannot be opened or read."""


class BackendError(EdgeshipError):
    """An inference backend is missing or failed to run the artifact."""


class ConfigError(InputError):
    """A deployment config file is invalid."""


class DeployError(EdgeshipError):
    """Bundling, flashing or a remote device operation failed."""


# what a system error means to the person at the terminal, by errno name
_OS_HINTS = {
    "ENOSPC": "no space left on the device: free some space and run it again",
    "EDQUOT": "the disk quota is used up: free some space and run it again",
    "EROFS": "the file system is read-only",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "EFBIG": "the file is too large for this file system",
    "EMFILE": "too many open files",
}


def describe_os_error(e: OSError) -> str:
    """An OSError as the text of one ``error:`` line, naming the file when the system said which."""
    import errno

    name = errno.errorcode.get(e.errno or 0, "")
    what = _OS_HINTS.get(name) or (e.strerror or str(e))
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{what}" + (f" ({name})" if name else "")
