"""One writer per output folder: a live holder is named, a killed holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cxraug.core.errors import CxraugError
from cxraug.core.locks import folder_lock, lock_path

HOLD = """
import sys, time
from pathlib import Path
from cxraug.core.locks import folder_lock
with folder_lock(Path(sys.argv[1]), "cohort"):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock (it says so on stdout once it does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_named(tmp_path):
    proc = _holder(tmp_path / "cohort")
    try:
        with pytest.raises(CxraugError, match=f"pid {proc.pid}") as e, \
                folder_lock(tmp_path / "cohort", "cohort"):
            pass
        assert "cohort folder" in str(e.value) and str(lock_path(tmp_path / "cohort")) in str(e.value)
        assert "\n" not in str(e.value)
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    proc = _holder(tmp_path / "run")
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up: its lock file stays behind
    proc.wait()
    path = lock_path(tmp_path / "run")
    assert path.read_text().startswith(f"{proc.pid} ")
    with folder_lock(tmp_path / "run", "run"):
        assert path.read_text().startswith(f"{os.getpid()} ")
    assert not path.exists()  # a normal exit removes it


def test_lock_sits_beside_the_folder_and_parts_are_separate(tmp_path):
    folder = tmp_path / "cohorts" / "pneumonia-300"
    assert lock_path(folder) == tmp_path / "cohorts" / ".pneumonia-300.lock"
    with folder_lock(folder, "cohort", "shard-0-of-2"):
        with folder_lock(folder, "cohort", "shard-1-of-2"):  # another shard: its own writer
            assert not folder.exists()  # the lock creates nothing inside the folder
        with pytest.raises(CxraugError, match=f"pid {os.getpid()}"), \
                folder_lock(folder, "cohort", "shard-0-of-2"):
            pass


def test_released_on_an_exception(tmp_path):
    with pytest.raises(KeyboardInterrupt), folder_lock(tmp_path / "x"):
        raise KeyboardInterrupt
    with folder_lock(tmp_path / "x"):
        pass


def test_a_waiting_writer_takes_the_lock_when_the_holder_ends(tmp_path, capsys):
    """``wait=True`` (job shares needing one generator): block, say so, then hold it."""
    import threading

    proc = _holder(tmp_path / "gen")
    threading.Timer(1.0, proc.kill).start()  # the holder ends while we wait
    with folder_lock(tmp_path / "gen", "generator", wait=True) as path:
        assert proc.poll() is not None  # we got it only after the holder was gone
        assert path.read_text().startswith(f"{os.getpid()} ")
    proc.wait()
    err = capsys.readouterr().err
    assert f"waiting for another cxraug process (pid {proc.pid}" in err and err.count("\n") == 1
