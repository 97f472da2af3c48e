"""The quality card's image statistics: a synthetic set against real images, beside the same
numbers for two disjoint real sets (the real-vs-real floor), in the card JSON and the CLI table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from cxraug.cli.main import main
from cxraug.experiments.quality import image_stats as QS
from cxraug.experiments.quality import inputs as IN
from cxraug.metrics import image_stats as S

pytestmark = pytest.mark.no_templates  # nothing here reads the report-template bank


def _textures(n: int, seed: int, blur: float = 0.0, size: int = 64) -> np.ndarray:
    """``uint8`` smoothed-noise images; ``blur`` > 0 gives a detail-poor "generator"."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), (0, 0.7, 0.7))
    if blur:
        x = ndimage.gaussian_filter(x, (0, blur, blur))
    return np.clip(128 + 30 * x / x.std(), 0, 255).astype(np.uint8)


def test_stats_section_reads_a_blurred_generator_against_its_real_floor():
    real, synth = _textures(60, 0), _textures(20, 1, blur=1.5)
    sec = QS.stats_section(real, synth, seed=0)
    assert sec["image_size"] == 64 and list(sec["bands"]) == list(S.bands(64))
    assert sec["synthetic"]["counts"] == {"real": 60, "compared": 20}
    # the floor: the card's own split of the real images, 40 reference vs 20 compared
    ref_idx, cmp_idx = IN.floor_split(60, 20, 0)
    assert sec["floor"] == S.compare(S.image_stats(real[ref_idx]), S.image_stats(real[cmp_idx]))
    assert sec["floor"]["counts"] == {"real": 40, "compared": 20}
    assert sec["synthetic_matched"]["counts"] == {"real": 40, "compared": 20}
    top = list(S.bands(64))[-1]
    gen, floor = sec["synthetic"]["stats"], sec["floor"]["stats"]
    assert gen[top]["ratio"] < 0.05 and gen[top]["auc"] == 1.0 and gen["laplacian_var"]["auc"] == 1.0
    assert 0.8 < floor[top]["ratio"] < 1.25 and floor[top]["auc"] < 0.8
    assert 0.8 < floor["laplacian_var"]["ratio"] < 1.25 and floor["laplacian_var"]["auc"] < 0.8


def test_stats_section_with_a_second_real_set_and_too_few_real_images():
    real, ref, synth = _textures(30, 0), _textures(50, 2), _textures(12, 1)
    sec = QS.stats_section(real, synth, ref, seed=0)
    assert sec["floor"]["counts"] == {"real": 30, "compared": 12}  # all of real vs 12 of real_ref
    tiny = QS.stats_section(_textures(3, 0), synth, seed=0)  # floor_split: 2 reference vs 1 compared
    assert "< 2 per side" in tiny["floor"]["skipped"] and tiny["synthetic_matched"] is None
    assert all(r[-2:] == ["-", "-"] for r in QS.stats_rows(tiny))  # table still renders


def test_stats_rows_and_markdown_show_every_statistic_beside_its_floor():
    sec = QS.stats_section(_textures(40, 0), _textures(20, 1, blur=1.5), seed=0)
    rows = QS.stats_rows(sec)
    assert [r[0] for r in rows] == [*S.SCALAR_STATS, *S.bands(64)]
    assert all(len(r) == len(QS.STATS_COLUMNS) for r in rows)
    lap = sec["synthetic"]["stats"]["laplacian_var"]
    assert rows[0][3:5] == [f"{lap['ratio']:.3f}", "1.000"]
    md = QS.stats_markdown({"VAE reconstructions": sec, "generator": sec})
    assert md.count("| statistic | real | synthetic | ratio | AUC | floor ratio | floor AUC |") == 2
    assert "### generator: 20 images vs 40 real" in md and "floor: 20 vs 20 disjoint real images" in md
    assert f"| laplacian_var | {rows[0][1]} |" in md
    assert "p1: 1st percentile of intensity (deepest blacks)" in md


def _pngs(folder, images):
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    return folder


def test_cli_eval_writes_and_prints_the_image_statistics(tmp_path, capsys):
    real = _pngs(tmp_path / "real", _textures(40, 0))
    synth = _pngs(tmp_path / "synth", _textures(16, 1, blur=1.5))
    out = tmp_path / "card.json"
    args = ["eval", "--real", str(real), "--synth", str(synth), "--out", str(out),
            "--extractor", "pixels", "--image-size", "32"]
    assert main([*args, "--stats-size", "64"]) == 0
    st = json.loads(out.read_text())["image_stats"]
    assert st["image_size"] == 64 and st["resize"] == "centre-crop to square, resize to 64 px"
    assert st["floor"]["counts"] == {"real": 24, "compared": 16}  # the feature floor's split
    assert st["synthetic"]["stats"]["laplacian_var"]["auc"] == 1.0
    printed = capsys.readouterr().out
    assert "image statistics, centre-crop to square" in printed and "pixel_std" in printed
    assert main([*args, "--stats-size", "4"]) == 2
    err = capsys.readouterr().err
    assert "--stats-size" in err and err.count("\n") == 1
