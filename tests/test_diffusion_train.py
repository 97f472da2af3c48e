"""Diff-CXR end to end on tiny configs: every stage trains, resumes exactly, and samples."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY, tiny_config, train_tiny_run

from cxraug.cli.main import main
from cxraug.core.errors import CxraugError
from cxraug.core.runs import RunDir
from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.run import train


def _losses(path):
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """All stages trained once for this module (see conftest.train_tiny_run)."""
    return train_tiny_run(tmp_path_factory)


def test_all_stages_write_components(tiny_run):
    cfg, run, _ = tiny_run
    for folder in (run.denoiser, run.adapter, run.text):
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert (run.vae / "cxraug_latent.json").is_file()
    assert (run.root / "config.yaml").is_file() and (run.root / "README.md").is_file()
    assert len(_losses(run.metrics(1))) == 4 and len(_losses(run.metrics(2))) == 2
    assert all(np.isfinite(_losses(run.metrics(1))))
    assert sorted(p.name for p in (run.checkpoints(1)).iterdir()) == ["step_00000002", "step_00000004"]


def test_pipeline_from_run_is_batch_invariant(tiny_run):
    _, run, _ = tiny_run
    pipe = DiffCXRPipeline.from_pretrained(run.root)
    assert pipe.has_adapter
    reports = ["There is pneumonia.", "No acute findings.", "Right lower lobe opacity."]
    one = pipe(reports, seeds=[5, 6, 7], batch_size=1)
    three = pipe(reports, seeds=[5, 6, 7], batch_size=3)
    assert one.shape == (3, 32, 32) and one.dtype == np.uint8
    assert np.abs(one.astype(int) - three.astype(int)).max() <= 1
    other = pipe(reports[:1], seeds=[8])
    assert not np.array_equal(other[0], one[0])


def test_resume_continues_the_same_loss_curve(tiny_run, tmp_path):
    _, _, data = tiny_run
    cfg = tiny_config(data, "train.steps=6", "train.checkpoint_every=3")
    full = train(cfg, tmp_path / "full", ["1"], progress=False)
    part = train(cfg, tmp_path / "part", ["1"], progress=False, max_steps=3)
    assert len(_losses(part.metrics(1))) == 3 and not (part.denoiser / "config.json").exists()
    resumed = train(cfg, tmp_path / "part", ["1"], progress=False)
    np.testing.assert_allclose(_losses(resumed.metrics(1)), _losses(full.metrics(1)), rtol=1e-5)


def test_stage2_base_is_frozen_stage1(tiny_run):
    from cxraug.models.adapter import ControlledUViT
    from cxraug.models.uvit import UViT

    _, run, _ = tiny_run
    model = ControlledUViT.load(run.denoiser, run.adapter)
    stage1 = UViT.from_pretrained(run.denoiser)
    for (name, p), q in zip(model.base.state_dict().items(), stage1.state_dict().values()):
        assert torch.equal(p, q), name
    assert not any(p.requires_grad for p in model.base.parameters())


def test_changed_config_refused_on_resume(tiny_run, tmp_path):
    cfg, run, data = tiny_run
    with pytest.raises(CxraugError, match="another config"):
        train(tiny_config(data, "train.lr=0.5"), run.root, ["1"], progress=False)


def test_more_steps_extend_a_finished_stage(tiny_run, tmp_path):
    _, _, data = tiny_run
    run = train(tiny_config(data), tmp_path / "ext", ["1"], progress=False)
    assert len(_losses(run.metrics(1))) == 4
    train(tiny_config(data, "train.steps=6", "sample.steps=2"), run.root, ["1"], progress=False)
    assert [json.loads(x)["step"] for x in run.metrics(1).read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_extending_stage1_retrains_the_adapter(tiny_run, tmp_path):
    import shutil

    _, run0, data = tiny_run
    shutil.copytree(run0.root, tmp_path / "copy")
    run = train(tiny_config(data, "train.steps=6"), tmp_path / "copy", ["2"], progress=False)
    assert [json.loads(x)["step"] for x in run.metrics(1).read_text().splitlines()][-1] == 6
    meta = json.loads((run.adapter / "config.json").read_text())["meta"]
    assert meta["base_steps"] == 6 and len(_losses(run.metrics(2))) == 2


def test_accelerate_launch_two_cpu_processes(tiny_run, tmp_path):
    """`accelerate launch --cpu --num_processes 2` trains two steps of stage 1."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    _, run0, data = tiny_run
    out = tmp_path / "ddp"
    shutil.copytree(run0.root, out, ignore=shutil.ignore_patterns("denoiser", "adapter", "checkpoints",
                                                                   "metrics*.jsonl"))
    launcher = Path(sys.executable).with_name("accelerate")
    sets = [a for s in [f"data.data={data}", *TINY, "train.steps=2", "train.checkpoint_every=2"]
            for a in ("--set", s)]
    proc = subprocess.run([str(launcher), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "cxraug.cli.main",
                           "train", "denoiser", "--stage", "1", "--out", str(out), *sets],
                          capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "denoiser" / "model.safetensors").is_file()


