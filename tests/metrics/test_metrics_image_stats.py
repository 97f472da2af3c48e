"""Image statistics of the quality card (power spectrum per band, Laplacian variance, gradient,
contrast, percentiles, single-statistic AUC) on synthetic images with a known answer."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from scipy import ndimage

from cxraug.metrics import image_stats as S

pytestmark = pytest.mark.no_templates  # nothing here reads the report-template bank


def _textures(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Float images in [0, 1] with power at every frequency: lightly smoothed noise."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), (0, 0.7, 0.7))
    return np.clip(0.5 + 0.1 * x / x.std(), 0, 1)


def test_bands_are_the_128px_edges_scaled_with_the_image_size():
    assert list(S.bands(128)) == ["power_1-4", "power_4-8", "power_8-16", "power_16-32", "power_32-48",
                                  "power_48-64"]
    assert S.bands(64)["power_0.5-2"] == (0.5, 2.0) and S.bands(64)["power_24-32"] == (24.0, 32.0)
    assert S.bands(256)["power_96-128"] == (96.0, 128.0)
    # at 16 px the two lowest bands (0.125-0.5, 0.5-1 cycles) hold no FFT frequency: left out, not NaN
    assert list(S.bands(16)) == ["power_1-2", "power_2-4", "power_4-6", "power_6-8"]
    power = S.band_power(np.random.default_rng(0).random((2, 16, 16)))
    assert list(power) == list(S.bands(16)) and all(np.isfinite(v).all() for v in power.values())


@pytest.mark.parametrize("size, cycles, band", [(128, 10, "power_8-16"), (128, 40, "power_32-48"),
                                                (64, 5, "power_4-8"), (64, 20, "power_16-24")])
def test_a_sinusoid_puts_its_power_in_the_band_of_its_frequency(size, cycles, band):
    col = 0.5 + 0.4 * np.cos(2 * np.pi * cycles * np.arange(size) / size)
    power = S.band_power(np.tile(col, (size, 1))[None])
    assert max(power, key=lambda k: power[k][0]) == band
    assert power[band][0] > 100 * sum(v[0] for k, v in power.items() if k != band)


def test_identical_sets_give_ratio_one_and_auc_one_half():
    x = _textures(30)
    res = S.compare(S.image_stats(x), S.image_stats(x.copy()))
    assert res["counts"] == {"real": 30, "compared": 30}
    assert set(res["stats"]) == {*S.SCALAR_STATS, *S.bands(64)}
    for name, s in res["stats"].items():
        assert s["ratio"] == pytest.approx(1.0) and s["diff"] == pytest.approx(0.0, abs=1e-12), name
        assert s["auc"] == pytest.approx(0.5), name


def test_a_blurred_copy_loses_high_band_power_and_fine_detail():
    x = _textures(40)
    blurred = np.stack([ndimage.gaussian_filter(im, 1.2) for im in x])
    res = S.compare(S.image_stats(x), S.image_stats(blurred))["stats"]
    ratios = [res[b]["ratio"] for b in S.bands(64)]
    assert ratios[0] > 0.8 and ratios[-1] < 0.01  # the low band survives, the top band is gone
    assert all(a > b for a, b in pairwise(ratios[1:]))  # loss grows with frequency above the first
    assert res["laplacian_var"]["ratio"] < 0.1 and res["mean_abs_gradient"]["ratio"] < 0.5
    assert res["laplacian_var"]["auc"] == 1.0 and res[list(S.bands(64))[-1]]["auc"] == 1.0


def test_a_contrast_reduced_copy_scales_power_by_its_square_and_shifts_the_percentiles():
    x = _textures(40)
    flat = 0.25 + 0.5 * x  # half the contrast around 0.5
    res = S.compare(S.image_stats(x), S.image_stats(flat))["stats"]
    for b in S.bands(64):
        assert res[b]["ratio"] == pytest.approx(0.25, rel=1e-4)
    assert res["laplacian_var"]["ratio"] == pytest.approx(0.25, rel=1e-6)
    assert res["pixel_std"]["ratio"] == pytest.approx(0.5, rel=1e-6)
    assert res["mean_abs_gradient"]["ratio"] == pytest.approx(0.5, rel=1e-6)
    assert res["p1"]["diff"] > 0.05 and res["p99"]["diff"] < -0.05  # blacks lifted, whites lowered
    assert res["p1"]["compared"] == pytest.approx(0.25 + 0.5 * res["p1"]["real"])
    assert res["pixel_std"]["auc"] == 1.0


def test_scalar_stats_exact_on_a_ramp_and_percentiles_on_a_uniform_image():
    size = 50
    ramp = np.tile(np.arange(size) / (size - 1), (size, 1))[None]
    st = S.scalar_stats(ramp)
    assert st["mean_abs_gradient"][0] == pytest.approx(1 / (size - 1))  # |d/dx| = 1/(S-1), d/dy = 0
    assert st["laplacian_var"][0] == pytest.approx(0.0, abs=1e-3)  # a ramp is flat but for its edges
    assert S.scalar_stats(np.full((1, 8, 8), 0.3))["laplacian_var"][0] == 0.0
    uniform = np.linspace(0, 1, 100 * 100).reshape(1, 100, 100)
    st = S.scalar_stats(uniform)
    assert st["p1"][0] == pytest.approx(0.01, abs=1e-3) and st["p99"][0] == pytest.approx(0.99, abs=1e-3)
    assert st["pixel_std"][0] == pytest.approx(1 / np.sqrt(12), rel=1e-3)


def test_uint8_images_are_read_as_intensities_over_255():
    x = np.random.default_rng(1).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    a, b = S.image_stats(x), S.image_stats(x.astype(np.float64) / 255)
    for k in a:
        assert np.allclose(a[k], b[k], rtol=1e-4, atol=1e-9), k


def test_single_stat_auc_is_folded_and_half_for_ties():
    lo, hi = np.arange(10.0), np.arange(10.0) + 100
    assert S.single_stat_auc(lo, hi) == 1.0 and S.single_stat_auc(hi, lo) == 1.0
    assert S.single_stat_auc(np.ones(5), np.ones(7)) == 0.5
    assert S.single_stat_auc([0, 2], [1, 3]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="non-empty"):
        S.single_stat_auc([], [1.0])


@pytest.mark.parametrize("bad, match", [(np.zeros((2, 8, 9)), "square"), (np.zeros((8, 8)), "square"),
                                        (np.full((1, 8, 8), 1.5), r"\[0, 1\]"),
                                        (np.full((1, 8, 8), -0.1), r"\[0, 1\]")])
def test_wrong_images_are_refused_with_what_was_expected(bad, match):
    with pytest.raises(ValueError, match=match):
        S.image_stats(bad)
