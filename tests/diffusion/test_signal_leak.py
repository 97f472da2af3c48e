"""The sampler's signal leak: a Gaussian fitted to the training latents, mixed into the start
(stage 1 fitting it and the pipeline using it: tests/diffusion/test_diffusion_train.py)."""

import pytest
import torch

from cxraug.core.errors import WeightsError
from cxraug.diffusion.signal_leak import LEAK_NAME, SignalLeak


def _latents(n=4000, seed=0):
    """Correlated, non-stationary latents [n, 2, 4, 4]: a few strong axes over a weak floor."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.randn(6, 32, generator=g) * torch.tensor([4.0, 3.0, 2.0, 1.5, 1.0, 0.5])[:, None]
    z = torch.randn(n, 6, generator=g) @ axes + 0.3 * torch.randn(n, 32, generator=g)
    return (z + torch.linspace(-1, 1, 32)).view(n, 2, 4, 4)


def test_fit_draws_the_training_latents_mean_and_covariance():
    n = 3000
    z = _latents(n)
    leak = SignalLeak.fit(z, components=6)
    d = leak.draw(range(n)).view(n, -1)
    x = z.view(n, -1)
    assert ((d.mean(0) - x.mean(0)).abs() < 5 * x.std(0) / n ** 0.5).all()  # 5 standard errors
    cov_d, cov_x = torch.cov(d.T), torch.cov(x.T)
    assert (cov_d - cov_x).abs().max() < 0.1 * cov_x.abs().max()
    assert leak.info["components"] == 6 and leak.info["explained_variance"] > 0.9
    # without its principal axes (an isotropic draw of the same total variance) it is far off
    iso = x.mean(0) + torch.randn(n, 32) * x.var(0).mean().sqrt()
    assert (torch.cov(iso.T) - cov_x).abs().max() > 0.3 * cov_x.abs().max()


def test_draws_depend_on_the_image_seed_only_and_abar_mixes_them():
    leak = SignalLeak.fit(_latents(200), components=4)
    one = torch.cat([leak.draw([s]) for s in (3, 4, 5)])
    torch.testing.assert_close(leak.draw([3, 4, 5]), one)
    assert not torch.equal(one[0], one[1])
    noise = torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(leak.start(noise, [3, 4, 5], 0.0), noise)  # zero terminal SNR
    torch.testing.assert_close(leak.start(noise, [3, 4, 5], 1.0), one)
    a = 0.01
    torch.testing.assert_close(leak.start(noise, [3, 4, 5], a), a ** 0.5 * one + (1 - a) ** 0.5 * noise)
    with pytest.raises(WeightsError, match="fitted to latents"):
        leak.start(torch.randn(1, 4, 4, 4), [0], a)


def test_save_load_and_damaged_files(tmp_path):
    leak = SignalLeak.fit(_latents(100), components=3, info={"trained_on": "x"})
    back = SignalLeak.load(leak.save(tmp_path / LEAK_NAME))
    assert torch.equal(back.basis, leak.basis) and back.info["trained_on"] == "x"
    with pytest.raises(WeightsError, match="missing; fit it"):
        SignalLeak.load(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((tmp_path / LEAK_NAME).read_bytes()[:100])
    with pytest.raises(WeightsError, match="bad.safetensors"):
        SignalLeak.load(bad)
