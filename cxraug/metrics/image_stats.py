"""Image statistics that tell synthetic radiographs from real ones without any feature extractor:
the radial power spectrum per frequency band, the variance of the Laplacian (fine detail), the mean
absolute gradient, the pixel standard deviation and the 1st / 99th intensity percentiles (deepest
blacks, brightest whites). Pure numerics on square ``[N, S, S]`` images with intensities in
[0, 1] (``uint8`` images are divided by 255); the quality card that loads images and reads these
against a real-vs-real floor is :mod:`cxraug.experiments.quality.image_stats`.

Comparing two sets (:func:`compare`) gives, per statistic, each set's mean, their ratio
(compared / real: for the power bands, the share of real images' power the other set has) and the
single-statistic AUC: how well that statistic alone separates the sets, as ``roc_auc_score``
folded to ``max(a, 1 - a)`` (0.5 = not at all, 1 = fully; the direction is in the means).
"""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage
from scipy.signal import windows
from sklearn.metrics import roc_auc_score

REFERENCE_SIZE = 128
# radial frequency bands in cycles per image at REFERENCE_SIZE; at another size they scale with it,
# so a band covers the same fraction of the Nyquist frequency (64 cycles at 128 px) at any size
BANDS_AT_128 = ((1, 4), (4, 8), (8, 16), (16, 32), (32, 48), (48, 64))
SCALAR_STATS = ("laplacian_var", "mean_abs_gradient", "pixel_std", "p1", "p99")
DESCRIPTIONS = {
    "laplacian_var": "variance of the Laplacian (fine detail)",
    "mean_abs_gradient": "mean absolute gradient",
    "pixel_std": "pixel standard deviation",
    "p1": "1st percentile of intensity (deepest blacks)",
    "p99": "99th percentile of intensity (brightest whites)",
}
_CHUNK = 256  # images per batch: 256 x 128 x 128 complex128 = 64 MB


def bands(size: int) -> dict[str, tuple[float, float]]:
    """``{"power_LO-HI": (lo, hi)}`` in cycles per image at ``size`` px: :data:`BANDS_AT_128`
    scaled by ``size / 128`` (names carry the scaled edges). Below 64 px the lowest bands hold no
    FFT frequency and are left out."""
    s = size / REFERENCE_SIZE
    spec = {f"power_{lo * s:g}-{hi * s:g}": (lo * s, hi * s) for lo, hi in BANDS_AT_128}
    masks = _band_masks(size, spec)
    return {k: v for k, v in spec.items() if masks[k].any()}


def _band_masks(size: int, spec: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """``[S, S]`` masks of the FFT frequencies with ``lo <= radius < hi`` (the top band also
    takes ``radius == hi``, the Nyquist frequency at full size)."""
    freq = np.fft.fftfreq(size) * size  # cycles per image
    radius = np.hypot(freq[:, None], freq[None, :])
    top = list(spec)[-1]
    return {k: (radius >= lo) & ((radius <= hi) if k == top else (radius < hi)) for k, (lo, hi) in spec.items()}


def to_unit(images: np.ndarray) -> np.ndarray:
    """``uint8 [N, S, S]`` (0..255) or float ``[N, S, S]`` already in [0, 1] -> ``float64`` in [0, 1]."""
    x = np.asarray(images)
    if x.ndim != 3 or x.shape[1] != x.shape[2] or len(x) == 0:
        raise ValueError(f"expected square grayscale images [N, S, S] with N >= 1, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x / 255.0
    x = x.astype(np.float64)
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"float images must be in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
    return x


def _per_chunk(fn, images: np.ndarray) -> dict[str, np.ndarray]:
    """``fn`` on [0, 1] chunks of :data:`_CHUNK` images, results concatenated: a 5,000-image card
    never holds more than one chunk as floats."""
    if np.ndim(images) != 3 or len(images) == 0:
        to_unit(images)  # raises with the expected shape
    parts = [fn(to_unit(images[s:s + _CHUNK])) for s in range(0, len(images), _CHUNK)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _band_power(x: np.ndarray) -> dict[str, np.ndarray]:
    size = x.shape[-1]
    hann = windows.hann(size, sym=False)
    x = (x - x.mean((1, 2), keepdims=True)) * np.outer(hann, hann)
    power = np.abs(fft.fft2(x, axes=(1, 2))) ** 2 / size ** 2
    return {k: power[:, m].mean(1) for k, m in _band_masks(size, bands(size)).items()}


def band_power(images: np.ndarray) -> dict[str, np.ndarray]:
    """Mean spectral power of each image in each radial band of :func:`bands` -> ``{name: [N]}``.

    Each image has its mean removed and is multiplied by a 2-D Hann window before the FFT, so the
    spectrum measures the image's content rather than the jump where its edges wrap around; power
    is ``|FFT|^2 / S^2``, averaged over the frequencies with ``lo <= radius < hi`` (the top band
    also takes ``radius == hi``, the Nyquist frequency)."""
    return _per_chunk(_band_power, images)


def _scalar_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    p1, p99 = np.percentile(x, [1, 99], axis=(1, 2))
    return {"laplacian_var": ndimage.laplace(x, axes=(1, 2)).var((1, 2)),
            "mean_abs_gradient": (np.abs(np.diff(x, axis=2)).mean((1, 2))
                                  + np.abs(np.diff(x, axis=1)).mean((1, 2))),
            "pixel_std": x.std((1, 2)), "p1": p1, "p99": p99}


def scalar_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image :data:`SCALAR_STATS` -> ``{name: [N]}``: variance of the 4-neighbour Laplacian
    (``scipy.ndimage.laplace``, reflected edges), mean absolute gradient (``mean |dI/dx| + mean
    |dI/dy|``, forward differences), pixel standard deviation and the 1st / 99th intensity
    percentiles."""
    return _per_chunk(_scalar_stats, images)


def image_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Every statistic of every image: :func:`scalar_stats` then :func:`band_power`."""
    return {**scalar_stats(images), **band_power(images)}


def single_stat_auc(a: np.ndarray, b: np.ndarray) -> float:
    """How well one statistic alone separates two sets: ROC AUC of the values as scores for
    "is from ``b``", folded to ``max(auc, 1 - auc)``; 0.5 = not at all."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if min(len(a), len(b)) == 0:
        raise ValueError(f"the single-statistic AUC needs both sets non-empty, got {len(a)} and {len(b)}")
    auc = roc_auc_score(np.repeat([0, 1], [len(a), len(b)]), np.concatenate([a, b]))
    return float(max(auc, 1.0 - auc))


def compare(real: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict:
    """Per statistic (the keys both share): ``real`` and ``compared`` means, ``ratio`` =
    compared / real mean (None when the real mean is 0), ``diff`` = compared - real mean, and
    the folded single-statistic ``auc``; plus the set sizes under ``counts``."""
    stats = {}
    for name in (k for k in real if k in other):
        r, o = float(np.mean(real[name])), float(np.mean(other[name]))
        stats[name] = {"real": r, "compared": o, "ratio": None if r == 0 else o / r, "diff": o - r,
                       "auc": single_stat_auc(real[name], other[name])}
    first = next(iter(real))
    return {"counts": {"real": len(real[first]), "compared": len(other[first])}, "stats": stats}
