"""Diff-CXR end to end on tiny configs: every stage trains, resumes exactly, and samples."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY, tiny_config, train_tiny_run

from cxraug.cli.main import main
from cxraug.core import config as C
from cxraug.core.errors import CxraugError
from cxraug.core.runs import RunDir
from cxraug.diffusion.config import DiffCXRConfig
from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.prepare import training_moments, write_signal_leak
from cxraug.diffusion.signal_leak import LEAK_NAME, SignalLeak
from cxraug.diffusion.stages import train_run
from cxraug.models.autoencoder import LatentSpace


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
    # the frozen components' checkpoints served a resume after a kill only; gone once saved
    assert sorted(p.name for p in (run.root / "checkpoints").iterdir()) == ["stage1", "stage2"]


def test_training_cost_is_recorded_per_stage_call_and_on_the_model_card(tiny_run, tmp_path):
    from cxraug.core.runs import COST_NAME, training_cost

    _, run, data = tiny_run
    calls = training_cost(run.root)
    assert [c["stage"] for c in calls] == ["vae", "text", "stage1", "stage2"]
    assert all(c["seconds"] > 0 and not c["interrupted"] and c["machine"]["cpu"] for c in calls)
    card = (run.root / "README.md").read_text()
    assert "## Training cost" in card and "| stage1 | " in card and "| all | " in card
    # a resumed stage adds its call; a finished run rerun records nothing
    cfg = tiny_config(data, "train.steps=6", "train.checkpoint_every=3")
    part = train_run(cfg, tmp_path / "part", ["1"], progress=False, max_steps=3)
    train_run(cfg, part.root, ["1"], progress=False)
    assert [c["stage"] for c in training_cost(part.root)] == ["vae", "text", "stage1", "stage1"]
    before = (part.root / COST_NAME).read_bytes()
    train_run(cfg, part.root, ["1"], progress=False)
    assert (part.root / COST_NAME).read_bytes() == before


def test_an_interrupted_stage_call_is_recorded_as_interrupted(tmp_path):
    from cxraug.core.runs import timed_stage, training_cost

    with pytest.raises(KeyboardInterrupt), timed_stage(tmp_path, "stage1"):
        raise KeyboardInterrupt
    with pytest.raises(CxraugError), timed_stage(tmp_path, "stage2"):  # a refusal: nothing recorded
        raise CxraugError("refused")
    assert [(c["stage"], c["interrupted"]) for c in training_cost(tmp_path)] == [("stage1", True)]


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
    full = train_run(cfg, tmp_path / "full", ["1"], progress=False)
    part = train_run(cfg, tmp_path / "part", ["1"], progress=False, max_steps=3)
    assert len(_losses(part.metrics(1))) == 3 and not (part.denoiser / "config.json").exists()
    resumed = train_run(cfg, tmp_path / "part", ["1"], progress=False)
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
        train_run(tiny_config(data, "train.lr=0.5"), run.root, ["1"], progress=False)


def test_more_steps_extend_a_finished_stage(tiny_run, tmp_path):
    _, _, data = tiny_run
    run = train_run(tiny_config(data), tmp_path / "ext", ["1"], progress=False)
    assert len(_losses(run.metrics(1))) == 4
    train_run(tiny_config(data, "train.steps=6", "sample.steps=2"), run.root, ["1"], progress=False)
    assert [json.loads(x)["step"] for x in run.metrics(1).read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_extending_stage1_retrains_the_adapter(tiny_run, tmp_path):
    """... and ``--stage 2`` refits the signal leak of the longer stage 1 (stage 1 trained as a
    prerequisite writes it as ``--stage 1`` does)."""
    _, run0, data = tiny_run
    shutil.copytree(run0.root, tmp_path / "copy")
    (tmp_path / "copy" / "denoiser" / LEAK_NAME).unlink()
    run = train_run(tiny_config(data, "train.steps=6"), tmp_path / "copy", ["2"], progress=False)
    assert [json.loads(x)["step"] for x in run.metrics(1).read_text().splitlines()][-1] == 6
    assert SignalLeak.load(run.denoiser / LEAK_NAME).info["n_latents"] > 0
    meta = json.loads((run.adapter / "config.json").read_text())["meta"]
    assert meta["base_steps"] == 6 and len(_losses(run.metrics(2))) == 2


def test_stage1_alone_extended_leaves_a_stale_adapter_unused(tiny_run, tmp_path, capsys):
    """`--stage 1` with more steps keeps the adapter on disk (nothing written is lost), but it was
    fitted to the old denoiser: sampling and cohorts go without it, saying so in one line, until
    `--stage 2` refits it."""
    from cxraug.cohorts.generator import LoadedGenerator

    _, run0, data = tiny_run
    shutil.copytree(run0.root, tmp_path / "copy")
    run = train_run(tiny_config(data, "train.steps=6"), tmp_path / "copy", ["1"], progress=False)
    assert (run.adapter / "config.json").is_file() and "4-step denoiser" in run.stale_adapter()
    with pytest.warns(UserWarning, match="sampling without it"):
        assert not DiffCXRPipeline.from_pretrained(run.root).has_adapter
    assert not LoadedGenerator.open(run.root).has_adapter
    assert run0.stale_adapter() is None and DiffCXRPipeline.from_pretrained(run0.root).has_adapter

    capsys.readouterr()
    assert main(["generate", "--model", str(run.root), "--report", "clear lungs", "--n", "1",
                 "--out", str(tmp_path / "g")]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "--stage 2" in err and "UserWarning" not in err


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
    from cxraug.diffusion.loss import loss_target_and_weight
    from cxraug.diffusion.sampling import noise_scheduler

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
    # truncated SNR: v's plain loss weighs the x0 error by snr + 1; these weights make it max(snr, 1)
    _, w = loss_target_and_weight(zero, z, eps, t, truncated_snr=True)
    a = zero.alphas_cumprod[t]
    snr = a / (1 - a).clamp_min(1e-12)
    torch.testing.assert_close(w * (snr + 1), torch.maximum(snr, torch.tensor(1.0)))
    assert w[2] == pytest.approx(1.0) and w[0] == pytest.approx(1.0, abs=1e-3)  # x0 at zero SNR, eps at low noise
    assert 0.5 < float(w[1]) < 1.0


def test_v_prediction_min_snr_zero_terminal_snr_train_and_sample(tiny_run, tmp_path):
    """The convergence options train both stages and the pipeline samples with the same target."""
    _, _, data = tiny_run
    cfg = tiny_config(data, "train.prediction_type=v_prediction", "train.snr_gamma=5",
                      "train.zero_terminal_snr=true", "train.steps=2", "adapter.steps=1")
    run = train_run(cfg, tmp_path / "v", ["1", "2"], progress=False)
    assert all(np.isfinite(_losses(run.metrics(1))))
    pipe = DiffCXRPipeline.from_pretrained(run.root)
    assert pipe.train_scheduler.config.prediction_type == "v_prediction"
    for sampler in ("dpm++", "ddim"):
        images = pipe(["There is pneumonia."], seeds=[0], sampler=sampler, steps=3)
        assert images.shape == (1, 32, 32)
    with pytest.raises(Exception, match="zero_terminal_snr needs"):
        tiny_config(data, "train.zero_terminal_snr=true")
    with pytest.raises(Exception, match="train.noise_offset -0.1: must be a finite number >= 0"):
        tiny_config(data, "train.noise_offset=-0.1")


def test_adapter_report_drop_retrains_only_the_adapter(tiny_run, tmp_path):
    """Changed adapter settings on a finished run retrain stage 2 on the same frozen stage 1;
    ``adapter.report_drop`` trains on hint-only samples too; stage 1 refuses it."""
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


def _old_inline_loss(model, stage, sched, z, ctx, hint, null, gen, tcfg):
    """The training step's loss exactly as train_denoiser computed it inline before DiffusionLoss
    (same draws from ``gen`` in the same order, same arithmetic)."""
    import torch.nn.functional as F

    from cxraug.diffusion.loss import loss_target_and_weight

    per_proc = z.shape[0]
    alphas = sched.alphas_cumprod
    t = torch.randint(0, tcfg.num_train_timesteps, (per_proc,), generator=gen)
    eps = torch.randn(z.shape, generator=gen)
    drop = torch.rand(per_proc, generator=gen) < tcfg.cond_drop
    ctx = torch.where(drop[:, None, None], null, ctx)
    hint = torch.where(drop[:, None, None], null, hint)
    if stage == 2 and tcfg.report_drop > 0:
        alone = torch.rand(per_proc, generator=gen) < tcfg.report_drop
        ctx = torch.where(alone[:, None, None], null, ctx)
    if tcfg.noise_offset > 0:  # offset noise as diffusers' training scripts add it (--noise_offset)
        eps = eps + tcfg.noise_offset * torch.randn((per_proc, z.shape[1], 1, 1), generator=gen)
    a = alphas[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * z + (1 - a).sqrt() * eps
    pred = model(x_t, t, ctx) if stage == 1 else model(x_t, t, ctx, hint)
    target, weight = loss_target_and_weight(sched, z, eps, t, tcfg.snr_gamma, tcfg.truncated_snr)
    per_sample = F.mse_loss(pred.float(), target, reduction="none").mean((1, 2, 3))
    return (per_sample * weight).mean()


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("extra", [{}, {"prediction_type": "v_prediction", "snr_gamma": 5.0,
                                        "zero_terminal_snr": True, "cond_drop": 0.5},
                                   {"snr_gamma": 5.0, "cond_drop": 0.5, "report_drop": 0.5},
                                   {"noise_offset": 0.1, "report_drop": 0.5},
                                   {"prediction_type": "v_prediction", "zero_terminal_snr": True,
                                    "truncated_snr": True}])
def test_diffusion_loss_equals_the_old_inline_loss_exactly(stage, extra):
    """DiffusionLoss through Denoiser(x_t, t, cond) gives the old loop's loss and gradients
    bit for bit, for the U-ViT and the adapter, and leaves the generator in the same state."""
    from cxraug.diffusion.config import TrainConfig
    from cxraug.diffusion.denoiser import Condition, Denoiser
    from cxraug.diffusion.loss import DiffusionLoss
    from cxraug.diffusion.sampling import scheduler_for
    from cxraug.models.adapter import DiseaseAdapter
    from cxraug.models.uvit import PRESETS, UViT

    tcfg = TrainConfig(**extra)
    if stage == 1:
        tcfg.report_drop = 0.0  # stage 1 has no hint to keep (refused by the config)
    torch.manual_seed(0)
    base = UViT(**{**PRESETS["tiny"], "depth": 4})
    if stage == 1:
        net, model, trainable = Denoiser.compose(base), base, base
    else:
        trainable = DiseaseAdapter.from_base(base)
        torch.nn.init.normal_(trainable.hint_proj.weight, std=0.1)  # a trained-looking adapter
        torch.nn.init.normal_(trainable.mid_zero.weight, std=0.1)
        net = Denoiser.compose(base, trainable)
        model = net.net
    g = torch.Generator().manual_seed(1)
    z, ctx, hint = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 16, generator=g), \
        torch.randn(6, 4, 16, generator=g)
    null = torch.randn(4, 16, generator=g)
    sched = scheduler_for(tcfg)

    gen_old, gen_new = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    old = _old_inline_loss(model, stage, sched, z, ctx, hint, null, gen_old, tcfg)
    grads_old = torch.autograd.grad(old, [p for p in trainable.parameters() if p.requires_grad])
    loss_fn = DiffusionLoss.from_config(tcfg, Condition(null, null))
    new = loss_fn(net, z, Condition(ctx, hint), gen_new).mean()
    grads_new = torch.autograd.grad(new, [p for p in trainable.parameters() if p.requires_grad])
    assert torch.equal(old, new)
    assert all(torch.equal(a, b) for a, b in zip(grads_old, grads_new))
    assert torch.equal(gen_old.get_state(), gen_new.get_state())
    assert loss_fn.prediction_type == tcfg.prediction_type


def test_sampler_calls_both_stages_through_one_signature():
    """sample() with Denoiser(x_t, t, cond) equals the old sampler's two-branch calls exactly."""
    from cxraug.diffusion.denoiser import Condition, Denoiser
    from cxraug.diffusion.sampling import make_sampler, noise_scheduler, sample
    from cxraug.models.adapter import ControlledUViT, DiseaseAdapter
    from cxraug.models.uvit import PRESETS, UViT

    torch.manual_seed(0)
    base = UViT(**PRESETS["tiny"]).eval()
    adapter = DiseaseAdapter.from_base(base)
    torch.nn.init.normal_(adapter.hint_proj.weight, std=0.1)
    torch.nn.init.normal_(adapter.mid_zero.weight, std=0.1)
    g = torch.Generator().manual_seed(3)
    noise, ctx, hint = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 16, generator=g), \
        torch.randn(2, 4, 16, generator=g)
    null = torch.randn(4, 16, generator=g)

    def old_sample(model, hnt, guidance):  # the sampler's loop as it was before Condition
        sched = make_sampler("dpm++", noise_scheduler())
        sched.set_timesteps(3)
        guided = guidance != 1.0
        c = torch.cat([ctx, null.expand(2, *null.shape)]) if guided else ctx
        h = None if hnt is None else (torch.cat([hnt, null.expand(2, *null.shape)]) if guided else hnt)
        x = noise * sched.init_noise_sigma
        with torch.inference_mode():
            for t in sched.timesteps:
                inp = sched.scale_model_input(torch.cat([x, x]) if guided else x, t)
                tt = t.expand(inp.shape[0])
                eps = model(inp, tt, c) if h is None else model(inp, tt, c, h)
                if guided:
                    eps_c, eps_u = eps.chunk(2)
                    eps = eps_u + guidance * (eps_c - eps_u)
                x = sched.step(eps, t, x).prev_sample
        return x

    for guidance in (2.0, 1.0):
        for ada, h in ((None, None), (adapter, hint)):
            new = sample(Denoiser.compose(base, ada), make_sampler("dpm++", noise_scheduler()), noise,
                         Condition(ctx, h), Condition(null, null), 3, guidance)
            old = old_sample(base if ada is None else ControlledUViT(base, ada), h, guidance)
            assert torch.equal(old, new)
    with pytest.raises(ValueError, match="needs a hint"):
        Denoiser.compose(base, adapter)(noise, torch.zeros(2, dtype=torch.long), Condition(ctx))


