"""benchmarks/expert_handoff.py: the handoff recomposes the sample exactly, and handing a model
to itself changes its images by no more than the sampler's restart."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import load_script, train_tiny_run

from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.sampling import initial_noise, make_sampler, noise_scheduler

handoff = load_script("expert_handoff")


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_clean_and_noise_recompose_the_sample(kind):
    pipe = SimpleNamespace(train_scheduler=noise_scheduler(prediction_type=kind))
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    ab = pipe.train_scheduler.alphas_cumprod[600]
    x = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    out = eps if kind == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0  # what a perfect model says
    got_x0, got_eps = handoff._clean_and_noise(pipe, out, x, ab)
    torch.testing.assert_close(got_x0, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_eps, eps, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="prediction type"):
        handoff._clean_and_noise(SimpleNamespace(train_scheduler=noise_scheduler(prediction_type="sample")), out, x, ab)


def test_a_model_handed_to_itself_draws_nearly_the_same_images(tmp_path_factory):
    _, run, _ = train_tiny_run(tmp_path_factory)
    pipe = DiffCXRPipeline.from_pretrained(run.root)
    pipe.sample_cfg.steps = 10
    prompts, hints, seeds = ["There is pneumonia."] * 3, ["There is pneumonia."] * 3, [1, 2, 3]
    alone = handoff.handoff(pipe, pipe, 0, prompts, hints, seeds).astype(float)
    handed = handoff.handoff(pipe, pipe, 4, prompts, hints, seeds).astype(float)
    other = handoff.handoff(pipe, pipe, 0, prompts, hints, [4, 5, 6]).astype(float)
    assert alone.shape == (3, 32, 32)
    # the handoff restarts the multistep solver (one first-order step): small next to another seed
    assert np.abs(handed - alone).mean() < 0.25 * np.abs(other - alone).mean()


def test_real_layouts_are_noised_to_the_kth_step_and_drawn_from_there(tmp_path_factory):
    """--structure real: each cohort row gets an official test image of its label (each once);
    the model's first call is at its K-th timestep, on the forward process of that image's latent."""
    import pandas as pd

    _, run, data = train_tiny_run(tmp_path_factory)
    pipe = DiffCXRPipeline.from_pretrained(run.root)
    pipe.sample_cfg.steps = 10
    manifest = pd.DataFrame({"Pneumonia": [1.0, None, 1.0]})
    z = handoff.real_latents(pipe, str(data), manifest)
    assert z.shape == (3, *pipe.space.latent_shape) and not torch.equal(z[0], z[2])
    calls, inner = [], pipe.model

    class Recorder(torch.nn.Module):
        def forward(self, x, t, *args, **kwargs):
            calls.append((x.clone(), t.clone()))
            return inner(x, t, *args, **kwargs)

    pipe.model = Recorder()
    seeds, prompts = [1, 2, 3], ["There is pneumonia.", "No finding.", "There is pneumonia."]
    images = handoff.handoff(None, pipe, 4, prompts, prompts, seeds, real=z)
    assert images.shape == (3, 32, 32) and len(calls) == 10 - 4
    sampler = make_sampler(pipe.sample_cfg.sampler, pipe.train_scheduler)
    sampler.set_timesteps(10)
    t4 = int(sampler.timesteps[4])
    ab = pipe.train_scheduler.alphas_cumprod[t4]
    expected = ab.sqrt() * z + (1 - ab).sqrt() * initial_noise(seeds, pipe.space.latent_shape)
    x, t = calls[0]
    assert int(t[0]) == t4
    torch.testing.assert_close(x[:3], expected)  # the conditional half of the guided batch


@pytest.mark.parametrize("name", ["expert_handoff", "real_layout_handoff"])
def test_committed_report_is_the_scripts_rendering_of_its_json(name):
    import json

    from conftest import REPO

    results = REPO / "benchmarks" / "results"
    rec = json.loads((results / f"{name}.json").read_text())
    assert (results / f"{name}.md").read_text() == handoff.markdown(rec)
    assert "/work" not in json.dumps(rec) and not rec["command"].count("/tmp/")
