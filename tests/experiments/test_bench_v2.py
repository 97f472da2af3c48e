"""cxraug bench v2: the gen-data->real control arm and transfer efficiency, external test sets
(--test-data) with resume from saved classifiers, and --pretrained initialisation."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from conftest import REPO, generator_run, tiny_config, write_cohort, write_png
from safetensors.torch import save_file

from cxraug.classify.model import Classifier, init_name
from cxraug.cli.main import main
from cxraug.core.errors import CxraugError, WeightsError
from cxraug.data.splits import real_subset
from cxraug.experiments import bench as B
from cxraug.metrics.auc import mean_auc
from cxraug.metrics.bootstrap import paired_difference


def _cfg(data, **kw):
    cfg = B.BenchConfig(data=str(data), image_size=16, min_positive=1, n_boot=20, steps=4, **kw)
    cfg.classifier.arch = "resnet10t"
    return cfg


def _hospital(folder, n=10):
    """A manifest-layout dataset labelled for Pneumonia only (no 'No Finding' column)."""
    rows = ["path,patient_id,Pneumonia"]
    for i in range(n):
        write_png(folder / f"im{i}.png", seed=50 + i)
        rows.append(f"im{i}.png,H{i // 2},{i % 2}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder


def _sha(path):
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ------------------------------------------------------------------- transfer efficiency


def _scores(rng, y, strength):
    return (strength * y + rng.normal(0, 1, y.shape)).astype(np.float32)


def test_transfer_ratio_is_the_ratio_of_paired_differences_on_the_same_replicates():
    from cxraug.metrics import hierarchical as H

    rng = np.random.default_rng(0)
    y = (rng.random((200, 2)) < 0.4).astype(np.float32)
    pids = np.array([f"p{i // 2}" for i in range(200)])
    ref, num, den = _scores(rng, y, 0.2), _scores(rng, y, 1.0), _scores(rng, y, 2.5)
    flat = ref + rng.normal(0, 1e-3, ref.shape).astype(np.float32)  # no better than ref
    point, boot = H.job_resamples(y, [ref, num, den, flat], pids, 200, seed=3)
    job = {k: (point[i].reshape(1, 1), boot[i].reshape(1, 1, -1)) for i, k in enumerate(("ref", "num", "den", "flat"))}

    def diff(a):
        return job[a][0] - job["ref"][0], job[a][1] - job["ref"][1]

    q = H.ratio(diff("num"), diff("den"))
    assert q["reason"] is None and q["value"] == pytest.approx(diff("num")[0].item() / diff("den")[0].item())
    assert q["denominator_ci"] == H.summarise(*diff("den"))["ci"]  # the same replicates
    assert q["ci"][0] < q["value"] < q["ci"][1] and 0 < q["value"] < 1
    u = H.ratio(diff("num"), diff("flat"))
    assert u["value"] is None and u["ci"] is None and "includes 0" in u["reason"]


# --------------------------------------------------------------------- gen-data->real


def test_gen_data_arm_pretrains_on_the_generator_images_paper(kermany_fixture, tmp_path):
    """Paper protocol: gen-data->real pre-trains on the whole training split (the generator's
    real_frac is 1), once per seed; every arm trains the same number of optimiser steps; results
    record the generator, the init and the transfer efficiency, computed from the same paired
    differences as the cells' vs real."""
    run = generator_run(kermany_fixture, tmp_path / "gen")
    weights = tmp_path / "r10.safetensors"
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), str(weights))
    cfg = _cfg(kermany_fixture, real_fracs=[0.5], arms=["real", "synth->real", "gen-data->real"])
    cfg.classifier.pretrained = str(weights)
    out = tmp_path / "b"
    report = B.run_bench(cfg, out, synth=write_cohort(tmp_path / "cohort"), model=run, progress=False)

    real = B.load_real_splits(cfg, run / "splits.csv", cfg.image_size, cfg.split_seed)
    jobs = {j["arm"]: j for j in report["jobs"]}
    gen = jobs["gen-data->real"]
    assert gen["n_pretrain"] == gen["generator_real_images"] == len(real.train)
    assert gen["generator_real_frac"] == 1.0 and gen["n_real"] < len(real.train)
    assert jobs["synth->real"]["n_pretrain"] == 8 and jobs["real"]["generator_real_images"] is None
    pre_steps = cfg.split_steps()[0]
    assert (out / "pretrain" / f"gen-data_frac1_steps{pre_steps}_seed0" / "model.safetensors").is_file()
    assert report["generator"]["generators"]["all"]["images"] == len(real.train)
    assert report["protocol"] == "paper"

    # equal compute: every arm trains cfg.steps optimiser steps, pre-training arms split them
    bs = cfg.classifier.batch_size
    for arm, j in jobs.items():
        pre = pre_steps if arm in B.PRETRAIN_ARMS else 0
        assert (j["optimizer_steps"], j["pretrain_steps"], j["finetune_steps"]) == (cfg.steps, pre, cfg.steps - pre)
        assert j["images_seen"] == cfg.steps * bs and j["selection"] == "final"
        assert (j["draw"], j["subset_seed"]) == (0, cfg.subset_seed)
    assert {c["arm"]: c["optimizer_steps"] for c in report["cells"]} == {a: [cfg.steps] for a in jobs}
    assert report["statistics"]["steps"] == cfg.steps and report["statistics"]["pretrain_steps"] == pre_steps

    init = _sha(weights)
    assert report["init"] == init and {j["init"] for j in report["jobs"]} == {init}
    saved = Classifier.from_pretrained(B.job_dir(out, 0.5, 0, "real", 0) / "model")
    assert saved.meta["init"] == init

    y = real.test.targets
    mauc = {a: mean_auc(y, np.load(B.job_dir(out, 0.5, 0, a, 0) / "test_scores.npy")) for a in jobs}
    cells = {c["arm"]: c for c in report["cells"]}
    assert cells["real"]["estimate"] == pytest.approx(mauc["real"]) and "vs_real" not in cells["real"]
    te = report["transfer_efficiency"][0]
    assert te["frac"] == 0.5
    assert te["numerator"] == pytest.approx(mauc["synth->real"] - mauc["real"])
    assert te["numerator"] == pytest.approx(cells["synth->real"]["vs_real"]["estimate"])
    assert te["denominator"] == pytest.approx(mauc["gen-data->real"] - mauc["real"])
    assert te["denominator"] == pytest.approx(cells["gen-data->real"]["vs_real"]["estimate"])
    assert te["denominator_ci"] == cells["gen-data->real"]["vs_real"]["ci"]  # same replicates
    lo, hi = te["denominator_ci"]
    if lo <= 0 <= hi:
        assert te["value"] is None and te["ci"] is None and "includes 0" in te["reason"]
    else:
        assert te["value"] == pytest.approx(te["numerator"] / te["denominator"])
        assert te["reason"] is None and len(te["ci"]) == 2