def test_init_from_fine_tunes_another_runs_stage1(tiny_run, tmp_path):
    """``train.init_from``: stage 1 starts from the source's U-ViT (here with another prediction
    type) on the source's latent space, report encoder and splits; the export records it."""
    from cxraug.diffusion.denoiser_training import init_weights
    from cxraug.models.uvit import UViT

    _, run0, data = tiny_run
    sets = ("train.prediction_type=v_prediction", "train.zero_terminal_snr=true", "train.steps=2",
            "adapter.steps=1")
    run = train_run(tiny_config(data, f"train.init_from={run0.root}", *sets), tmp_path / "ft",
                    ["1", "2"], progress=False)
    for part in ("vae", "text"):
        for f in (run0.root / part).iterdir():
            assert (run.root / part / f.name).read_bytes() == f.read_bytes()
    assert run.splits.read_bytes() == run0.splits.read_bytes()
    meta = json.loads((run.denoiser / "config.json").read_text())["meta"]
    assert meta["init_from"] == {"name": run0.root.name, "steps": 4} and meta["steps"] == 2
    assert f"fine-tuned from `{run0.root.name}`, 4 steps" in (run.root / "README.md").read_text()
    # the starting point is the source's weights: 2 steps later the U-ViT is still near them,
    # while the same 2 steps from scratch are not
    source = UViT.from_pretrained(run0.denoiser)
    loaded = UViT.from_pretrained(run0.denoiser)
    for p in loaded.parameters():
        p.data.zero_()
    assert init_weights(loaded, run0.root, str(run0.root)) == {"name": run0.root.name, "steps": 4}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values()))
    for p in loaded.parameters():  # a run resuming its checkpoint: nothing loaded, same record
        p.data.zero_()
    assert init_weights(loaded, run0.root, str(run0.root), load=False) == {"name": run0.root.name, "steps": 4}
    assert all(not p.any() for p in loaded.parameters())
    scratch = train_run(tiny_config(data, *sets), tmp_path / "scratch", ["1"], progress=False)

    def dist(folder):
        other = UViT.from_pretrained(folder).state_dict()
        return sum(float((other[k] - v).norm()) for k, v in source.state_dict().items())

    assert dist(run.denoiser) < 0.5 * dist(scratch.denoiser)
    # refusals name the field, before anything trains
    with pytest.raises(CxraugError, match="train.init_from .*no such run folder"):
        train_run(tiny_config(data, f"train.init_from={tmp_path / 'missing'}"), tmp_path / "m", ["1"],
                  progress=False)
    assert not (tmp_path / "m").exists()  # refused before the run folder is made
    shutil.copytree(run.root, tmp_path / "changed")
    latent = tmp_path / "changed" / "vae" / "cxraug_latent.json"
    latent.write_text(latent.read_text() + " ")  # e.g. the source's decoder was re-tuned since
    with pytest.raises(CxraugError, match="differs from vae/ of train.init_from"):
        train_run(tiny_config(data, f"train.init_from={run0.root}", *sets), tmp_path / "changed",
                  ["1"], progress=False)
    with pytest.raises(Exception, match="adapter.init_from: only stage 1"):
        tiny_config(data, f"adapter.init_from={run0.root}")


