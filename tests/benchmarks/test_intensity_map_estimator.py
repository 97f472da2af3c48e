"""benchmarks/intensity_map_estimator.py: compares the map's estimators on training images only,
and picks by its stated rule."""

import json

import numpy as np
from conftest import load_script, train_tiny_run

from cxraug.diffusion.intensity import QUANTILES, _unit, blur

est = load_script("intensity_map_estimator")


def test_per_image_quantiles_are_each_images_own():
    images = np.random.default_rng(0).integers(0, 256, (5, 24, 24), dtype=np.uint8)
    q = est.per_image_quantiles(images, 2.0, chunk=2).numpy()
    exact = np.quantile(blur(_unit(images), 2.0).flatten(1).double().numpy(), np.linspace(0, 1, QUANTILES), axis=1).T
    np.testing.assert_allclose(q, exact, atol=1e-6)  # float32 blur, chunked or not


def test_the_study_reads_training_images_only_and_applies_its_rule(tmp_path_factory, tmp_path):
    _, run, data = train_tiny_run(tmp_path_factory)
    assert est.main(["--model", str(run.root), "--data", str(data), "--n", "8", "--n-fit", "4",
                     "--refits", "2", "--out", "est", "--out-dir", str(tmp_path)]) == 0
    text = (tmp_path / "est.json").read_text()
    rec = json.loads(text)
    assert str(tmp_path) not in text and str(data) not in text  # no machine paths
    assert rec["split"] == "train only" and rec["n_training_images"] == 20  # the fixture's 20 training images
    res = rec["results"]
    assert list(res) == ["none", *est.ESTIMATORS] and res["none"]["refits"] == 1
    assert all(res[n]["refits"] == 2 for n in est.ESTIMATORS)
    eligible = [n for n in est.ESTIMATORS if res[n]["mean"]["std_ratio"] >= 0.95]
    if eligible:
        best = min(res[n]["max_abs_percentile_error"] for n in eligible)
        assert rec["chosen"] in eligible and res[rec["chosen"]]["max_abs_percentile_error"] == best
    else:
        assert rec["chosen"] is None
    assert (tmp_path / "est.md").read_text() == est.markdown(rec)
