"""User-facing errors.

Anything a user can cause (a missing file, a corrupt image, a wrong CSV column, an unknown label,
an out-of-range number) raises a :class:`CxraugError` subclass whose message is one line naming
the file or field and what was expected. The CLI prints that line and exits with code 2; any
other exception is a bug and keeps its traceback.
"""

import contextlib
import errno
import os
import re
from collections.abc import Iterator


class CxraugError(Exception):
    """Base class of errors caused by user input; the message is shown as-is."""


class DataError(CxraugError, ValueError):
    """A dataset, manifest or CSV that does not have the expected layout."""


class WeightsError(CxraugError, FileNotFoundError):
    """Missing or incompatible model weights (cxraug never downloads them silently)."""


class CxraugWarning(UserWarning):
    """Something the user should know that does not stop the work; the CLI shows it as one line."""


#: Words in the errors that torch and safetensors raise, instead of an OSError, when a write fails.
_WRITE_FAILURES = ("I/O error", "file write failed", "unexpected pos", "No space left")


@contextlib.contextmanager
def writing(path) -> Iterator[None]:
    """Name ``path`` in a failed write inside the block: a full disk's ``OSError`` carries no
    file name, and torch / safetensors report it as a RuntimeError / SafetensorError. Either
    becomes an ``OSError`` whose ``filename`` is ``path`` (the CLI prints it in one line)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise
    except Exception as e:  # torch's RuntimeError, safetensors' SafetensorError
        text = str(e)
        if not any(w in text for w in _WRITE_FAILURES):
            raise
        found = re.search(r"os error (\d+)", text)
        code = int(found.group(1)) if found else errno.ENOSPC if "No space" in text else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from e
