"""User-facing errors.

Anything a user can cause (a missing file, a corrupt image, a wrong CSV column, an unknown label,
an out-of-range number) raises a :class:`CxraugError` subclass whose message is one line naming
the file or field and what was expected. The CLI prints that line and exits with code 2; any
other exception is a bug and keeps its traceback.
"""


class CxraugError(Exception):
    """Base class of errors caused by user input; the message is shown as-is."""


class DataError(CxraugError, ValueError):
    """A dataset, manifest or CSV that does not have the expected layout."""


class WeightsError(CxraugError, FileNotFoundError):
    """Missing or incompatible model weights (cxraug never downloads them silently)."""


class CxraugWarning(UserWarning):
    """Something the user should know that does not stop the work; the CLI shows it as one line."""
