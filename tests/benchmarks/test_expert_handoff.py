"""benchmarks/expert_handoff.py: the handoff recomposes the sample exactly, and handing a model
to itself changes its images by no more than the sampler's restart."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import load_script, train_tiny_run

from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.sampling import noise_scheduler

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


def test_committed_report_is_the_scripts_rendering_of_its_json():
    import json

    from conftest import REPO

    results = REPO / "benchmarks" / "results"
    rec = json.loads((results / "expert_handoff.json").read_text())
    assert (results / "expert_handoff.md").read_text() == handoff.markdown(rec)
    assert "/work" not in json.dumps(rec) and not rec["command"].count("/tmp/")