def test_gen_data_arm_strict_uses_the_fraction_subset(kermany_fixture, tmp_path):
    """--strict: each subset draw's gen-data->real pre-trains on that draw's real subset only (its
    own pre-trained classifier: another draw's subset holds images outside this one)."""
    run = generator_run(kermany_fixture, tmp_path / "gen")
    cfg = _cfg(kermany_fixture, real_fracs=[0.5], arms=["real", "gen-data->real"], subsets=2)
    out = tmp_path / "b"
    report = B.run_bench(cfg, out, model=run, strict=True, progress=False)
    real = B.load_real_splits(cfg, run / "splits.csv", cfg.image_size, cfg.split_seed)
    subsets = [real_subset(real.train, 0.5, seed=cfg.subset_seed + d) for d in range(2)]
    assert set(subsets[0].ids) != set(subsets[1].ids)
    pre_steps = cfg.split_steps()[0]
    for d, subset in enumerate(subsets):
        gen = next(j for j in report["jobs"] if j["arm"] == "gen-data->real" and j["draw"] == d)
        assert gen["n_pretrain"] == gen["generator_real_images"] == len(subset) < len(real.train)
        assert gen["generator_real_frac"] == 0.5 and gen["subset_seed"] == cfg.subset_seed + d
        assert gen["pretrain_steps"] + gen["finetune_steps"] == gen["optimizer_steps"] == cfg.steps
        assert (out / "pretrain" / f"gen-data_frac0.5_draw{d}_steps{pre_steps}_seed0" / "config.json").is_file()
    assert len(list((out / "pretrain").iterdir())) == 2  # one pre-training per draw
    assert report["generator"] == {"protocol": "strict", "model": str(run),
                                   "generators": {f"0.5_draw{d}": {"real_frac": 0.5, "images": len(sub)}
                                                  for d, sub in enumerate(subsets)}}
    assert report["transfer_efficiency"] == []  # needs synth->real too


