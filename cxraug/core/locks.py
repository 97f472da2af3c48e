"""One writer per output folder: a lock file beside the folder, held while a command writes.

    with folder_lock(Path("cohorts/pneumonia-300"), "cohort"):
        ...   # a second cxraug synth on the same --out stops at once, naming this process

The lock is ``<parent>/.<name>.lock`` (beside the folder, not inside it: ``--overwrite`` deletes
the folder, and a run folder must hold only what cxraug wrote). It is an advisory ``flock`` on
that file, which holds the owner's pid and command line for the message. The kernel drops the
lock when its process ends, however it ends, so a lock left behind by ``kill -9`` or a power cut
is stale at once and the next command takes it over; the file is removed on a normal exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cxraug.core.errors import CxraugError


def lock_path(folder: Path, part: str = "") -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` in its parent (``.<name>.<part>.lock``)."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}{'.' + part if part else ''}.lock"


@contextlib.contextmanager
def folder_lock(folder: Path, what: str = "output", part: str = "",
                wait: bool = False) -> Iterator[Path]:
    """Hold ``folder``'s lock inside the block; :class:`CxraugError` (one line naming the other
    process and the lock file) when another live process holds it. ``what``: the folder's kind
    in the message (run, cohort); ``part``: a share of the folder that may have its own writer
    (a shard of a cohort). ``wait``: block until the other process lets go instead (job shares
    that need the same folder: the first writes it, the others then find it written)."""
    path = lock_path(folder, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, folder, what, wait)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')} {_command()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still ours: nobody else can lock it while we hold it
        os.close(fd)


def _acquire(path: Path, folder: Path, what: str, wait: bool = False) -> int:
    """An fd holding the exclusive lock on the file now at ``path``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            if wait:
                print(f"{folder}: waiting for another cxraug process ({holder})",
                      file=sys.stderr, flush=True)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
            else:
                os.close(fd)
                raise CxraugError(f"{folder}: this {what} folder is being written by another "
                                  f"cxraug process ({holder}); wait for it to finish or stop it "
                                  f"(the lock {path} goes away with it)") from None
        except BaseException:
            os.close(fd)
            raise
        # The holder we waited on may have removed the file before we locked it; then our lock
        # is on a deleted file and a newcomer could lock a new one: try again on the new file.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _read_holder(fd: int) -> str:
    """``pid 1234: cxraug synth ...`` from a held lock file (what its owner wrote)."""
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    pid, _, rest = text.partition(" ")
    if not pid.isdigit():
        return "its pid is not written yet"
    started, _, command = rest.partition(" ")
    return f"pid {pid}, since {started}: {command}" if command else f"pid {pid}"


def _command() -> str:
    """This process's command line, shortened, for the other process's message."""
    args = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]
    if args[0] in ("main.py", "__main__.py"):
        args[0] = "cxraug"
    text = " ".join(args)
    return text if len(text) <= 120 else text[:117] + "..."