def test_loss_targets_and_min_snr_weights():
    """epsilon and v targets match diffusers' definitions; Min-SNR-gamma weights by hand."""
    from cxraug.diffusion.sampling import loss_target_and_weight, noise_scheduler

    z, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([0, 500, 999])
    eps_s = noise_scheduler()
    target, w = loss_target_and_weight(eps_s, z, eps, t)
    assert torch.equal(target, eps) and torch.equal(w, torch.ones(3))
    v_s = noise_scheduler(prediction_type="v_prediction")
    target, w = loss_target_and_weight(v_s, z, eps, t, snr_gamma=5.0)
    torch.testing.assert_close(target, v_s.get_velocity(z, eps, t))
    a = v_s.alphas_cumprod[t]
    snr = a / (1 - a)
    torch.testing.assert_close(w, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
    _, w_eps = loss_target_and_weight(eps_s, z, eps, t, snr_gamma=5.0)
    assert w_eps[0] < 0.01 and w_eps[2] == pytest.approx(1.0)  # low noise down-weighted, high kept
    zero = noise_scheduler(prediction_type="v_prediction", zero_terminal_snr=True)
    assert float(zero.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-6)


def test_v_prediction_min_snr_zero_terminal_snr_train_and_sample(tiny_run, tmp_path):
    """The convergence options train both stages and the pipeline samples with the same target."""
    _, _, data = tiny_run
    cfg = tiny_config(data, "train.prediction_type=v_prediction", "train.snr_gamma=5",
                      "train.zero_terminal_snr=true", "train.steps=2", "adapter.steps=1")
    run = train(cfg, tmp_path / "v", ["1", "2"], progress=False)
    assert all(np.isfinite(_losses(run.metrics(1))))
    pipe = DiffCXRPipeline.from_pretrained(run.root)
    assert pipe.train_scheduler.config.prediction_type == "v_prediction"
    for sampler in ("dpm++", "ddim"):
        images = pipe(["There is pneumonia."], seeds=[0], sampler=sampler, steps=3)
        assert images.shape == (1, 32, 32)
    with pytest.raises(Exception, match="zero_terminal_snr needs"):
        tiny_config(data, "train.zero_terminal_snr=true")


def test_adapter_report_drop_retrains_only_the_adapter(tiny_run, tmp_path):
    """Changed adapter settings on a finished run retrain stage 2 on the same frozen stage 1;
    ``adapter.report_drop`` trains on hint-only samples too; stage 1 refuses it."""
    import shutil

    _, run0, data = tiny_run
    shutil.copytree(run0.root, tmp_path / "rd")
    denoiser = (run0.denoiser / "model.safetensors").read_bytes()
    code = main(["train", "--stage", "2", "--from", str(tmp_path / "rd"), "--set",
                 "adapter.report_drop=0.9", "--set", "train.log_every=5"])  # as the README says
    assert code == 0
    run = RunDir(tmp_path / "rd")
    assert (run.denoiser / "model.safetensors").read_bytes() == denoiser  # stage 1 untouched
    assert _losses(run.metrics(1)) == _losses(run0.metrics(1))
    assert len(_losses(run.metrics(2))) == len(_losses(run0.metrics(2)))  # restarted, not appended
    assert _losses(run.metrics(2)) != _losses(run0.metrics(2))  # same seeds, other conditioning
    with pytest.raises(Exception, match="set adapter.report_drop instead"):
        tiny_config(data, "train.report_drop=0.5")
    with pytest.raises(Exception, match="adapter.report_drop 1.5: must be in"):
        tiny_config(data, "adapter.report_drop=1.5")
