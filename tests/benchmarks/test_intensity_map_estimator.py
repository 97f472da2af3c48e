"""benchmarks/intensity_map_estimator.py: compares the map's estimators on training images only,
and picks by its stated rule."""

import json

from conftest import load_script, train_tiny_run

est = load_script("intensity_map_estimator")


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
