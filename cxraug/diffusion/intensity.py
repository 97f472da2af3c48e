"""A coarse intensity map from the generator's pixel distribution to its training images'.

A latent diffusion model sampled from pure noise regresses its images' coarse layout towards a
grey middle (see :mod:`cxraug.diffusion.signal_leak`): the lungs are not dark enough, the
mediastinum and bones not bright enough, so the lowest spatial frequencies and the deepest blacks
fall short of real radiographs even where the fine detail is right. This map corrects the
coarse layout only:

    low = gaussian_blur(x, sigma)                     # the coarse layout, x in [0, 1]
    y   = x + F_real^-1(F_gen(low)) - low             # its intensities moved to the real ones

``F_gen`` is the pooled distribution of ``low`` over images the generator drew for training rows
(their own prompts and labels), ``F_real`` the same over every training image: a monotone quantile
map (histogram matching) of the blurred images, fitted to the training split only. Both are read
from histograms of :data:`BINS` bins accumulated a chunk of images at a time, so the real side
can hold a whole training split in constant memory. The pooled distribution mixes the spread
between images with the spread within them, so matching it overshoots each image's own brightest
and darkest percentiles where the generator's images differ less from one another than real ones;
``estimator="per_image"`` instead maps the average of each image's own quantile function
(:func:`per_image_quantiles`) on both sides.
The fine residual ``x - low`` is kept as the denoiser drew it; ``sigma = 0`` is plain pooled
histogram matching of the pixels.

    imap = IntensityMap.fit(generated, real, sigma=16)     # uint8 [N, S, S] each
    imap.save(run.denoiser / INTENSITY_NAME); imap = IntensityMap.load(...)
    x = imap.apply(x)                                      # [B, 1, S, S] in the model range [-1, 1]

It is fitted once per trained generator and sampling setting (``sample.intensity_match``, at the
end of ``cxraug train``); it copies no image (1,025 quantiles of two pooled distributions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torchvision.transforms.functional import gaussian_blur

from cxraug.core.artifacts import load_tables
from cxraug.core.errors import WeightsError

#: The file in a run's (or export's) ``denoiser/`` folder.
INTENSITY_NAME = "intensity_map.safetensors"
QUANTILES = 1025
#: Histogram bins on [0, 1] behind each quantile table (1 / 4096 of the intensity range apart).
BINS = 4096


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian low-pass of ``[B, 1, H, W]`` (reflected borders); ``sigma = 0``: ``x`` itself.
    Applied as two 1-D passes (the Gaussian is separable: 2k instead of k^2 products a pixel)."""
    if sigma <= 0:
        return x
    k = 2 * round(3 * sigma) + 1
    k = min(k, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)  # reflect padding needs k // 2 < side
    s = [float(sigma), float(sigma)]
    return gaussian_blur(gaussian_blur(x, [k, 1], s), [1, k], s)


def _unit(images: np.ndarray) -> torch.Tensor:
    """``uint8 [N, S, S]`` -> ``float [N, 1, S, S]`` in [0, 1]."""
    return torch.from_numpy(np.asarray(images, np.float32) / 255.0)[:, None]


def pooled_quantiles(images: np.ndarray, sigma: float, chunk: int = 256) -> torch.Tensor:
    """:data:`QUANTILES` quantiles (float64, in [0, 1]) of every pixel of ``images`` (``uint8
    [N, S, S]``) blurred by ``sigma``: a :data:`BINS`-bin histogram accumulated ``chunk`` images at
    a time, its cumulative distribution inverted piecewise-linearly within each bin."""
    counts = torch.zeros(BINS, dtype=torch.float64)
    for i in range(0, len(images), chunk):
        low = blur(_unit(images[i:i + chunk]), sigma).clamp(0, 1)
        counts += torch.histc(low, BINS, 0, 1).double()
    cdf = torch.cat([counts.new_zeros(1), counts.cumsum(0) / counts.sum()])
    q = torch.linspace(0, 1, QUANTILES, dtype=torch.float64)
    # the bin in which the cumulative share reaches q (q = 1: the last bin holding a pixel)
    i = torch.where(q < 1, torch.searchsorted(cdf, q, right=True), torch.searchsorted(cdf, q)).clamp(1, BINS)
    c0, c1 = cdf[i - 1], cdf[i]
    w = torch.where(c1 > c0, (q - c0) / (c1 - c0).clamp_min(1e-300), torch.zeros_like(q))
    return (i - 1 + w.clamp(0, 1)) / BINS


