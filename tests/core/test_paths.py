"""Absolute paths inside results become relative to the results folder, also inside commands."""

from cxraug.core.paths import relative_paths


def test_absolute_paths_become_relative_to_the_results_folder(tmp_path):
    results = tmp_path / "repo" / "benchmarks" / "results"
    rec = {"model": str(tmp_path / "repo" / "kermany-128"),
           "runs": [f"python x.py --work {tmp_path}/repo/runs/a --data ../shared/data"],
           "speed": "12 img/s", "n": 3}
    out = relative_paths(rec, results)
    assert out["model"] == "../../kermany-128"
    assert out["runs"] == ["python x.py --work ../../runs/a --data ../shared/data"]
    assert out["speed"] == "12 img/s" and out["n"] == 3 and str(tmp_path) not in str(out)
