"""Sampler construction: the noise levels dpm++ and DDIM visit (the sampling loop itself, and the
pipeline using these settings: tests/diffusion/test_diffusion_train.py)."""

import pytest
import torch

from cxraug.diffusion.sampling import make_sampler, noise_scheduler


def _sigmas(train):
    a = train.alphas_cumprod
    return ((1 - a) / a).sqrt()


def test_karras_sigmas_end_at_the_smallest_noise_level_instead_of_jumping_from_sigma_0_2():
    """sample.karras_sigmas: with the scaled-linear schedule and 25 steps, the default spacing's
    last model call is at t=40 (sigma ~0.2) and the solver jumps to 0; Karras spacing visits
    more low-noise levels, down to the schedule's smallest, and starts at the same largest one."""
    train = noise_scheduler()
    default, karras = make_sampler("dpm++", train), make_sampler("dpm++", train, karras_sigmas=True)
    default.set_timesteps(25)
    karras.set_timesteps(25)
    sig = _sigmas(train)
    assert int(default.timesteps[-1]) == 40 and float(sig[40]) == pytest.approx(0.2, abs=0.01)
    assert int(karras.timesteps[-1]) == 0 and int(karras.timesteps[0]) == int(default.timesteps[0]) == 999
    assert float(karras.sigmas[-2]) == pytest.approx(float(sig[0]), rel=1e-3)
    low = lambda s: int(((s.sigmas[:-1] > 0) & (s.sigmas[:-1] < 0.2)).sum())  # noqa: E731
    assert low(default) <= 1 and low(karras) >= 5
    assert len(karras.timesteps) == len(default.timesteps) == 25
    # DDIM has no Karras spacing: the flag leaves it as it is
    d1, d2 = make_sampler("ddim", train), make_sampler("ddim", train, karras_sigmas=True)
    d1.set_timesteps(25)
    d2.set_timesteps(25)
    assert torch.equal(d1.timesteps, d2.timesteps)
