"""A write that fails for lack of space names the file, in one line, and leaves no temporary.

The processes run under a small file-size limit (``RLIMIT_FSIZE``): past it the kernel fails the
write with EFBIG, the same path through cxraug as a full disk's ENOSPC (neither carries a file
name of its own; torch and safetensors even turn it into other exception types).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

LIMIT = 4096  # bytes: more than any log line or settings file, less than one image


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, preexec_fn=_small_files, timeout=600, check=False)


@pytest.mark.slow
def test_generate_names_the_image_it_could_not_write(tmp_path):
    proc = _run(["-m", "cxraug.cli.main", "generate", "--labels", "pneumonia", "--n", "2",
                 "--steps", "2", "--out", "gen"], tmp_path)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert lines[-1].startswith("error: gen/00000.png: File too large; free some space"), lines
    assert "Traceback" not in proc.stderr
    assert [p.name for p in (tmp_path / "gen").iterdir()] == ["generate.json"]  # no temporary


def test_weights_and_metrics_name_their_file(tmp_path):
    """safetensors says ``SafetensorError: I/O error`` and the metrics log's buffered write an
    OSError without a name: both become an OSError naming the file."""
    code = """
import sys
from cxraug.core.progress import MetricsLog
from cxraug.models.uvit import UViT
for write in (lambda: UViT(width=64, depth=2, heads=2, latent_size=8, context_dim=8,
                           num_context_tokens=2).save_pretrained("model"),
              lambda: MetricsLog("metrics.jsonl").write(1, text="x" * 5000)):
    try:
        write()
    except OSError as e:
        print(e.filename, e.strerror)
"""
    proc = _run(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["model/model.safetensors File too large",
                                        "metrics.jsonl File too large"], proc.stdout


def test_training_checkpoint_names_its_file_and_keeps_the_last_complete_one(tmp_path):
    """The training kit's checkpoint write (torch.save of the optimiser turns EFBIG into a
    RuntimeError): an OSError naming the checkpoint, no temporary folder, the older one intact."""
    code = """
import torch
from cxraug.core.training import TrainState
small = torch.nn.Linear(4, 4)
TrainState(small, torch.optim.AdamW(small.parameters())).save("ckpt", 1, keep=2)
big = torch.nn.Linear(64, 64)  # its weights are larger than the file-size limit
try:
    TrainState(big, torch.optim.AdamW(big.parameters())).save("ckpt", 2, keep=2)
except OSError as e:
    print(e.filename, e.strerror)
"""
    proc = _run(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("ckpt/.tmp_step_00000002"), proc.stdout
    assert "File too large" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_00000001"]
