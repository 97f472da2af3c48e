"""sample.intensity_match: the coarse intensity map (cxraug.diffusion.intensity), its fit at the end
of cxraug train, and the pipeline that applies it."""

import shutil

import numpy as np
import pytest
import torch
from conftest import train_tiny_run

from cxraug.cli.main import main
from cxraug.core import config as C
from cxraug.core.config import ConfigError
from cxraug.core.errors import WeightsError
from cxraug.core.runs import training_cost
from cxraug.diffusion.config import DiffCXRConfig
from cxraug.diffusion.export import convert_weights, export_model
from cxraug.diffusion.intensity import (
    BINS,
    INTENSITY_NAME,
    QUANTILES,
    IntensityMap,
    blur,
    per_image_quantiles,
    pooled_quantiles,
)
from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.prepare import training_dataset, write_intensity_map
from cxraug.diffusion.stages import train_run
from cxraug.metrics import image_stats as S


def _radiographs(n: int, size: int = 128, seed: int = 0) -> np.ndarray:
    """Images with a coarse layout (smooth blobs) and fine texture, ``uint8 [n, size, size]``."""
    rng = np.random.default_rng(seed)
    coarse = blur(torch.from_numpy(rng.normal(0, 1, (n, 1, size, size))).float(), 8.0)
    coarse = (coarse - coarse.mean()) / coarse.std() * 0.18 + 0.5
    fine = torch.from_numpy(rng.normal(0, 0.03, (n, 1, size, size))).float()
    return ((coarse + fine).clamp(0, 1)[:, 0] * 255).round().byte().numpy()


def _grey(images: np.ndarray) -> np.ndarray:
    """The generator's failure this map corrects: the coarse layout pulled towards grey."""
    x = torch.from_numpy(images.astype(np.float32) / 255)[:, None]
    low = blur(x, 8.0)
    y = 0.5 + 0.6 * (low - 0.5) + (x - low)
    return (y.clamp(0, 1)[:, 0] * 255).round().byte().numpy()


def _apply(imap: IntensityMap, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1)[:, None]
    return ((imap.apply(x) + 1) * 127.5).round().clamp(0, 255).byte()[:, 0].numpy()


def _power(images: np.ndarray, band: str) -> float:
    return float(S.image_stats(images)[f"power_{band}"].mean())


def test_the_coarse_map_restores_contrast_and_keeps_the_fine_detail():
    real, held_out = _radiographs(40, seed=0), _radiographs(40, seed=1)
    grey = _grey(_radiographs(40, seed=2))
    mapped = _apply(IntensityMap.fit(grey, real, sigma=8.0), grey)
    # the coarse layout's contrast is back (the grey images have 0.6x its standard deviation)
    assert grey.std() < 0.8 * held_out.std()
    assert abs(mapped.std() / held_out.std() - 1) < 0.08
    assert abs(_power(mapped, "1-4") / _power(held_out, "1-4") - 1) < 0.25
    # the fine residual is left as it was drawn; a pointwise map (sigma 0) amplifies it as well
    fine = "16-32"
    assert abs(_power(mapped, fine) / _power(grey, fine) - 1) < 0.1
    pointwise = _apply(IntensityMap.fit(grey, real, sigma=0.0), grey)
    assert _power(pointwise, fine) / _power(grey, fine) > 1.5


def test_the_map_is_monotone_and_the_identity_between_equal_sets():
    real = _radiographs(20)
    same = IntensityMap.fit(real, real, sigma=4.0)
    assert np.abs(_apply(same, real).astype(int) - real.astype(int)).max() <= 1
    imap = IntensityMap.fit(_grey(real), real, sigma=4.0)
    v = torch.linspace(-0.2, 1.2, 2001, dtype=torch.float64)
    out = imap.map(v)
    assert (out.diff() >= 0).all() and out.min() >= imap.real[0] and out.max() <= imap.real[-1]


