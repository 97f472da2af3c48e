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


def test_jobs_and_config_checks():
    cfg = B.BenchConfig(real_fracs=[0.1, 1.0], arms=["real+dup"], seeds=2)
    js = B.jobs(cfg)
    assert len(js) == 8 and js[0] == (0.1, "real", 0)  # real is always run as the reference
    for bad in ({"real_fracs": [0.0]}, {"real_fracs": [1.5]}, {"real_fracs": [float("nan")]},
                {"real_fracs": []}, {"arms": []}, {"arms": ["real+noise"]}, {"seeds": 0}):
        with pytest.raises(ConfigError):
            B.BenchConfig(**bad).validate()


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
                 "--image-size", "32", "--set", "classifier.max_epochs=1", "--set", "n_boot=50",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert {c["arm"] for c in res["cells"]} == {"real", "real+dup"}
    assert res["test"]["n_images"] == 90 and (out / "mauc.png").is_file()


def test_strict_needs_a_generator_run(tmp_path, capsys):
    assert main(["bench", "--strict", "--arms", "real,real+synth", "--out", str(tmp_path / "b")]) == 2
    assert "--strict" in capsys.readouterr().err


def test_strict_generator_sees_only_the_classifier_subset(tmp_path_factory, tmp_path):
    """--strict: the generator for fraction F is trained on exactly the classifier's real subset,
    and the synthetic arm's job records that generator's real fraction."""
    from conftest import train_tiny_run

    from cxraug.core.runs import RunDir
    from cxraug.data.splits import real_subset
    from cxraug.diffusion.prepare import training_dataset

    _, run, root = train_tiny_run(tmp_path_factory)
    cfg = B.BenchConfig(data=str(root), image_size=32, min_positive=1, real_fracs=[0.5],
                        arms=["real", "real+synth"], n_boot=20)
    cfg.classifier.arch, cfg.classifier.max_epochs = "resnet10t", 1
    out = tmp_path / "bench"
    report = B.run_bench(cfg, out, model=run.root, n_synth=4, strict=True,
                         generator_overrides=["train.steps=2", "adapter.steps=1"], progress=False)
    gen = out / "generators" / "frac0.5"
    gen_cfg = B.generator_config(run.root, 0.5, cfg, ["train.steps=2", "adapter.steps=1"])
    seen = set(training_dataset(gen_cfg, RunDir(gen)).ids)
    real = B.load_real_splits(cfg, run.root / "splits.csv", cfg.image_size, cfg.split_seed)
    assert seen == set(real_subset(real.train, 0.5, seed=cfg.subset_seed).ids)
    assert len(seen) < len(real.train)
    synth_job = next(j for j in report["jobs"] if j["arm"] == "real+synth")
    assert synth_job["generator_real_frac"] == 0.5
    assert report["synthetic"]["protocol"] == "strict"