def test_init_from_keeps_the_sources_decoder_and_resumes_exactly(tiny_run, tmp_path, one_thread):
    """A fine-tuning run's latent space is the source's: the recipe's decoder tuning is not run
    on it (nor checked against it). Stopped after a checkpoint, the rerun resumes the run's own
    weights (not the source's) and ends where one uninterrupted pass does."""
    from cxraug.models.uvit import UViT

    _, run0, data = tiny_run
    sets = (f"train.init_from={run0.root}", "train.steps=3", "train.checkpoint_every=1",
            "decoder.steps=2", "decoder.batch_size=4", "decoder.disc_start=1")
    full = train_run(tiny_config(data, *sets), tmp_path / "full", ["1"], progress=False)
    for f in (run0.root / "vae").iterdir():
        assert (full.root / "vae" / f.name).read_bytes() == f.read_bytes()
    assert not full.checkpoints("decoder").exists()
    cut = train_run(tiny_config(data, *sets), tmp_path / "cut", ["1"], progress=False, max_steps=2)
    resumed = train_run(tiny_config(data, *sets), cut.root, ["1"], progress=False)
    a, b = (UViT.from_pretrained(r.denoiser).state_dict() for r in (full, resumed))
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=1e-5, atol=1e-6)
    assert json.loads((resumed.denoiser / "config.json").read_text())["meta"]["init_from"]["steps"] == 4