def test_save_load_and_a_float16_copy_keep_the_map(tmp_path):
    real = _radiographs(20)
    imap = IntensityMap.fit(_grey(real), real, sigma=4.0, info={"images": "abc"})
    back = IntensityMap.load(imap.save(tmp_path / INTENSITY_NAME))
    assert back.sigma == 4.0 and back.info["images"] == "abc" and back.info["n_real"] == 20
    half = tmp_path / "half.safetensors"
    convert_weights(tmp_path / INTENSITY_NAME, half, torch.float16)  # tables rounded to fp16
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    assert (IntensityMap.load(half).apply(x) - imap.apply(x)).abs().max() < 2e-3
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((tmp_path / INTENSITY_NAME).read_bytes()[:60])
    with pytest.raises(WeightsError, match="bad.safetensors"):
        IntensityMap.load(bad)
    with pytest.raises(WeightsError, match="intensity_match: false"):
        IntensityMap.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("sigma", [0.0, 3.0])
def test_pooled_quantiles_are_the_blurred_pixels_quantiles_in_any_chunks(sigma):
    images = _radiographs(23, size=48)
    exact = np.quantile(blur(torch.from_numpy(images / 255.0).float()[:, None], sigma).clamp(0, 1).numpy(),
                        np.linspace(0, 1, QUANTILES))
    for chunk in (5, 256):
        q = pooled_quantiles(images, sigma, chunk=chunk).numpy()
        assert q.shape == (QUANTILES,) and (np.diff(q) >= 0).all()
        # within two histogram bins (a sparse tail puts neighbouring pixels in two); unblurred 8-bit pixels are atoms a grey level apart, between
        # which np.quantile interpolates by rank and the histogram by intensity
        assert np.abs(q - exact).max() <= (2.0 / BINS if sigma else 1.0 / 255) + 1e-6
    assert np.array_equal(pooled_quantiles(images, sigma, chunk=5), pooled_quantiles(images, sigma, chunk=7))


def _offset(images: np.ndarray, spread: float, seed: int) -> np.ndarray:
    """Each image brightened or darkened as a whole (real radiographs differ in exposure)."""
    shift = np.random.default_rng(seed).normal(0, spread, (len(images), 1, 1))
    return np.clip(images / 255.0 + shift, 0, 1).__mul__(255).round().astype(np.uint8)


def test_the_per_image_map_matches_each_images_percentiles_where_the_pooled_one_overshoots():
    # real images differ in exposure; the generated ones (greyer, and alike in exposure) do not
    real, held_out = _offset(_radiographs(60, 64, seed=0), 0.12, 1), _offset(_radiographs(60, 64, seed=2), 0.12, 3)
    grey = _grey(_radiographs(60, 64, seed=4))

    def p99_error(estimator):
        imap = IntensityMap.fit(grey[:30], real, sigma=4.0, estimator=estimator)
        assert imap.info["estimator"] == estimator
        mapped = _apply(imap, grey[30:])
        return float(np.percentile(mapped / 255, 99, axis=(1, 2)).mean()
                     - np.percentile(held_out / 255, 99, axis=(1, 2)).mean())

    pooled, per_image = p99_error("pooled"), p99_error("per_image")
    assert pooled > 0.03 and abs(per_image) < 0.5 * pooled
    with pytest.raises(ValueError, match="estimator 'median'"):
        IntensityMap.fit(grey, real, sigma=4.0, estimator="median")


def test_per_image_quantiles_are_each_images_own():
    images = np.random.default_rng(0).integers(0, 256, (5, 24, 24), dtype=np.uint8)
    q = per_image_quantiles(images, 2.0, chunk=2).numpy()
    exact = np.quantile(blur(torch.from_numpy(images / 255.0).float()[:, None], 2.0).flatten(1).double().numpy(),
                        np.linspace(0, 1, QUANTILES), axis=1).T
    np.testing.assert_allclose(q, exact, atol=1e-6)  # float32 blur, chunked or not


