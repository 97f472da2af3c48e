"""Bench protocol v3: equal optimiser steps in every arm, no data from outside the fraction
(no validation reads; strict generators read only the fraction's images, from the bench's data
root), independent subset draws, and the declared primary comparison with a Holm family."""

import json
import shutil

import numpy as np
import pytest
from conftest import train_tiny_run, write_cohort

import cxraug.classify.train as T
from cxraug.data.splits import real_subset
from cxraug.experiments import bench as B

ARMS = ["real", "real+dup", "real+synth", "synth->real", "shuffled-synth->real"]


def _no_validation(*args, **kwargs):
    raise AssertionError("a bench classifier read validation data")


@pytest.mark.no_templates
def test_every_arm_trains_the_budget_and_reads_no_validation(kermany_fixture, tmp_path, monkeypatch,
                                                             one_thread):
    monkeypatch.setattr(T, "evaluate", _no_validation)
    cfg = B.BenchConfig(data=str(kermany_fixture), image_size=16, min_positive=1, n_boot=50,
                        real_fracs=[0.5], arms=ARMS, subsets=2, seeds=1, steps=4)
    cfg.classifier.arch = "resnet10t"
    report = B.run_bench(cfg, tmp_path / "b", synth=write_cohort(tmp_path / "cohort"), progress=False)

    for job in report["jobs"]:
        assert job["optimizer_steps"] == 4 and job["selection"] == "final"
        assert job["images_seen"] == 4 * cfg.classifier.batch_size
        pre = job["arm"] in ("synth->real", "shuffled-synth->real")
        assert (job["pretrain_steps"], job["finetune_steps"]) == ((2, 2) if pre else (0, 4))
        assert job["seconds"] > 0 and (job["pretrain_seconds"] > 0 if pre else job["pretrain_seconds"] == 0)
    assert {(j["draw"], j["subset_seed"]) for j in report["jobs"]} == {(0, 0), (1, 1)}
    real = B.load_real_splits(cfg, tmp_path / "b" / "splits.csv", 16, 0)
    assert set(B.real_subset_set(real, 0.5, cfg, 0).patient_ids) != set(B.real_subset_set(real, 0.5, cfg, 1).patient_ids)

    cells = {c["arm"]: c for c in report["cells"]}
    assert all(c["draws"] == 2 and c["seeds"] == 1 and c["optimizer_steps"] == [4] for c in cells.values())
    assert "vs_dup" in cells["synth->real"] and "vs_dup" not in cells["real"]
    lo, hi = cells["real"]["ci"]
    assert lo <= cells["real"]["estimate"] <= hi
    # declared before the run (config.yaml holds it): the smallest fraction's first synthetic arm
    assert report["primary"]["arm"] == "real+synth" and report["primary"]["frac"] == 0.5
    family = {f["arm"] for f in report["family"]}
    assert family == {"synth->real", "shuffled-synth->real"}
    assert all(f["p_holm"] >= f["p_value"] for f in report["family"])
    assert report["statistics"]["selection"].startswith("final")


def test_shuffled_control_keeps_pixels_and_label_counts():
    data = B.arm_data  # noqa: F841 (the arm is built by arm_data)
    from cxraug.classify.data import ArraySet

    rng = np.random.default_rng(0)
    synth = ArraySet(rng.integers(0, 255, (40, 8, 8), dtype=np.uint8),
                     (np.arange(40) % 4 == 0).astype(np.float32)[:, None], np.arange(40).astype(str))
    real = ArraySet(synth.images[:5], synth.targets[:5], np.arange(5).astype(str))
    train, pre = B.arm_data("shuffled-synth->real", real, synth, 1.0, seed=3)
    assert train is real and (pre.images == synth.images).all()
    assert pre.targets.sum() == synth.targets.sum() and not (pre.targets == synth.targets).all()


@pytest.mark.no_templates
def test_strict_generator_reads_only_the_fraction_from_the_bench_data(tmp_path_factory, tmp_path,
                                                                     monkeypatch, one_thread):
    """Two data roots: the shipped run recorded one, the bench is given a copy elsewhere. Every
    image a strict generator's training, plan and gates read is from the bench's root and in the
    fraction's draw, and the memorisation gate is calibrated inside it."""
    import cxraug.cohorts.generator as G
    import cxraug.diffusion.prepare as P
    import cxraug.diffusion.stages as S

    _, run, recorded_root = train_tiny_run(tmp_path_factory)
    root = tmp_path / "hospital-copy"
    shutil.copytree(recorded_root, root)
    from cxraug.core.locks import lock_path

    out = tmp_path / "bench"
    read: list[tuple[str, str]] = []
    locked: list[tuple[str, bool]] = []  # generator training and cohort hold their locks (job shares wait)
    for module in (S, P, G):
        real_fn = module.cached_images

        def spy(ds, *a, _real=real_fn, _m=module, **kw):
            read.extend(zip(ds.ids, map(str, ds.paths)))
            if _m is S:
                locked.append(("generator", lock_path(out / "generators" / "frac0.5_draw0").exists()))
            if _m is G:  # the cohort too, under a lock of the bench's own
                locked.append(("cohort", lock_path(out / "cohorts" / "frac0.5_draw0", "bench").exists()))
            return _real(ds, *a, **kw)
        monkeypatch.setattr(module, "cached_images", spy)

    cfg = B.BenchConfig(data=str(root), image_size=32, min_positive=1, real_fracs=[0.5],
                        arms=["real", "real+synth"], n_boot=20, steps=2, subset_seed=1)
    cfg.classifier.arch = "resnet10t"
    report = B.run_bench(cfg, out, model=run.root, n_synth=4, strict=True, progress=False,
                         generator_overrides=["train.steps=2", "adapter.steps=1"])

    real = B.load_real_splits(cfg, run.root / "splits.csv", cfg.image_size, cfg.split_seed)
    fraction = set(real_subset(real.train, 0.5, seed=1).ids)
    assert read and {i for i, _ in read} <= fraction and len(fraction) < len(real.train)
    assert all(p.startswith(str(root)) for _, p in read)
    assert {k for k, _ in locked} == {"generator", "cohort"} and all(held for _, held in locked)
    gen = out / "generators" / "frac0.5_draw0"
    assert B.generator_config(run.root, 0.5, cfg).data.data == str(root)
    assert "hospital-copy" in (gen / "config.yaml").read_text()
    gates = json.loads((out / "cohorts" / "frac0.5_draw0" / "gates.json").read_text())
    assert gates["memorisation"]["calibrated_on"].startswith("training images")
    job = next(j for j in report["jobs"] if j["arm"] == "real+synth")
    assert job["generator_real_frac"] == 0.5 and job["optimizer_steps"] == 2


def test_strict_recipe_scales_with_the_subset():
    from cxraug.diffusion.config import DiffCXRConfig
    from cxraug.experiments.bench.generators import MIN_SHARE, scaled_steps

    own = DiffCXRConfig()
    sets = dict(s.split("=") for s in scaled_steps(own, 200, 4000))
    assert int(sets["train.steps"]) == round(own.train.steps * 0.1)  # 5 % of the images -> floor
    sets = dict(s.split("=") for s in scaled_steps(own, 2000, 4000))
    assert int(sets["train.steps"]) == round(own.train.steps * 0.5)
    assert MIN_SHARE == 0.1 and scaled_steps(own, 10, None) == []
