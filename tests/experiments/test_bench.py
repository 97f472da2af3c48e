"""cxraug bench: arms build the right training sets, no test leakage, bad arguments."""

import json

import numpy as np
import pytest

from cxraug.classify.data import ArraySet
from cxraug.cli.main import main
from cxraug.core.config import ConfigError
from cxraug.experiments import bench as B


def _set(n, label=1.0, prefix="p"):
    return ArraySet(np.zeros((n, 8, 8), np.uint8), np.full((n, 1), label, np.float32),
                    np.array([f"{prefix}{i}" for i in range(n)]))


def test_arms_build_the_right_sets():
    real, synth = _set(10), _set(50, prefix="synthetic-")
    tr, pre = B.arm_data("real", real, synth, 2.0, 0)
    assert len(tr) == 10 and pre is None
    tr, _ = B.arm_data("real+synth", real, synth, 2.0, 0)
    assert len(tr) == 30 and sum(p.startswith("synthetic-") for p in tr.patient_ids) == 20
    dup, _ = B.arm_data("real+dup", real, synth, 2.0, 0)
    assert len(dup) == 30 and set(dup.patient_ids) == set(real.patient_ids)  # count-matched control
    tr, pre = B.arm_data("synth->real", real, synth, 2.0, 0)
    assert tr is real and len(pre) == 50
    tr, _ = B.arm_data("synth", real, synth, 2.0, 0)
    assert tr is synth
    small = _set(5, prefix="synthetic-")  # a cohort smaller than ratio x real: dup matches it
    assert len(B.arm_data("real+dup", real, small, 2.0, 0)[0]) == len(B.arm_data("real+synth", real, small, 2.0, 0)[0]) == 15
    with pytest.raises(Exception, match="needs a synthetic cohort"):
        B.arm_data("real+synth", real, None, 1.0, 0)


def test_shuffled_arm_permutes_the_cohort_labels_only():
    """shuffled-synth->real pre-trains on the same synthetic images with their label rows
    permuted: same pixels, same label counts, labels no longer tied to their images."""
    real = _set(10)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 8, 8), dtype=np.uint8)
    targets = (rng.random((50, 2)) < 0.3).astype(np.float32)
    targets[3, 1] = np.nan  # an unknown label travels with its row
    synth = ArraySet(images, targets, np.array([f"synthetic-{i}" for i in range(50)]))
    tr, pre = B.arm_data(B.SHUFFLED, real, synth, 2.0, 0)
    assert tr is real and len(pre) == len(synth)
    assert np.array_equal(pre.images, synth.images)  # same images, same order
    assert np.array_equal(pre.patient_ids, synth.patient_ids)
    assert not np.array_equal(pre.targets, synth.targets, equal_nan=True)  # labels moved
    def rows(t):
        return sorted(map(tuple, np.nan_to_num(t, nan=-1).tolist()))

    assert rows(pre.targets) == rows(synth.targets)  # whole label rows permuted, none altered
    assert np.array_equal(np.nansum(pre.targets, axis=0), np.nansum(synth.targets, axis=0))
    assert np.array_equal(np.isnan(pre.targets).sum(axis=0), np.isnan(synth.targets).sum(axis=0))
    again = B.arm_data(B.SHUFFLED, real, synth, 2.0, 0)[1]
    assert np.array_equal(again.targets, pre.targets, equal_nan=True)  # a function of the seed
    other = B.arm_data(B.SHUFFLED, real, synth, 2.0, 1)[1]
    assert not np.array_equal(other.targets, pre.targets, equal_nan=True)
    assert B.SHUFFLED in B.SYNTH_ARMS and B.SHUFFLED in B.PRETRAIN_ARMS
    with pytest.raises(Exception, match="needs a synthetic cohort"):
        B.arm_data(B.SHUFFLED, real, None, 1.0, 0)