def test_the_blur_is_a_gaussian_of_the_asked_width():
    x = torch.zeros(1, 1, 65, 65)
    x[0, 0, 32, 32] = 1
    y = blur(x, 4.0)[0, 0]
    assert abs(float(y.sum()) - 1) < 1e-4
    r2 = (torch.arange(65.0) - 32)[:, None] ** 2 + (torch.arange(65.0) - 32)[None, :] ** 2
    assert abs(float((y * r2).sum()) / 2 - 16.0) < 0.5  # variance per axis = sigma^2


@pytest.mark.parametrize("setting", ["sample.intensity_sigma=-1", "sample.intensity_fit_n=1",
                                     "sample.intensity_estimator=median"])
def test_bad_intensity_settings_are_refused(setting):
    with pytest.raises(ConfigError, match=setting.split("=")[0]):
        C.load(DiffCXRConfig, None, [setting]).validate()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory)


def test_train_fits_the_map_once_and_the_pipeline_applies_it(tiny_run, tmp_path, capsys):
    _, run, _ = tiny_run
    copy = tmp_path / "mapped"
    shutil.copytree(run.root, copy)
    sets = ["sample.intensity_match=true", "sample.intensity_fit_n=6", "sample.intensity_sigma=2",
            "sample.steps=2"]
    mapped_cfg = C.load(DiffCXRConfig, copy / "config.yaml", sets)
    C.save(mapped_cfg, copy)
    mrun = train_run(mapped_cfg, copy, ["2"], progress=False)  # trained already: fits the map
    path = mrun.denoiser / INTENSITY_NAME
    imap = IntensityMap.load(path)
    assert imap.info["n_generated"] == 6 and imap.sigma == 2
    # the real side is every training image, not only the rows the generator drew for
    assert imap.info["n_real"] == len(training_dataset(mapped_cfg, mrun)) > 6
    before = path.read_bytes()
    assert write_intensity_map(mapped_cfg, mrun, progress=False).read_bytes() == before  # kept
    other = C.load(DiffCXRConfig, copy / "config.yaml", ["sample.guidance=3"])
    write_intensity_map(other, mrun, progress=False)
    assert IntensityMap.load(path).info["sampling"]["guidance"] == 3  # refitted for new settings
    per_image = C.load(DiffCXRConfig, copy / "config.yaml", ["sample.intensity_estimator=per_image"])
    write_intensity_map(per_image, mrun, progress=False)
    assert IntensityMap.load(path).info["estimator"] == "per_image"  # refitted for the new estimator
    fits = [c for c in training_cost(copy) if c["stage"] == "intensity_map"]
    assert len(fits) == 3 and all(c["seconds"] > 0 for c in fits)  # timed when fitted, not when kept
    write_intensity_map(mapped_cfg, mrun, progress=False)

    pipe, plain = DiffCXRPipeline.from_pretrained(copy), DiffCXRPipeline.from_pretrained(run.root)
    assert pipe.intensity is not None and plain.intensity is None
    reports = ["There is pneumonia.", "No acute findings."]
    a = pipe(reports, seeds=[5, 6], batch_size=1, steps=2)
    b = pipe(reports, seeds=[5, 6], batch_size=2, steps=2)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # an image never depends on its batch
    assert not np.array_equal(a, plain(reports, seeds=[5, 6], steps=2))

    exported = export_model(copy, tmp_path / "exported", reference_size=16)  # fp16 weights
    assert (exported / "denoiser" / INTENSITY_NAME).read_bytes() == path.read_bytes()  # exact tables
    assert DiffCXRPipeline.from_pretrained(exported).intensity is not None

    path.unlink()  # a missing map is one line naming it and the way out
    code = main(["generate", "--model", str(copy), "--report", "There is pneumonia.", "--n", "1",
                 "--steps", "2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and INTENSITY_NAME in err and "Traceback" not in err
    assert "sample.intensity_match: false" in err
