"""benchmarks/quality_card.py --stats-only: the image statistics of a cohort and of VAE
reconstructions against the official test images, and the markdown it writes (no generator
here: the two folders are written directly, with a known answer)."""

import argparse

import numpy as np
import pytest
from conftest import load_script
from PIL import Image
from scipy import ndimage


def _save(folder, images):
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:03d}.png")


@pytest.mark.no_templates
def test_stats_only_reads_copies_as_real_and_a_blurred_cohort_as_detail_poor(kermany_fixture, tmp_path):
    QC = load_script("quality_card")
    real = QC.official_test_images(str(kermany_fixture), 128)
    assert real.shape == (6, 128, 128)  # the fixture's 6 official test images, centre-cropped
    work = tmp_path / "work"
    _save(work / "vae-recon", real)  # a perfect autoencoder
    _save(work / "cohort", np.stack([ndimage.gaussian_filter(im, 2.0) for im in real]))  # a blurry generator
    res = {"model": "tiny", "command": "benchmarks/quality_card.py --stats-only", "date": "2026-12-06",
           "machine": {"model": "Some CPU", "cores": 2, "torch_threads": 1},
           "cohort": {"n": 6, "targets": {"all": 6}, "memorisation_fail": 0}}
    out = QC.stats_only(argparse.Namespace(data=str(kermany_fixture)), work, res)
    assert out.name == "quality_tiny_stats.json" and res["real"] == {"split": "test", "n": 6}
    recon, gen = (res["image_stats"][k]["synthetic"]["stats"] for k in ("vae_recon", "generator"))
    for name, s in recon.items():
        assert s["ratio"] == pytest.approx(1.0) and s["auc"] == pytest.approx(0.5), name
    # blur keeps the lowest band and removes 16-32 cycles (above that, uint8 rounding noise is left)
    assert gen["power_1-4"]["ratio"] > 0.9 and gen["power_16-32"]["ratio"] < 0.1
    assert gen["laplacian_var"]["ratio"] < 0.25 and gen["laplacian_var"]["auc"] == 1.0
    assert res["image_stats"]["generator"]["floor"]["counts"] == {"real": 3, "compared": 3}
    md = QC.markdown(res)
    assert "- command: `benchmarks/quality_card.py --stats-only`" in md and "- machine: Some CPU, 2 cores" in md
    assert "### VAE reconstructions of real test images: 6 images vs 6 real" in md
    assert "### generator cohort: 6 images vs 6 real" in md and "| power_48-64 |" in md