def test_jobs_and_config_checks(tmp_path):
    cfg = B.BenchConfig(real_fracs=[0.1, 1.0], arms=["real+dup"], seeds=2, subsets=3)
    js = B.jobs(cfg)
    assert len(js) == 2 * 3 * 2 * 2 and js[0] == (0.1, 0, "real", 0)  # real is always the reference
    assert js[1] == (0.1, 0, "real+dup", 0) and len(set(js)) == len(js)
    assert {j[1] for j in js} == {0, 1, 2} and {j[3] for j in js} == {0, 1}
    assert len({B.job_dir(tmp_path, *j) for j in js}) == len(js)  # one folder per job
    assert B.job_dir(tmp_path, 0.1, 2, "synth->real", 1).name == "frac0.1_draw2_synth-to-real_seed1"
    for bad in ({"real_fracs": [0.0]}, {"real_fracs": [1.5]}, {"real_fracs": [float("nan")]},
                {"real_fracs": []}, {"arms": []}, {"arms": ["real+noise"]}, {"seeds": 0},
                {"subsets": 0}, {"steps": 1}, {"steps": 0}, {"pretrain_share": 0.0},
                {"pretrain_share": 1.0}, {"pretrain_share": float("nan")}, {"synth_ratio": 0.0},
                {"n_boot": 5}):
        with pytest.raises(ConfigError):
            B.BenchConfig(**bad).validate()

    # every arm trains exactly `steps`; pre-training arms split them, both parts >= 1 step
    for steps in (2, 3, 4, 7, 200, 1001):
        for share in (0.01, 0.25, 0.5, 0.9, 0.99):
            c = B.BenchConfig(steps=steps, pretrain_share=share)
            c.validate()
            pre, fine = c.split_steps()
            assert pre + fine == steps and pre >= 1 and fine >= 1
    assert B.BenchConfig(steps=200, pretrain_share=0.25).split_steps() == (50, 150)

    # the primary comparison: declared FRAC:ARM, always against real+dup
    arms = ["real", "real+dup", "real+synth", "synth->real"]
    c = B.BenchConfig(real_fracs=[0.05, 1.0], arms=arms, primary="1:synth->real")
    c.validate()
    assert c.primary_comparison() == (1.0, "synth->real")
    default = B.BenchConfig(real_fracs=[1.0, 0.05], arms=["synth->real", *arms[:3]])
    assert default.primary_comparison() == (0.05, "real+synth")  # smallest fraction, first synthetic arm
    assert B.BenchConfig(arms=["real", "real+synth"]).primary_comparison() is None  # no real+dup
    assert B.BenchConfig(arms=["real", "real+dup"]).primary_comparison() is None  # nothing synthetic
    for primary in ("synth->real", "abc:synth->real", "0.5:synth->real", "0.05:real+dup",
                    "0.05:gen-data->real", "0.05:bogus"):
        with pytest.raises(ConfigError, match="primary"):
            B.BenchConfig(real_fracs=[0.05, 1.0], arms=arms, primary=primary).validate()
    with pytest.raises(ConfigError, match="primary"):  # the control is missing
        B.BenchConfig(real_fracs=[0.05], arms=["real", "real+synth"], primary="0.05:real+synth").validate()


def test_real_splits_have_no_leakage(kermany_fixture, tmp_path):
    cfg = B.BenchConfig(data=str(kermany_fixture), image_size=16, min_positive=1)
    real = B.load_real_splits(cfg, tmp_path / "splits.csv", cfg.image_size, cfg.split_seed)
    train_p, val_p, test_p = set(real.train.patient_ids), set(real.val.patient_ids), set(real.test.patient_ids)
    assert not (train_p & test_p) and not (val_p & test_p) and not (train_p & val_p)
    assert real.labels == ["Pneumonia"] and len(real.test) == 6


@pytest.mark.parametrize("args,msg", [
    (["--real-frac", "0"], "must be in (0, 1]"),
    (["--real-frac", "1.2"], "must be in (0, 1]"),
    (["--arch", "resnet-9000"], "resnet-9000"),
    (["--arms", "real,real+synth", "--model", "/nonexistent/run"], "no such run folder"),
    (["--arms", "real,real+dup,bogus"], "unknown arm"),
    (["--steps", "1"], "must be >= 2"),
    (["--subsets", "0"], "must be >= 1"),
    (["--primary", "0.5:real+synth"], "primary '0.5:real+synth'"),
    (["--primary", "0.01:real+dup"], "primary '0.01:real+dup'"),
    (["--set", "pretrain_share=1.0"], "pretrain_share 1.0"),
])
def test_bad_arguments(args, msg, tmp_path, capsys):
    assert main(["bench", "--out", str(tmp_path / "b"), *args]) == 2
    assert msg in capsys.readouterr().err


def test_missing_cohort(tmp_path, capsys):
    assert main(["bench", "--synth", str(tmp_path / "nope"), "--arms", "real,real+synth"]) == 2
    assert "no manifest.csv" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_end_to_end_on_sample(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["bench", "--arms", "real,real+dup", "--real-frac", "0.1,1.0", "--arch", "resnet10t",
                 "--image-size", "32", "--steps", "4", "--set", "n_boot=50",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert {c["arm"] for c in res["cells"]} == {"real", "real+dup"}
    assert res["test"]["n_images"] == 90 and (out / "mauc.png").is_file()


def test_strict_needs_a_generator_run(tmp_path, capsys):
    assert main(["bench", "--strict", "--arms", "real,real+synth", "--out", str(tmp_path / "b")]) == 2
    assert "--strict" in capsys.readouterr().err
