"""benchmarks/generator_realism.py: a second generator on a finished sweep's paper bench, paired
on its subset draws, seeds and test patients. With the same generator again every new-minus-old
difference is exactly 0 (the pairing is right at every level), the real+dup jobs are the old
sweep's, copied, and a generator run with other splits is refused before anything trains."""

import json
import re
import shutil

import pandas as pd
import pytest
from conftest import load_script, train_tiny_run

TINY_BENCH = ["--set", "image_size=16", "--set", "min_positive=1", "--set", "n_boot=20",
              "--set", "classifier.arch=resnet10t"]


@pytest.mark.no_templates
def test_the_same_generator_again_differs_by_exactly_zero(tmp_path_factory, tmp_path, nih_fixture,
                                                          one_thread, capsys):
    _, run, root = train_tiny_run(tmp_path_factory)
    old_work, work, results = tmp_path / "old", tmp_path / "new", tmp_path / "results"
    sweep = load_script("limited_data")
    assert sweep.main(["--data", str(root), "--model", str(run.root), "--test-data", str(nih_fixture),
                       "--fracs", "0.25,0.5", "--strict-fracs", "", "--protocols", "paper",
                       "--subsets", "2", "--seeds", "2", "--steps", "2", "--n-synth", "4",
                       "--work", str(old_work), "--out-dir", str(results), "--name", "old",
                       *TINY_BENCH]) == 0
    realism = load_script("generator_realism")
    realism.PRIMARY = dict(realism.PRIMARY, frac=0.25)  # the tiny fixture has no 5 % to speak of
    argv = ["--old-work", str(old_work), "--model", str(run.root), "--test-data", str(nih_fixture),
            "--n-synth", "4", "--work", str(work), "--out-dir", str(results), "--name", "r"]
    assert realism.main(argv) == 0

    rec = json.loads((results / "r.json").read_text())
    assert json.loads((work / "protocol.json").read_text())["primary"]["frac"] == 0.25
    assert {(r["test_set"], r["frac"], r["arm"]) for r in rec["rows"]} == {
        (t, f, a) for t in ("test", "nih14") for f in (0.25, 0.5) for a in ("synth->real", "real+synth")}
    for r in rec["rows"]:
        d = r["new_minus_old"]
        assert d["estimate"] == 0 and d["ci"] == [0, 0] and (d["draws"], d["seeds"]) == (2, 2)
        assert r["new_vs_dup"] == r["old_vs_dup"] and r["new"]["estimate"] == r["old"]["estimate"]
    assert rec["primary"]["frac"] == 0.25 and rec["primary"]["arm"] == "synth->real"
    assert len(rec["family"]) == 7 and all(f["p_holm"] >= f["p_value"] for f in rec["family"])
    assert rec["verdict"].startswith("No difference shown") and rec["hours"] > 0
    # the generator-free jobs are the old sweep's, byte for byte (copied, not retrained)
    jobs = work / "paper" / "jobs"
    copied = sorted([*jobs.glob("*_real_seed*"), *jobs.glob("*_real-plus-dup_seed*")])
    assert len(copied) == 16  # real and real+dup: 2 fractions x 2 draws x 2 seeds
    for job in copied:
        assert (old_work / "paper" / "jobs" / job.name / "result.json").read_bytes() == \
            (job / "result.json").read_bytes(), job.name
    text = (results / "r.json").read_text()
    assert not re.search(r'[" =]/(tmp|work|root|home)/', text)  # no machine paths
    md = (results / "r.md").read_text()
    assert rec["verdict"] in md and "| nih14 | 25% | synth->real |" in md

    # a rerun trains nothing
    before = {p: p.stat().st_mtime_ns for p in work.rglob("result.json")}
    assert realism.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in work.rglob("result.json")} == before

    # a generator run with other splits: refused in one line before anything trains
    other = tmp_path / "other-run"
    shutil.copytree(run.root, other)
    splits = pd.read_csv(other / "splits.csv")
    splits.loc[splits["split"] == "train", "split"] = "val"
    splits.to_csv(other / "splits.csv", index=False)
    with pytest.raises(SystemExit, match="error: .*splits.csv: not the splits of the bench"):
        realism.main([*argv[:2], "--model", str(other), *argv[4:6], "--work", str(tmp_path / "w2"),
                      *argv[8:]])
    assert not (tmp_path / "w2" / "paper" / "jobs").exists()