def per_image_quantiles(images: np.ndarray, sigma: float, chunk: int = 256) -> torch.Tensor:
    """``[N, QUANTILES]`` quantile functions (float64) of each image of ``images`` (``uint8
    [N, S, S]``) blurred by ``sigma``, linear between order statistics."""
    out = []
    for i in range(0, len(images), chunk):
        v = blur(_unit(images[i:i + chunk]), sigma).flatten(1).double().sort(1).values
        pos = torch.linspace(0, v.shape[1] - 1, QUANTILES, dtype=torch.float64)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=v.shape[1] - 1)
        out.append(v[:, lo] + (pos - lo) * (v[:, hi] - v[:, lo]))
    return torch.cat(out)


#: How each side's table is estimated (``sample.intensity_estimator``).
ESTIMATORS = {"pooled": pooled_quantiles,
              "per_image": lambda images, sigma: per_image_quantiles(images, sigma).mean(0)}


class IntensityMap:
    """``generated`` -> ``real`` quantiles (``[QUANTILES]`` each, intensities in [0, 1]) of images
    blurred by ``sigma`` pixels; ``info``: what it was fitted on (saved with it)."""

    def __init__(self, generated: torch.Tensor, real: torch.Tensor, sigma: float,
                 info: dict | None = None):
        if generated.shape != real.shape or generated.ndim != 1 or len(generated) < 2:
            raise ValueError(f"intensity map: quantiles {tuple(generated.shape)} and "
                             f"{tuple(real.shape)} must be two equal 1-D tables")
        # monotone tables (a float16 export may round neighbours to one value)
        self.generated = torch.cummax(generated.double(), 0).values
        self.real = torch.cummax(real.double(), 0).values
        self.sigma = float(sigma)
        self.info = dict(info or {})

    @classmethod
    def fit(cls, generated: np.ndarray, real: np.ndarray, sigma: float,
            info: dict | None = None, estimator: str = "pooled") -> IntensityMap:
        """Quantiles (:data:`ESTIMATORS`: ``pooled`` or ``per_image``) of the blurred ``generated``
        and ``real`` images (``uint8 [N, S, S]`` each; the two sets need not be the same size)."""
        if len(generated) < 2 or len(real) < 2:
            raise ValueError("intensity map: fitting needs at least 2 generated and 2 real images")
        if estimator not in ESTIMATORS:
            raise ValueError(f"intensity map: estimator {estimator!r} is not one of {', '.join(ESTIMATORS)}")
        tables = ESTIMATORS[estimator]
        meta = {"n_generated": len(generated), "n_real": len(real), "sigma": sigma, "estimator": estimator}
        return cls(tables(generated, sigma), tables(real, sigma), sigma, meta | dict(info or {}))

    def map(self, v: torch.Tensor) -> torch.Tensor:
        """Piecewise-linear ``F_real^-1(F_gen(v))`` of intensities ``v`` in [0, 1]; beyond the
        fitted range the ends are held."""
        g, r = self.generated.to(v.device), self.real.to(v.device)
        x = v.double().clamp(float(g[0]), float(g[-1]))
        i = torch.searchsorted(g, x.contiguous(), right=True).clamp(1, len(g) - 1)
        g0, g1, r0, r1 = g[i - 1], g[i], r[i - 1], r[i]
        w = torch.where(g1 > g0, (x - g0) / (g1 - g0).clamp_min(1e-12), torch.zeros_like(x))
        return (r0 + w * (r1 - r0)).to(v.dtype)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 1, H, W]`` in the model range [-1, 1] -> mapped, same range (clamped)."""
        u = (x.float().clamp(-1, 1) + 1) / 2
        low = blur(u, self.sigma)
        return ((u + self.map(low) - low).clamp(0, 1) * 2 - 1).to(x.dtype)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        save_file({"generated": self.generated.float().contiguous(),
                   "real": self.real.float().contiguous()}, str(path),
                  metadata={"sigma": str(self.sigma), "info": json.dumps(self.info, sort_keys=True)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> IntensityMap:
        """Read a saved map (safetensors: no code runs); a damaged file is one line naming it."""
        t, meta = load_tables(path, "fit it with cxraug train --stage 2 --out RUN, or set "
                              "sample.intensity_match: false in the model's config.yaml")
        try:
            return cls(t["generated"], t["real"], float(meta["sigma"]),
                       json.loads(meta.get("info", "{}")))
        except (KeyError, ValueError) as e:
            raise WeightsError(f"{path}: not an intensity-map file ({e}); refit it with "
                               "cxraug train --stage 2 --out RUN") from None
