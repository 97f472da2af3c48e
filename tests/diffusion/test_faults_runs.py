"""Damaged run folders and misused --out (issue #14): one line on stderr naming the file and
the fix, exit code != 0, and nothing of the user's lost. One tiny run is trained per module;
each test damages its own copy."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY, tiny_config, train_tiny_run

from cxraug.cli.main import main
from cxraug.core.artifacts import load_weights
from cxraug.core.errors import WeightsError
from cxraug.core.runs import RunDir
from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.stages import train_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """All stages trained once for this module (4 stage-1 steps, checkpoints at 2 and 4)."""
    return train_tiny_run(tmp_path_factory)


def _copy(run0: RunDir, dest) -> RunDir:
    shutil.copytree(run0.root, dest, ignore=shutil.ignore_patterns("samples"))
    return RunDir(dest)


def _tree(root) -> dict:
    """Every file under ``root`` -> its bytes (what "nothing lost or added" compares)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "random": os.urandom(len(data)),
                      "empty": b""}[how])


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _steps(run: RunDir, stage: int = 1) -> list[int]:
    return [json.loads(x)["step"] for x in run.metrics(stage).read_text().splitlines()]


def _generates(run: RunDir) -> None:
    images = DiffCXRPipeline.from_pretrained(run.root)(["There is pneumonia."], seeds=[0])
    assert images.shape == (1, 32, 32)


def _cli_sets(data, *extra) -> list[str]:
    return [a for s in [f"data.data={data}", *TINY, *extra] for a in ("--set", s)]


# ------------------------------------------------------------------ damaged component weights

@pytest.mark.parametrize("name,how", [
    ("denoiser/model.safetensors", "truncated"), ("adapter/model.safetensors", "random"),
    ("vae/diffusion_pytorch_model.safetensors", "truncated"), ("text/model.safetensors", "random"),
    ("denoiser/model.safetensors", "empty"), ("denoiser/config.json", "empty"),
])
def test_generate_names_a_damaged_component_file(tiny_run, tmp_path, capsys, name, how):
    run = _copy(tiny_run[1], tmp_path / "run")
    _damage(run.root / name, how)
    before = _tree(run.root)
    out = tmp_path / "gen"
    code = main(["generate", "--model", str(run.root), "--report", "There is pneumonia.",
                 "--n", "1", "--out", str(out)])
    line = _one_line(capsys)
    assert code == 2 and str(run.root / name) in line and "copy the file again" in line, line
    assert not out.exists() and _tree(run.root) == before
    with pytest.raises(WeightsError, match=name.split("/")[0]):
        DiffCXRPipeline.from_pretrained(run.root)


@pytest.mark.parametrize("name", ["denoiser/model.safetensors", "text/model.safetensors"])
def test_export_names_a_damaged_component_file(tiny_run, tmp_path, capsys, name):
    run = _copy(tiny_run[1], tmp_path / "run")
    _damage(run.root / name, "truncated")
    before, out = _tree(run.root), tmp_path / "exported"
    code = main(["export", str(run.root), "--out", str(out)])
    line = _one_line(capsys)
    assert code == 2 and str(run.root / name) in line and "copy the file again" in line, line
    assert _tree(run.root) == before and not (out / "config.yaml").exists()


def test_load_weights_names_the_file(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(os.urandom(300))
    with pytest.raises(WeightsError, match="model.safetensors: truncated or corrupt"):
        load_weights(bad)


# ------------------------------------------------------------------ damaged checkpoints on resume

@pytest.mark.parametrize("name,how", [("model.safetensors", "truncated"), ("ema.safetensors", "random"),
                                      ("optimizer.pt", "truncated"), ("state.json", "empty")])
def test_extending_skips_a_damaged_newest_checkpoint(tiny_run, tmp_path, capsys, name, how):
    """More steps on a run whose newest checkpoint is damaged: resume from the one before, say so
    in one line, and end with a complete longer run (the same curve where the steps overlap)."""
    _, run0, data = tiny_run
    run = _copy(run0, tmp_path / "run")
    _damage(run.checkpoints(1) / "step_00000004" / name, how)
    capsys.readouterr()
    train_run(tiny_config(data, "train.steps=6"), run.root, ["1"], progress=False)
    line = _one_line(capsys)
    assert "skipped damaged checkpoint step_00000004" in line and name in line, line
    assert "resuming from step_00000002" in line
    assert _steps(run) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([json.loads(x)["loss"] for x in run.metrics(1).read_text().splitlines()][:4],
                               [json.loads(x)["loss"] for x in run0.metrics(1).read_text().splitlines()],
                               rtol=1e-5)
    assert json.loads((run.denoiser / "config.json").read_text())["meta"]["steps"] == 6
    _generates(run)


def test_rerun_with_a_damaged_newest_checkpoint_retrains_the_same_weights(tiny_run, tmp_path, capsys):
    _, run0, data = tiny_run
    run = _copy(run0, tmp_path / "run")
    (run.checkpoints(1) / "step_00000004" / "state.json").write_text("")
    _damage(run.denoiser / "model.safetensors", "truncated")  # rerunning stage 1 rewrites it
    train_run(tiny_config(data), run.root, ["1"], progress=False)
    assert "resuming from step_00000002" in _one_line(capsys)
    ours, theirs = load_weights(run.denoiser / "model.safetensors"), load_weights(run0.denoiser / "model.safetensors")
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-5, atol=1e-6)
    _generates(run)


