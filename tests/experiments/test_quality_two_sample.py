"""The eval card's real-vs-real floor, classifier two-sample test (C2ST) and weights-free
``--extractor pixels``."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from cxraug.cli.main import main
from cxraug.core.errors import DataError
from cxraug.experiments.quality import card as Q
from cxraug.experiments.quality import extractors as X
from cxraug.experiments.quality import inputs as IN
from cxraug.metrics import generative as G

pytestmark = pytest.mark.no_templates  # nothing here reads the report-template bank


def test_two_sample_auc_near_chance_for_one_distribution_and_high_for_different_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same = G.two_sample_auc(a, b, seed=0)
    assert 0.35 < same["auc"] < 0.65 and same["n_per_side"] == 300 and same["folds"] == 5
    shifted = G.two_sample_auc(a, b + 1.0, seed=0)
    assert shifted["auc"] > 0.9
    assert G.two_sample_auc(a, b, seed=0) == same  # seeded: the same number every run


def test_two_sample_auc_balances_the_larger_side():
    rng = np.random.default_rng(1)
    big, small = rng.normal(size=(900, 8)), rng.normal(size=(150, 8))
    res = G.two_sample_auc(big, small, seed=0)
    assert res["n_per_side"] == 150 and res["auc"] < 0.65
    assert G.two_sample_auc(big, small + 1.5, seed=0)["auc"] > 0.9


def test_two_sample_auc_needs_a_fold_of_each_side():
    rng = np.random.default_rng(2)
    with pytest.raises(DataError, match="at least 5 images per side") as e:
        G.two_sample_auc(rng.normal(size=(50, 4)), rng.normal(size=(4, 4)))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("n_real, n_synth", [(24, 21), (15, 15), (100, 7), (11, 3), (9, 40)])
def test_floor_split_is_disjoint_and_sized_like_the_synthetic_side(n_real, n_synth):
    ref, cmp_ = IN.floor_split(n_real, n_synth, seed=3)
    assert set(ref.tolist()).isdisjoint(cmp_.tolist())
    assert len(ref) + len(cmp_) == n_real and len(set(ref.tolist()) | set(cmp_.tolist())) == n_real
    assert len(cmp_) == min(n_synth, n_real // 2) and len(ref) >= len(cmp_)
    assert np.array_equal(IN.floor_split(n_real, n_synth, seed=3)[1], cmp_)  # seeded


def test_real_floor_with_a_second_real_set_keeps_the_reference_and_matches_n():
    rng = np.random.default_rng(4)
    fr, fref, fs = rng.normal(size=(60, 6)), rng.normal(size=(80, 6)), rng.normal(2.0, 1, (30, 6))
    floor, matched = Q.real_floor(fr, fs, fref, k=3, seed=0)
    assert floor["counts"] == {"reference": 60, "compared": 30} and floor["skipped"] is None
    # nothing to subsample on the synthetic side: the counterpart is the overall comparison itself
    assert matched["counts"] == {"real": 60, "synthetic": 30}
    assert matched["fid"] == pytest.approx(G.fid(fr, fs))
    assert floor["fid"] < matched["fid"] and floor["two_sample_auc"] < 0.75 < matched["two_sample_auc"]
    assert set(G.METRIC_KEYS) | {"two_sample_auc"} <= set(floor)


def test_real_floor_too_small_is_skipped_not_an_error():
    rng = np.random.default_rng(5)
    floor, matched = Q.real_floor(rng.normal(size=(8, 4)), rng.normal(size=(8, 4)), None)
    assert matched is None and "< 5 per side" in floor["skipped"]
    assert all(floor[x] is None for x in (*G.METRIC_KEYS, "two_sample_auc"))


def test_pixels_extractor_is_area_downsampled_standardised_thumbnails():
    embed, info = X.make_extractor("pixels")
    assert info["name"] == "pixels" and info["features"] == 256 and "weak" in info["note"]
    rng = np.random.default_rng(6)
    blocks = rng.integers(0, 200, (2, 16, 16)).astype(np.uint8)
    big = np.repeat(np.repeat(blocks, 4, axis=1), 4, axis=2)  # 64 x 64 of 4x4 constant blocks
    f = embed(big)
    assert f.shape == (2, 256) and f.dtype == np.float32
    want = blocks.reshape(2, -1).astype(np.float64)
    want = (want - want.mean(1, keepdims=True)) / want.std(1, keepdims=True)
    np.testing.assert_allclose(f, want, rtol=1e-4, atol=1e-4)
    # brightness and contrast drop out; a flat image is all zeros rather than NaN
    np.testing.assert_allclose(embed((big // 2 + 40).astype(np.uint8)), f, atol=0.05)
    assert np.array_equal(embed(np.full((1, 32, 32), 77, np.uint8)), np.zeros((1, 256), np.float32))


def _band_pngs(folder, n, seed, where, size=32):
    """Noise with a bright vertical band starting at column ``where`` (a crude 'mediastinum')."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 60, (size, size), dtype=np.uint8)
        img[:, where: where + size // 6] = 200
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


def test_cli_eval_pixels_writes_floor_and_two_sample_auc(tmp_path, capsys):
    real = _band_pngs(tmp_path / "real", 40, 0, where=10)
    synth = _band_pngs(tmp_path / "synth", 16, 1, where=20)  # the band in the wrong place
    out = tmp_path / "card.json"
    original, splits = Q.floor_split, []

    def recording_split(*a, **kw):  # records the split evaluate actually used
        splits.append(original(*a, **kw))
        return splits[-1]

    with mock.patch.object(Q, "floor_split", recording_split):
        code = main(["eval", "--real", str(real), "--synth", str(synth), "--out", str(out),
                     "--extractor", "pixels", "--image-size", "32"])
    assert code == 0
    card = json.loads(out.read_text())
    assert card["extractor"]["name"] == "pixels" and card["counts"] == {"real": 40, "synthetic": 16}
    floor = card["floor"]
    assert set(card["metrics"]) == set(G.METRIC_KEYS)  # the old keys, unchanged
    assert set(card["metrics"]) | {"two_sample_auc"} <= set(floor)
    assert floor["source"] == "split" and floor["counts"] == {"reference": 24, "compared": 16}
    # the floor came from one split of the real images into disjoint parts ...
    assert len(splits) == 1
    ref_idx, cmp_idx = splits[0]
    assert set(ref_idx.tolist()).isdisjoint(cmp_idx.tolist())
    # ... and is exactly the metrics of those two parts
    images, _, _ = IN.load_real_images(real, 32, 5000, 0)
    fr = X.make_extractor("pixels")[0](images)
    assert floor["fid"] == pytest.approx(G.fid(fr[ref_idx], fr[cmp_idx]), rel=1e-6)
    # misplaced bands: clearly apart from real, far above the floor
    assert card["two_sample_auc"] > 0.9 and floor["two_sample_auc"] < card["two_sample_auc"]
    assert floor["fid"] < card["metrics"]["fid"] and floor["coverage"] > card["metrics"]["coverage"]
    matched = card["synthetic_matched"]
    assert matched["counts"] == {"real": 24, "synthetic": 16} and matched["two_sample_auc"] > 0.9
    assert [r[0] for r in Q.summary_rows(card)] == ["all", "all @ floor n", "real-vs-real floor",
                                                    "all @ equal n", "real-vs-real @ equal n"]
    assert Q.summary_rows(card)[4][1:3] == [16, 16] and floor["equal_n"]["n"] == matched["equal_n"]["n"] == 16
    assert Q.summary_rows(card)[2][1:3] == [24, 16] and len(Q.SUMMARY_COLUMNS) == 10
    printed = capsys.readouterr().out
    assert "real-vs-real floor: two disjoint random parts of --real, n = 24 vs 16" in printed
    assert "two-sample AUC (0.5 = indistinguishable): synthetic 1.000 vs real-vs-real floor" in printed


def test_cli_eval_real_ref_floor_and_overlap(tmp_path, capsys):
    real = _band_pngs(tmp_path / "real", 20, 0, where=10)
    ref = _band_pngs(tmp_path / "ref", 30, 2, where=10)
    synth = _band_pngs(tmp_path / "synth", 12, 1, where=20)
    out = tmp_path / "card.json"
    args = ["eval", "--real", str(real), "--synth", str(synth), "--out", str(out),
            "--extractor", "pixels", "--image-size", "32"]
    assert main([*args, "--real-ref", str(ref)]) == 0
    floor = json.loads(out.read_text())["floor"]
    assert floor["source"] == "real-ref" and floor["real_ref"] == str(ref) and floor["overlap_dropped"] == 0
    assert floor["counts"] == {"reference": 20, "compared": 12}  # all of --real vs 12 of --real-ref
    # a --real-ref with the same images as --real would give a floor of ~0: refused, one line
    capsys.readouterr()
    assert main([*args, "--real-ref", str(real)]) == 2
    err = capsys.readouterr().err
    assert "--real-ref" in err and "also in --real" in err and err.count("\n") == 1
    assert main([*args, "--real-ref", str(tmp_path / "missing")]) == 2
    assert "--real-ref" in capsys.readouterr().err


def test_equal_n_coverage_reads_against_its_floor():
    """Coverage of a sample from the real distribution is bounded by the ratio of the two sides'
    sizes; cut to equal n, a perfect generator's coverage is the equal-n floor (high), not ~n_s/n_r."""
    rng = np.random.default_rng(0)
    fr, fs = rng.normal(size=(1200, 6)).astype(np.float32), rng.normal(size=(100, 6)).astype(np.float32)
    floor, matched = Q.real_floor(fr, fs, None, k=3, seed=0)
    assert floor["counts"] == {"reference": 1100, "compared": 100}
    assert floor["coverage"] < 0.35 < floor["equal_n"]["coverage"]
    assert matched["equal_n"]["coverage"] > 0.6 and matched["equal_n"]["n"] == 100
    # a generator that covers half the distribution scores below its equal-n floor
    half = np.abs(rng.normal(size=(100, 6))).astype(np.float32)
    _, bad = Q.real_floor(fr, half, None, k=3, seed=0)
    assert bad["equal_n"]["coverage"] < floor["equal_n"]["coverage"] - 0.2
