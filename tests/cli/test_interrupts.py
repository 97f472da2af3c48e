"""Ctrl-C, SIGTERM and a second writer, sent to real ``cxraug`` processes.

Each long command is started as a subprocess the way a script starts a background job (SIGINT
arrives *ignored*, as after ``cxraug synth ... &``), left to do some real work, then sent a
signal: it must stop within seconds, print one ``interrupted`` line, exit 130, keep what it had
finished and resume from it when rerun. A second process on the same output folder is refused
in one line naming the first (``cxraug.core.locks``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_cohort, write_png

from cxraug.cli.main import main
from cxraug.core.locks import lock_path
from cxraug.diffusion.config import TINY

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "cxraug.cli.main"]
SYNTH = ["synth", "--labels", "pneumonia", "--gates", "none", "--steps", "30", "--batch-size", "1"]


def _as_background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` in a script hands its child


def _start(argv: list[str], cwd: Path, log: str = "log.txt") -> tuple[subprocess.Popen, Path]:
    out = cwd / log
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with out.open("w") as fh:
        proc = subprocess.Popen(CLI + argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                preexec_fn=_as_background_job)  # noqa: PLW1509 (no threads)
    return proc, out


def _wait_for(proc: subprocess.Popen, log: Path, ready, what: str, timeout: float = 400) -> None:
    """Until ``ready()``; fails if the process ends first (the test would prove nothing)."""
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"ended (exit {proc.returncode}) before {what}:\n{log.read_text()}"
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"no {what} after {timeout} s:\n{log.read_text()}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen, log: Path, sig: signal.Signals) -> str:
    """Send ``sig``; the process must end within seconds with one line and exit 130."""
    assert proc.poll() is None, f"already ended:\n{log.read_text()}"
    proc.send_signal(sig)
    t0 = time.monotonic()
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{sig.name} did not stop the process within 60 s:\n{log.read_text()}")
    text = log.read_text()
    assert code == 130, f"exit {code} after {sig.name}:\n{text}"
    assert time.monotonic() - t0 < 30, f"{sig.name} took {time.monotonic() - t0:.0f} s"
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines[-1].startswith(f"interrupted ({sig.name})"), text
    assert sum("interrupted" in ln for ln in lines) == 1, text
    return text


def _rows(part: Path) -> list[dict]:
    return [json.loads(ln) for ln in part.read_text().splitlines()] if part.is_file() else []


# ----------------------------------------------------------------------------- synth

def test_synth_interrupt_keeps_its_rows_and_resumes(tmp_path, capsys, monkeypatch):
    argv = [*SYNTH, "--n", "12", "--out", "cohort"]
    part = tmp_path / "cohort" / "parts" / "shard-0-of-1.jsonl"
    proc, log = _start(argv, tmp_path)
    _wait_for(proc, log, lambda: len(_rows(part)) >= 2, "two manifest rows")

    # A second writer on the same folder is refused at once, naming the first.
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"pid {proc.pid}" in err and "cohort" in err and len(err.strip().splitlines()) == 1, err

    _stop(proc, log, signal.SIGINT)
    before = _rows(part)
    assert 2 <= len(before) < 12 and not (tmp_path / "cohort" / "manifest.csv").exists()
    stamps = {r["file"]: (tmp_path / "cohort" / r["file"]).stat().st_mtime_ns for r in before}
    assert not lock_path(tmp_path / "cohort").exists()  # released on the way out

    proc, log = _start(argv, tmp_path, "rerun.txt")
    assert proc.wait(timeout=400) == 0, log.read_text()
    manifest = (tmp_path / "cohort" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 12
    for file, stamp in stamps.items():  # finished images were kept, not made again
        assert (tmp_path / "cohort" / file).stat().st_mtime_ns == stamp


# -------------------------------------------------------------------------- generate

def test_generate_sigterm_keeps_its_images_and_resumes(tmp_path, capsys, monkeypatch):
    argv = ["generate", "--labels", "pneumonia", "--n", "40", "--steps", "3", "--out", "gen"]

    def pngs() -> list[Path]:
        return sorted((tmp_path / "gen").glob("*.png"))

    proc, log = _start(argv, tmp_path)
    _wait_for(proc, log, lambda: len(pngs()) >= 1, "the first image")
    _stop(proc, log, signal.SIGTERM)
    kept = {p.name: p.stat().st_mtime_ns for p in pngs()}
    assert 1 <= len(kept) < 40 and not (tmp_path / "gen" / "generated.csv").exists()

    monkeypatch.chdir(tmp_path)  # other arguments would mix two sets of images: refused
    assert main([*argv[:6], "4", *argv[7:]]) == 2
    assert "gen: holds images made with other arguments (steps: 3 now 4)" in capsys.readouterr().err

    proc, log = _start(argv, tmp_path, "rerun.txt")
    assert proc.wait(timeout=400) == 0, log.read_text()
    assert len(pngs()) == 40 and "kept from before" in log.read_text()
    assert all((tmp_path / "gen" / name).stat().st_mtime_ns == t for name, t in kept.items())
    assert len((tmp_path / "gen" / "generated.csv").read_text().splitlines()) == 41


# ----------------------------------------------------------------------------- train

def test_train_interrupt_keeps_a_resumable_checkpoint(kermany_fixture, tmp_path, capsys,
                                                      monkeypatch):
    sets = [a for t in TINY for a in ("--set", t)] + ["--set", "decoder.steps=0"]
    argv = ["train", "all", "--data", str(kermany_fixture), *sets, "--out", "run"]
    ckpts = tmp_path / "run" / "checkpoints" / "stage1"

    def newest() -> int:
        return max((int(p.name[5:]) for p in ckpts.glob("step_*")), default=0)

    proc, log = _start([*argv, "--set", "train.steps=1000000"], tmp_path)
    _wait_for(proc, log, lambda: newest() >= 4, "a stage-1 checkpoint")

    monkeypatch.chdir(tmp_path)  # a second training run on the same folder is refused
    assert main([*argv, "--set", "train.steps=1000000"]) == 2
    err = capsys.readouterr().err
    assert f"pid {proc.pid}" in err and len(err.strip().splitlines()) == 1, err

    _stop(proc, log, signal.SIGINT)
    step = newest()
    kept = (ckpts / f"step_{step:08d}").stat().st_mtime_ns
    # Resume with a few more steps than the last checkpoint: training continues from it.
    proc, log = _start([*argv, "--set", f"train.steps={step + 2}"], tmp_path, "rerun.txt")
    assert proc.wait(timeout=400) == 0, log.read_text()
    assert json.loads((tmp_path / "run" / "denoiser" / "config.json").read_text())["meta"]["steps"] \
        == step + 2
    if (ckpts / f"step_{step:08d}").exists():  # not pruned: it was not written again
        assert (ckpts / f"step_{step:08d}").stat().st_mtime_ns == kept


def test_train_classifier_interrupt_resumes_to_the_same_classifier(kermany_fixture, tmp_path,
                                                                    capsys, monkeypatch):
    """Killed mid-run and rerun as written, cxraug train classifier continues from its newest
    checkpoint and saves the classifier an uninterrupted run saves, byte for byte."""
    def argv(out: str, *more: str) -> list[str]:
        return ["train", "classifier", "--data", str(kermany_fixture), "--labels", "pneumonia",
                "--arch", "resnet10t", "--image-size", "32", "--epochs", "60", "--out", out,
                "--set", "classifier.batch_size=4", "--set", "classifier.patience=0", *more]

    proc, log = _start(argv("whole"), tmp_path, "whole.txt")
    assert proc.wait(timeout=400) == 0, log.read_text()
    ckpts = tmp_path / "clf" / "checkpoints"
    proc, log = _start(argv("clf"), tmp_path)
    _wait_for(proc, log, lambda: any(ckpts.glob("step_*")), "a classifier checkpoint")
    _stop(proc, log, signal.SIGINT)
    step = int(next(ckpts.glob("step_*")).name[5:])
    assert not (tmp_path / "clf" / "metrics.json").exists()

    monkeypatch.chdir(tmp_path)  # other settings do not resume it
    assert main(argv("clf", "--seed", "5")) == 2
    assert "interrupted classifier run with other settings" in capsys.readouterr().err

    proc, log = _start(argv("clf"), tmp_path, "rerun.txt")
    assert proc.wait(timeout=400) == 0, log.read_text()
    history = json.loads((tmp_path / "clf" / "history.json").read_text())
    assert history["steps"] > step and not ckpts.exists()
    for name in ("model/model.safetensors", "train_log.jsonl"):
        assert (tmp_path / "clf" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


# ----------------------------------------------------------------- eval, filter, label

def _reports_csv(folder: Path) -> Path:
    rows = ["id,report"] + [f"{i},\"FINDINGS: Right lower lobe opacity {i}. Small left effusion. "
                            "IMPRESSION: pneumonia.\"" for i in range(60000)]
    (folder / "reports.csv").write_text("\n".join(rows) + "\n")
    return folder / "reports.csv"


def _eval_inputs(folder: Path) -> list[str]:
    """A real image folder big enough for half a minute of work, and a small cohort."""
    for i in range(3000):
        write_png(folder / "real" / f"{i:05d}.png", size=64, seed=i)
    cohort = write_cohort(folder / "cohort", n=8)
    rows = (cohort / "manifest.csv").read_text().splitlines()
    (cohort / "manifest.csv").write_text("\n".join([rows[0] + ",target"] + [
        r + (",pneumonia" if r.split(",")[1] == "1" else ",negative") for r in rows[1:]]) + "\n")
    return ["--real", str(folder / "real"), "--synth", str(cohort)]


VAE = Path(__file__).resolve().parents[2] / "cxraug" / "assets" / "models" / "kermany-128" / "vae"

#: command -> (its arguments, what shows it is at work: a path under tmp_path or seconds).
AT_WORK = {
    "eval": (lambda t: ["eval", *_eval_inputs(t), "--extractor", "pixels", "--out", "eval.json"],
             8.0),
    "filter": (lambda t: ["filter", "--data", "sample:kermany", "--vae", str(VAE), "--out", "lnfs"],
               "lnfs/cache"),
    "label": (lambda t: ["label", str(_reports_csv(t)), "--out", "labels.csv"], 8.0),
    # bench's own code is untouched: the handler at the command line's boundary stops it too
    "bench": (lambda t: ["bench", "--data", "sample:kermany", "--arms", "real", "--real-frac", "1.0",
                         "--steps", "100000", "--arch", "resnet10t", "--image-size", "32",
                         "--out", "bench"], "bench/splits.csv"),
}


@pytest.mark.parametrize("name", list(AT_WORK))
def test_interrupt_stops_command(name, tmp_path):
    build, ready = AT_WORK[name]
    proc, log = _start(build(tmp_path), tmp_path)
    if isinstance(ready, str):
        _wait_for(proc, log, lambda: (tmp_path / ready).exists(), ready)
    else:  # no file shows progress: wait, and the command must still be running then
        t0 = time.monotonic()
        _wait_for(proc, log, lambda: time.monotonic() - t0 > ready, f"{ready} s of work")
    _stop(proc, log, signal.SIGINT)


def test_in_process_interrupt_restores_the_handlers():
    """``main`` called in-process (tests, notebooks) leaves the caller's handlers as they were."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["--version"]) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before