def test_gen_data_arm_needs_agenerator_run(kermany_fixture, tmp_path, capsys):
    cohort = write_cohort(tmp_path / "cohort")
    assert main(["bench", "--arms", "real,gen-data->real", "--synth", str(cohort),
                 "--out", str(tmp_path / "b")]) == 2
    assert "pass --model RUN" in capsys.readouterr().err
    with pytest.raises(CxraugError, match="--model RUN"):
        B.run_bench(_cfg(kermany_fixture, arms=["real", "gen-data->real"]), tmp_path / "b2",
                    synth=cohort, progress=False)
    (tmp_path / "bare").mkdir()  # a recipe without splits: which images it saw is unknown
    from cxraug.core import config as C

    C.save(tiny_config(kermany_fixture), tmp_path / "bare")
    with pytest.raises(CxraugError, match="neither splits.csv"):
        B.run_bench(_cfg(kermany_fixture, arms=["real", "gen-data->real"]), tmp_path / "b3",
                    model=tmp_path / "bare", progress=False)


# --------------------------------------------------------------------------- --test-data


def test_test_data_scores_other_datasets_and_resume_adds_one(kermany_fixture, nih_fixture,
                                                             tmp_path, capsys, monkeypatch):
    from cxraug.cli.common import console

    monkeypatch.setattr(console, "_width", 200)  # a wide terminal: the table's headers unwrapped
    hospital = _hospital(tmp_path / "hospital")
    out = tmp_path / "b"
    args = ["bench", "--data", str(kermany_fixture), "--labels", "Pneumonia,No Finding",
            "--arms", "real", "--real-frac", "1.0", "--arch", "resnet10t", "--image-size", "16",
            "--steps", "4", "--set", "n_boot=20", "--set", "min_positive=1",
            "--out", str(out), "--test-data", str(hospital)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "hospital mAUC" in printed
    assert "skipped: No Finding (not labelled there)" in " ".join(printed.split())
    res = json.loads((out / "results.json").read_text())
    assert res["test_sets"]["hospital"]["labels"] == ["Pneumonia"]
    assert res["test_sets"]["hospital"]["skipped"] == {"No Finding": "not labelled there"}
    job = B.job_dir(out, 1.0, 0, "real", 0)
    with np.load(job / "external" / "hospital.npz") as z:
        scores = z["scores"]
    assert scores.shape == (10, 2)
    y = np.array([[i % 2] for i in range(10)], np.float32)
    ext = res["cells"][0]["external"]["hospital"]
    assert ext["estimate"] == pytest.approx(mean_auc(y, scores[:, :1]))  # one job: its mAUC
    assert (ext["draws"], ext["seeds"]) == (1, 1) and ext["ci"][0] <= ext["ci"][1]

    weights, result = job / "model" / "model.safetensors", job / "result.json"
    stamps = (weights.stat().st_mtime_ns, result.stat().st_mtime_ns)
    assert main([*args, "--test-data", str(nih_fixture)]) == 0  # resume: one more test set
    assert (weights.stat().st_mtime_ns, result.stat().st_mtime_ns) == stamps  # not retrained
    res2 = json.loads((out / "results.json").read_text())
    assert set(res2["test_sets"]) == {"hospital", "nih14"}
    assert res2["test_sets"]["nih14"]["labels"] == ["Pneumonia"]  # NIH marks No Finding only as 1
    assert "0 negative" in res2["test_sets"]["nih14"]["skipped"]["No Finding"]
    with np.load(job / "external" / "nih14.npz") as z:
        nih_scores = z["scores"]
    t = B.load_test_sets([str(nih_fixture)], _cfg(kermany_fixture), ["Pneumonia", "No Finding"])[0]
    model = Classifier.from_pretrained(job / "model")
    assert np.allclose(nih_scores, model.predict_proba(t.data.images), atol=1e-6)
    assert res2["cells"][0]["external"]["hospital"] == res["cells"][0]["external"]["hospital"]
    assert res2["cells"][0]["external"]["nih14"]["estimate"] == pytest.approx(
        mean_auc(t.data.targets[:, :1], nih_scores[:, :1]))


def test_test_data_errors_are_one_line(kermany_fixture, tmp_path, capsys):
    base = ["bench", "--data", str(kermany_fixture), "--arms", "real", "--set", "min_positive=1",
            "--image-size", "16", "--out", str(tmp_path / "b")]
    unlabelled = tmp_path / "folder"
    write_png(unlabelled / "a.png")
    assert main([*base, "--test-data", str(unlabelled)]) == 2
    err = capsys.readouterr().err
    assert "nothing to score" in err and "Traceback" not in err
    assert main([*base, "--test-data", str(kermany_fixture)]) == 2
    assert "is the bench's own --data" in capsys.readouterr().err


# ---------------------------------------------------------------------------- --pretrained


class _NotATensor:  # pickled into a checkpoint: torch.load(weights_only=True) must refuse it
    pass


def test_pretrained_local_files_adapt_to_one_channel(tmp_path):
    src = timm.create_model("resnet18", pretrained=False)  # random, 3 channels, 1000 classes
    sd = src.state_dict()
    save_file(sd, str(tmp_path / "r18.safetensors"))
    m = Classifier("resnet18", ["Pneumonia"], image_size=16, pretrained=str(tmp_path / "r18.safetensors"))
    got = m.net.state_dict()
    assert torch.allclose(got["conv1.weight"], sd["conv1.weight"].sum(dim=1, keepdim=True), atol=1e-6)
    assert torch.equal(got["layer3.1.conv2.weight"], sd["layer3.1.conv2.weight"])
    assert m.net.fc.weight.shape == (1, 512)
    assert m.meta["init"] == init_name(str(tmp_path / "r18.safetensors")) == _sha(tmp_path / "r18.safetensors")
    assert init_name(None) == "random" and init_name("resnet18.a1_in1k") == "resnet18.a1_in1k"

    torch.save({"state_dict": sd}, tmp_path / "r18.pth")  # a plain tensor checkpoint
    m2 = Classifier("resnet18", ["Pneumonia"], image_size=16, pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(m2.net.state_dict()["conv1.weight"], got["conv1.weight"])
    torch.save({"state_dict": sd, "extra": _NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(WeightsError, match="never unpickles"):
        Classifier("resnet18", ["Pneumonia"], pretrained=str(tmp_path / "code.pth"))
    with pytest.raises(WeightsError, match="--arch resnet18"):
        Classifier("resnet10t", ["Pneumonia"], pretrained="resnet18.a1_in1k")


def test_pretrained_name_offline_fails_in_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "OMP_NUM_THREADS": "1"}
    code = ("import sys; from cxraug.cli.main import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "bench", "--arms", "real", "--arch", "resnet10t",
                        "--pretrained", "resnet10t.c3_in1k", "--out", str(tmp_path / "b")],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "downloading the weights failed" in lines[0]
    assert "--pretrained path/to/weights.safetensors" in lines[0]


def test_resume_with_other_settings_is_refused(kermany_fixture, tmp_path, capsys):
    """A bench folder reuses finished jobs by (fraction, draw, arm, seed) alone, so resuming it with
    other classifier settings or another step budget would mix two experiments in one table: one
    line, nothing overwritten. More fractions, arms, draws or seeds (new jobs) are a resume."""
    out = tmp_path / "b"
    args = ["bench", "--data", str(kermany_fixture), "--arms", "real", "--real-frac", "1.0",
            "--image-size", "16", "--set", "min_positive=1", "--set", "n_boot=20",
            "--steps", "4", "--arch", "resnet10t", "--out", str(out)]
    assert main(args) == 0
    saved = (out / "config.yaml").read_text()
    capsys.readouterr()
    assert main([*args, "--set", "classifier.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "classifier.lr=0.001" in err and "new --out" in err and "Traceback" not in err
    assert (out / "config.yaml").read_text() == saved
    assert main([*args[:-2], "--steps", "6", "--out", str(out)]) == 2  # equal compute across jobs
    err = capsys.readouterr().err
    assert "steps=4" in err and "Traceback" not in err
    assert (out / "config.yaml").read_text() == saved
    assert main([*args[:-2], "--real-frac", "0.5,1.0", "--seeds", "2", "--subsets", "2",
                 "--out", str(out)]) == 0
    assert len(list((out / "jobs").iterdir())) == 2 * 2 * 2
    assert (out / "jobs" / "frac0.5_draw1_real_seed1" / "result.json").is_file()
    (out / "config.yaml").write_text("[not: a, config")  # damaged: one line, not a traceback
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not a bench config" in err and "Traceback" not in err


def test_generator_trained_on_test_images_is_refused(kermany_fixture, tmp_path):
    """An exported generator lists its training images; one that saw an image of the bench's test
    split would leak it into the synthetic arms' classifiers, so the bench refuses it."""
    from cxraug.classify.real import load_real_splits
    from cxraug.experiments.bench.generators import check_unseen_test

    cfg = _cfg(kermany_fixture)
    real = load_real_splits(cfg, tmp_path / "splits.csv", cfg.image_size, cfg.split_seed)
    model = tmp_path / "model"
    model.mkdir()
    train_ids = np.asarray(real.train.ids, dtype=str)
    np.savez(model / "reference.npz", train_ids=train_ids)
    check_unseen_test(real, model, "mine")  # trained on the training split only: fine
    np.savez(model / "reference.npz", train_ids=np.append(train_ids, real.held_out_ids["test"][:2]))
    with pytest.raises(CxraugError, match=r"mine: .* trained on 2 images of this bench's test split"):
        check_unseen_test(real, model, "mine")


def test_synthetic_arms_are_compared_with_the_duplicate_control(kermany_fixture, tmp_path, capsys):
    """The question that matters: does a synthetic arm beat count-matched duplicated real images?
    Each synthetic cell gets a paired difference vs real+dup (same bootstrap as vs real), the
    default primary comparison is the smallest fraction's first synthetic arm, and the CLI prints
    it under the table; real and real+dup themselves get none."""
    cohort = write_cohort(tmp_path / "cohort")
    out = tmp_path / "b"
    assert main(["bench", "--data", str(kermany_fixture), "--arms", "real,real+dup,synth->real",
                 "--synth", str(cohort), "--real-frac", "0.5", "--image-size", "16", "--arch", "resnet10t",
                 "--set", "min_positive=1", "--set", "n_boot=20", "--steps", "4",
                 "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    report = json.loads((out / "results.json").read_text())
    cells = {c["arm"]: c for c in report["cells"]}
    assert "vs_dup" not in cells["real+dup"] and "vs_dup" not in cells["real"]
    assert "vs_real" in cells["real+dup"] and "vs_real" not in cells["real"]
    real = B.load_real_splits(_cfg(kermany_fixture), out / "splits.csv", 16, 0)
    scores = {a: np.load(B.job_dir(out, 0.5, 0, a, 0) / "test_scores.npy") for a in ("synth->real", "real+dup")}
    d = paired_difference(real.test.targets, scores["synth->real"], scores["real+dup"],
                          real.test.patient_ids, 20, seed=0, label_names=real.labels)
    vs_dup = cells["synth->real"]["vs_dup"]
    assert vs_dup["estimate"] == pytest.approx(d["diff"]) and len(vs_dup["ci"]) == 2
    assert vs_dup["ci"][0] <= vs_dup["ci"][1] and 0 < vs_dup["p_value"] <= 1
    primary = report["primary"]
    assert (primary["frac"], primary["arm"], primary["reference"]) == (0.5, "synth->real", "real+dup")
    assert primary["estimate"] == vs_dup["estimate"] and primary["ci"] == vs_dup["ci"]
    assert primary["p_value"] == vs_dup["p_value"] and report["family"] == []
    assert "primary comparison" in printed
    assert f"synth->real - real+dup = {d['diff']:+.3f}" in printed
    assert f"p = {primary['p_value']:.3f}" in printed
    # without gen-data->real there is no transfer efficiency, not an "undefined" row per fraction
    assert report["transfer_efficiency"] == [] and "undefined" not in printed