def test_stage1_fits_the_signal_leak_to_the_training_split_and_the_sampler_uses_it(tiny_run, tmp_path):
    cfg, run, data = tiny_run
    path = run.denoiser / LEAK_NAME
    leak = SignalLeak.load(path)
    space = LatentSpace.load(run.vae)
    train, moments = training_moments(cfg, run, space, progress=False)
    assert leak.info["latent_space"] == space.fingerprint()[:16] and leak.info["n_latents"] == len(train)
    # the mean of the training latents: their posterior means, up to 5 standard errors of the
    # posterior noise the fit draws (the latents stage 1 trains on are posterior samples)
    m = torch.from_numpy(np.array(moments)).float()
    mode = space.mode(m)
    post_std = space.normalise(m.chunk(2, 1)[0] + (0.5 * m.chunk(2, 1)[1]).exp()) - mode
    tol = 5 * post_std.pow(2).mean(0).sqrt() / len(m) ** 0.5 + 1e-4
    assert ((leak.mean - mode.mean(0)).abs() <= tol).all()
    before = path.read_bytes()
    assert write_signal_leak(cfg, run, progress=False) == path and path.read_bytes() == before  # kept

    plain = DiffCXRPipeline.from_pretrained(run.root)
    assert plain.leak is None
    copy = tmp_path / "leaky"
    shutil.copytree(run.root, copy)
    assert LatentSpace.load(copy / "vae").fingerprint() == space.fingerprint()  # caches survive a move
    C.save(C.load(DiffCXRConfig, copy / "config.yaml", ["sample.signal_leak=true"]), copy)
    pipe = DiffCXRPipeline.from_pretrained(copy)
    assert pipe.leak is not None
    reports = ["There is pneumonia.", "No acute findings."]
    a, b = pipe(reports, seeds=[5, 6], batch_size=1, steps=3), pipe(reports, seeds=[5, 6], batch_size=2, steps=3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert not np.array_equal(a, plain(reports, seeds=[5, 6], steps=3))


def test_a_missing_signal_leak_is_one_line(tiny_run, tmp_path, capsys):
    _, run, _ = tiny_run
    copy = tmp_path / "leaky"
    shutil.copytree(run.root, copy)
    C.save(C.load(DiffCXRConfig, copy / "config.yaml", ["sample.signal_leak=true"]), copy)
    (copy / "denoiser" / LEAK_NAME).unlink()
    code = main(["generate", "--model", str(copy), "--report", "There is pneumonia.", "--n", "1",
                 "--steps", "2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and LEAK_NAME in err and "Traceback" not in err
    assert "sample.signal_leak: false" in err


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_lr_schedule_warms_up_then_holds_or_decays_to_zero_and_resumes(schedule):
    """train.lr_schedule: the warm-up ramps to train.lr; constant holds it (the rule before the
    setting existed), cosine and linear reach 0 at train.steps; a scheduler restored from a
    checkpoint's state continues the same curve."""
    from cxraug.diffusion.config import TrainConfig
    from cxraug.diffusion.denoiser_training import lr_scheduler

    tcfg = TrainConfig(steps=40, warmup_steps=5, lr=2e-3, lr_schedule=schedule)
    tcfg.validate()

    def curve(sched, opt, n):
        out = []
        for _ in range(n):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    def fresh():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=tcfg.lr)
        return lr_scheduler(opt, tcfg), opt

    sched, opt = fresh()
    lrs = curve(sched, opt, 40)
    assert max(lrs) == pytest.approx(2e-3) and lrs[0] < lrs[3] < 2e-3
    if schedule == "constant":
        assert lrs == [min(1.0, (s + 1) / 5) * 2e-3 for s in range(40)]
    else:
        assert lrs[20] < 0.75 * 2e-3 and lrs[-1] < 0.05 * 2e-3 and sched.get_last_lr()[0] == pytest.approx(0.0)
        assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
    first, opt1 = fresh()
    curve(first, opt1, 17)
    again, opt2 = fresh()
    again.load_state_dict(first.state_dict())
    assert curve(again, opt2, 23) == lrs[17:]


def test_an_unknown_lr_schedule_is_refused_by_the_config_loader(tiny_run):
    with pytest.raises(Exception, match="train.lr_schedule: must be one of constant, cosine, linear; got 'step'"):
        tiny_config(tiny_run[2], "train.lr_schedule=step")


def test_karras_sigmas_setting_reaches_the_sampler(tiny_run, tmp_path):
    """sample.karras_sigmas=true in a run's config.yaml: the denoiser's last call is at t=0
    (the default spacing stops above it) and images change; with
    zero terminal SNR it is refused in one line."""
    cfg, run, data = tiny_run
    copy = tmp_path / "karras"
    shutil.copytree(run.root, copy)
    C.save(C.load(DiffCXRConfig, copy / "config.yaml", ["sample.karras_sigmas=true"]), copy)
    plain, pipe = DiffCXRPipeline.from_pretrained(run.root), DiffCXRPipeline.from_pretrained(copy)
    seen = []
    hook = pipe.model.register_forward_pre_hook(lambda mod, args: seen.append(int(args[1].flatten()[0])))
    a = pipe(["There is pneumonia."], seeds=[3], steps=5)
    hook.remove()
    assert seen[-1] == 0 and len(set(seen)) == 5
    assert not (a == plain(["There is pneumonia."], seeds=[3], steps=5)).all()
    with pytest.raises(Exception, match="sample.karras_sigmas: needs a finite largest noise level"):
        tiny_config(data, "train.prediction_type=v_prediction", "train.zero_terminal_snr=true",
                    "sample.karras_sigmas=true")