class _Touch:
    """Unpickling this creates a file: the proof a checkpoint was unpickled as code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_checkpoint_optimizer_pickle_is_never_run(tiny_run, tmp_path):
    from cxraug.core.training import DamagedCheckpoint, read_checkpoint

    ckpt = tmp_path / "step_00000002"
    shutil.copytree(tiny_run[1].checkpoints(1) / "step_00000002", ckpt)
    marker = tmp_path / "unpickled"
    torch.save({"state": {}, "param_groups": [], "x": _Touch(marker)}, ckpt / "optimizer.pt")
    with pytest.raises(DamagedCheckpoint, match="optimizer.pt is truncated or corrupt"):
        read_checkpoint(ckpt)
    assert not marker.exists()


def test_no_intact_checkpoint_is_one_line_and_the_run_still_generates(tiny_run, tmp_path, capsys):
    """Today's data loss: extending with every checkpoint damaged deleted denoiser/ and crashed."""
    _, run0, data = tiny_run
    run = _copy(run0, tmp_path / "run")
    for step in ("step_00000002", "step_00000004"):
        _damage(run.checkpoints(1) / step / "model.safetensors", "truncated")
    before = _tree(run.root)
    code = main(["train", "--stage", "1", "--from", str(run.root), "--set", "train.steps=6"])
    line = _one_line(capsys)
    assert code == 2 and "checkpoints/stage1: no intact checkpoint" in line, line
    assert "step_00000004 (model.safetensors" in line and "step_00000002" in line
    assert _tree(run.root) == before
    _generates(run)
    # the same run with its own config is finished (its export is intact): nothing to resume
    train_run(tiny_config(data), run.root, ["1"], progress=False)
    assert {k: v for k, v in _tree(run.root).items() if k != "README.md"} == \
        {k: v for k, v in before.items() if k != "README.md"}
    _generates(run)


# ------------------------------------------------------------------ fewer steps, foreign --out

@pytest.mark.parametrize("setting,has", [("train.steps=2", "4 stage-1 steps"), ("adapter.steps=1", "2 adapter steps")])
def test_fewer_steps_than_trained_is_refused(tiny_run, tmp_path, capsys, setting, has):
    """Fewer steps used to exit 0 keeping the longer run's weights under the shorter label."""
    run = _copy(tiny_run[1], tmp_path / "run")
    before = _tree(run.root)
    code = main(["train", "--stage", "1", "--from", str(run.root), "--set", setting])
    line = _one_line(capsys)
    assert code == 2 and has in line and "new --out" in line, line
    assert (run.root / "config.yaml").read_bytes() == before["config.yaml"]
    assert (run.root / "README.md").read_bytes() == before["README.md"]
    assert _tree(run.root) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_out_that_is_not_a_run_is_refused(tiny_run, tmp_path, capsys, overwrite):
    mine = tmp_path / "thesis"
    (mine / "figures").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes\n")
    (mine / "figures" / "f1.png").write_bytes(b"\x89PNG not really")
    before = _tree(mine)
    code = main(["train", "--out", str(mine), *_cli_sets(tiny_run[2]), *(["--overwrite"] * overwrite)])
    line = _one_line(capsys)
    assert code == 2 and "not a cxraug run" in line and str(mine) in line, line
    assert _tree(mine) == before and sorted(p.name for p in mine.iterdir()) == ["figures", "notes.txt"]


def test_out_below_a_file_is_refused(tiny_run, tmp_path, capsys):
    (tmp_path / "somefile.txt").write_text("keep me\n")
    code = main(["train", "--out", str(tmp_path / "somefile.txt" / "run"), *_cli_sets(tiny_run[2])])
    line = _one_line(capsys)
    assert code == 2 and f"{tmp_path / 'somefile.txt'} is a file" in line, line
    assert (tmp_path / "somefile.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile.txt"]
