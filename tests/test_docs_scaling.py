"""The job-array recipes of docs/scaling.md, run as a scheduler runs them: separate CPU processes,
started together, on one shared output folder. Two ``--shard`` processes make the same cohort as
one process; two ``--job`` shares of a bench leave ``results.json`` once both are done, and a
final run without ``--job`` trains nothing more."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import train_tiny_run, write_cohort

from cxraug.cohorts.store import read_manifest


def start(*args: str, cwd) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cxraug.cli.main", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(*procs: subprocess.Popen) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-2000:]
        outs.append(out)
    return outs


def wait_for(path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``path`` holds a complete YAML mapping (or ``proc`` has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if isinstance(yaml.safe_load(path.read_text()), dict):
                return
        except (OSError, yaml.YAMLError):
            pass
        time.sleep(0.2)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory)[1]


def test_synth_shards_as_parallel_processes_make_the_one_process_cohort(tiny_run, tmp_path):
    common = ("synth", "--model", str(tiny_run.root), "--labels", "pneumonia", "--n", "8",
              "--steps", "3", "--batch-size", "2", "--prompts", "paper")
    finish(start(*common, "--out", "one", cwd=tmp_path))
    shards = [start(*common, "--out", "sharded", "--shard", f"{i}/2", cwd=tmp_path) for i in range(2)]
    finish(*shards)

    one, sharded = (read_manifest(tmp_path / d / "manifest.csv") for d in ("one", "sharded"))
    scores = ["nn_cosine", "nn_ssim"]  # bf16 products may move a gate score in its last digits
    assert one.drop(columns=["seconds", *scores]).equals(sharded.drop(columns=["seconds", *scores]))
    np.testing.assert_allclose(one[scores].astype(float), sharded[scores].astype(float), atol=0.01)
    assert sorted(p.name for p in (tmp_path / "sharded" / "parts").iterdir()) == \
        ["shard-0-of-2.jsonl", "shard-1-of-2.jsonl"]
    assert (tmp_path / "sharded" / "cohort.json").is_file()


@pytest.mark.no_templates  # the bench reads a cohort folder: no prompts
def test_bench_job_shares_as_parallel_processes_finish_the_sweep(kermany_fixture, tmp_path):
    cohort = write_cohort(tmp_path / "cohort")
    common = ("bench", "--data", str(kermany_fixture), "--synth", str(cohort), "--real-frac", "0.5,1.0",
              "--arms", "real,real+dup,real+synth", "--arch", "resnet10t", "--image-size", "16",
              "--steps", "2", "--set", "min_positive=1", "--set", "n_boot=20", "--out", "bench")
    first = start(*common, "--job", "0/2", cwd=tmp_path)
    # the second share starts once the first has recorded the settings (config.yaml is written in
    # place, so a share reading it mid-write would take it for a damaged file)
    wait_for(tmp_path / "bench" / "config.yaml", first)
    finish(first, start(*common, "--job", "1/2", cwd=tmp_path))
    results = tmp_path / "bench" / "results.json"
    assert results.is_file()  # written by whichever share finished last
    cells = json.loads(results.read_text())["cells"]
    assert {(c["frac"], c["arm"]) for c in cells} == {(f, a) for f in (0.5, 1.0)
                                                       for a in ("real", "real+dup", "real+synth")}
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "bench").rglob("result.json")}
    assert len(before) == 6
    finish(start(*common, cwd=tmp_path))  # the array's last step: finishes or just reports
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "bench").rglob("result.json")} == before
