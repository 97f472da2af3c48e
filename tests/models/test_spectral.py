"""The spectral loss (cxraug.models.spectral): it scores missing texture, not misplaced texture,
and its gradient puts fine-detail power back."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from cxraug.models.spectral import SpectralLoss


def _texture(seed: int = 0, n: int = 4, size: int = 64) -> torch.Tensor:
    """Smooth anatomy-like shading plus fine grain, in [-1, 1]: ``[n, 1, size, size]``."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal((n, size, size)), (0, 6, 6)) * 8
    grain = ndimage.gaussian_filter(rng.standard_normal((n, size, size)), (0, 0.7, 0.7)) * 0.6
    return torch.from_numpy(smooth + grain).float().clamp(-1, 1).unsqueeze(1)


def _high_band_power(x: torch.Tensor) -> float:
    """Mean power above a quarter of the sampling rate (the finest detail)."""
    f = torch.fft.fftshift(torch.fft.fft2(x - x.mean((-2, -1), keepdim=True)), dim=(-2, -1)).abs() ** 2
    n = x.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
    return f[..., (yy ** 2 + xx ** 2).sqrt() >= n / 4].mean().item()


def test_zero_for_identical_images_and_symmetric_inputs_checked():
    x = _texture()
    loss = SpectralLoss()
    assert loss(x, x).item() == 0.0
    with pytest.raises(ValueError, match="one shape"):
        loss(x, x[..., :48])
    with pytest.raises(ValueError, match="at least 32 px"):
        loss(x[..., :16, :16], x[..., :16, :16])
    with pytest.raises(ValueError, match="windows"):
        SpectralLoss(windows=())


def test_blur_costs_more_than_moving_the_grain():
    """L1 prefers a blurred copy to one whose fine grain is redrawn elsewhere (the mean of all
    placements is the blur); the spectral loss prefers the redrawn grain, which has real power."""
    x = _texture(0)
    blurred = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), (0, 0, 1.2, 1.2))).float()
    regrained = x - (x - blurred) + (_texture(1) - torch.from_numpy(
        ndimage.gaussian_filter(_texture(1).numpy(), (0, 0, 1.2, 1.2))).float())
    assert F.l1_loss(blurred, x) < F.l1_loss(regrained, x)
    loss = SpectralLoss()
    assert loss(regrained, x) < 0.5 * loss(blurred, x), (loss(regrained, x), loss(blurred, x))


def test_its_gradient_restores_fine_detail_power():
    x = _texture(2)
    start = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), (0, 0, 1.5, 1.5))).float()
    y = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=0.02)
    loss = SpectralLoss()
    first = loss(y, x).item()
    for _ in range(100):
        opt.zero_grad()
        loss(y, x).backward()
        opt.step()
    target, before, after = (_high_band_power(t.detach()) for t in (x, start, y))
    assert loss(y, x).item() < 0.5 * first
    assert before < 0.2 * target and 0.6 * target < after < 1.2 * target, (before, after, target)


def test_gradient_is_finite_on_flat_images():
    y = torch.zeros(2, 1, 32, 32, requires_grad=True)
    SpectralLoss()(y, _texture(n=2, size=32)).backward()
    assert torch.isfinite(y.grad).all()
