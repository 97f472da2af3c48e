"""``cxraug synth`` end to end on a tiny trained run: files, provenance, invariance to batch size
and shards, resume after a real kill, argument checks, gates and --until-accepted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxraug.cli.main import main
from cxraug.cohorts.store import read_manifest
from cxraug.data import labels as L
from cxraug.data.transforms import load_dicom, load_grayscale

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """All stages of a tiny Diff-CXR, trained once for this module (conftest.train_tiny_run)."""
    from conftest import train_tiny_run

    return train_tiny_run(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A real (untrained, seeded) Classifier component folder for the fidelity gate."""
    from cxraug.classify.model import Classifier

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clf") / "clf"
    Classifier("resnet10t", ["Pneumonia", "No Finding"], image_size=32).save_pretrained(folder)
    return folder


def synth(run, out, *args):
    return main(["synth", "--model", str(run.root), "--labels", "pneumonia", "--out", str(out),
                 "--steps", "3", *args])


def _manifest(out):
    return read_manifest(out / "manifest.csv")


def _accepted(m):
    return m["accepted"]


def _same_images(a, b, files):
    return max(int(np.abs(load_grayscale(a / f).astype(int) - load_grayscale(b / f).astype(int)).max())
               for f in files)


@pytest.fixture(scope="module")
def reference(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("cohorts") / "ref"
    assert synth(tiny_run, out, "--n", "12", "--negatives", "0.25", "--batch-size", "4") == 0
    return out


def test_cohort_files_manifest_and_card(tiny_run, reference):
    from cxraug.cohorts.generator import folder_hash

    m = _manifest(reference)
    assert m["index"].tolist() == list(range(12)) and m["id"].is_unique
    for col in ("id", "file", "seed", "prompt", "hint", "target", *L.OBSERVATIONS, "sampler", "steps",
                "guidance", "generator", "fidelity", "memorisation", "nn_ssim", "accepted", "reason"):
        assert col in m.columns, col
    assert m["target"].value_counts().to_dict() == {"pneumonia": 9, "negative": 3}
    pneu = m[m["target"] == "pneumonia"]
    assert (pneu["Pneumonia"] == 1.0).all() and (pneu["hint"] == "There is pneumonia.").all()
    assert (m.loc[m["target"] == "negative", "hint"] == "There is no finding.").all()
    assert (m["prompt"].str.len() > 0).all() and m["seed"].nunique() == 12
    assert (m["generator"] == folder_hash(tiny_run.vae, tiny_run.text, tiny_run.denoiser,
                                          tiny_run.adapter)).all()
    assert (m["fidelity"] == "not run").all() and set(m["memorisation"]) <= {"pass", "fail"}
    assert (_accepted(m) == m["file"].str.startswith("images/")).all()
    for f in m["file"]:
        img = load_grayscale(reference / f)
        assert img.shape == (32, 32) and img.dtype == np.uint8
    on_disk = sorted(str(p.relative_to(reference)) for d in ("images", "rejected")
                     for p in (reference / d).iterdir())
    assert on_disk == sorted(m["file"])
    plan = pd.read_csv(reference / "plan.csv", keep_default_na=False)
    assert plan["seed"].tolist() == m["seed"].tolist() and plan["prompt"].tolist() == m["prompt"].tolist()
    card = json.loads((reference / "cohort.json").read_text())
    assert card["synthetic"] and card["counts"]["requested"] == card["counts"]["generated"] == 12
    assert card["counts"]["accepted"] + card["counts"]["rejected"] == 12
    assert card["generator"]["trained_on"]["images"] == card["gates"]["memorisation"]["n_reference"]
    readme = (reference / "README.md").read_text()
    assert "synthetic" in readme and str(tiny_run.root) in readme and "memorisation" in readme
    assert {Path(p).name for p in card["grids"].values()} <= {"pneumonia.png", "negative.png"}


def test_batch_size_and_shards_do_not_change_the_cohort(tiny_run, reference, tmp_path):
    out = tmp_path / "sharded"
    common = ("--n", "12", "--negatives", "0.25", "--batch-size", "3")
    assert synth(tiny_run, out, *common, "--shard", "1/2") == 0
    assert not (out / "manifest.csv").exists()  # shard 0 still missing
    assert synth(tiny_run, out, *common, "--shard", "0/2") == 0
    a, b = _manifest(reference), _manifest(out)
    # bf16 products (precision auto on CPUs with bf16 units) may move a pixel by one gray level
    # and so a gate score in its last digits; every other field is identical
    scores = ["nn_cosine", "nn_ssim"]
    assert a.drop(columns=["seconds", *scores]).equals(b.drop(columns=["seconds", *scores]))
    np.testing.assert_allclose(a[scores].astype(float), b[scores].astype(float), atol=0.01)
    assert _same_images(reference, out, a["file"]) <= 1
    parts = sorted(p.name for p in (out / "parts").iterdir())
    assert parts == ["shard-0-of-2.jsonl", "shard-1-of-2.jsonl"]


def test_fp32_cohorts_are_identical_across_batch_sizes_and_shards(tiny_run, tmp_path):
    common = ("--n", "6", "--set", "precision=fp32")
    assert synth(tiny_run, tmp_path / "a", *common, "--batch-size", "6") == 0
    for i in range(3):
        assert synth(tiny_run, tmp_path / "b", *common, "--batch-size", "1", "--shard", f"{i}/3") == 0
    a, b = _manifest(tmp_path / "a"), _manifest(tmp_path / "b")
    assert a.drop(columns="seconds").equals(b.drop(columns="seconds"))
    assert _same_images(tmp_path / "a", tmp_path / "b", a["file"]) == 0
    settings = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert settings["precision"] == "fp32" and "batch_size" not in settings


@pytest.mark.slow
def test_resume_after_a_real_kill(tiny_run, tmp_path):
    """SIGKILL a running `cxraug synth`, damage the folder the way a kill can, rerun, compare."""
    from cxraug.diffusion.pipeline import DiffCXRPipeline

    out = tmp_path / "killed"
    args = ["synth", "--model", str(tiny_run.root), "--labels", "pneumonia", "--out", str(out),
            "--n", "24", "--steps", "10", "--batch-size", "2", "--gates", "memorisation"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "cxraug.cli.main", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    count = lambda: sum(1 for d in ("images", "rejected") if (out / d).is_dir()
                        for p in (out / d).iterdir() if not p.name.startswith("."))
    while count() < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before the kill: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.csv").exists()
    part = out / "parts" / "shard-0-of-1.jsonl"
    done = [json.loads(x)["index"] for x in part.read_text().splitlines()]
    assert 0 < len(done) < 24
    # the worst moments of a kill: a half-written row, a temporary file, an image without its row
    with part.open("a") as f:
        f.write('{"id": "000023", "index": 23, "fi')
    (out / "images" / ".000023.png.999.tmp").write_bytes(b"\x89PNG half")
    orphan = max(set(range(24)) - set(done))
    (out / "images" / f"{orphan:06d}.png").write_bytes((out / "plan.csv").read_bytes())

    assert main(args) == 0
    m = _manifest(out)
    assert m["index"].tolist() == list(range(24))
    lines = part.read_text().splitlines()
    assert sorted(json.loads(x)["index"] for x in lines) == list(range(24))  # no duplicate rows
    files = sorted(str(p.relative_to(out)) for d in ("images", "rejected") for p in (out / d).iterdir())
    assert files == sorted(m["file"])  # no leftover temporaries or orphans
    # every image decodes, and the orphan's slot holds the regenerated image, not the junk
    pipe = DiffCXRPipeline.from_pretrained(tiny_run.root)
    rows = m[m["index"].isin([orphan, 0])]
    vecs = rows[list(L.OBSERVATIONS)].replace("", np.nan).to_numpy(np.float32)
    again = pipe(rows["prompt"].tolist(), seeds=rows["seed"].astype(int).tolist(), labels=vecs,
                 steps=10, guidance=float(rows["guidance"].iloc[0]), sampler="dpm++")
    for img, f in zip(again, rows["file"]):
        assert np.abs(img.astype(int) - load_grayscale(out / f).astype(int)).max() <= 1
    # rerunning a finished cohort generates nothing and keeps the manifest
    before = (out / "manifest.csv").read_bytes()
    assert main(args) == 0
    assert (out / "manifest.csv").read_bytes() == before


def test_other_arguments_refuse_to_resume_unless_overwrite(tiny_run, tmp_path, capsys):
    out = tmp_path / "c"
    base = ("--n", "2", "--gates", "none")
    assert synth(tiny_run, out, *base) == 0
    assert synth(tiny_run, out, *base, "--batch-size", "1") == 0  # speed-only: resumes
    capsys.readouterr()
    assert synth(tiny_run, out, "--n", "2", "--gates", "none", "--seed", "1") == 2
    err = capsys.readouterr().err.strip()
    assert "other arguments" in err and "seed" in err and "--overwrite" in err and "\n" not in err
    assert synth(tiny_run, out, *base, "--seed", "1", "--overwrite", "--format", "dicom") == 0
    m = _manifest(out)
    assert m["file"].str.endswith(".dcm").all() and not list((out / "images").glob("*.png"))
    assert load_dicom(out / m["file"][0]).shape == (32, 32)
    other = tmp_path / "not-a-cohort"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert synth(tiny_run, other, *base) == 2
    assert synth(tiny_run, other, *base, "--overwrite") == 2  # never deletes a foreign folder
    assert "not a cxraug cohort" in capsys.readouterr().err and (other / "notes.txt").is_file()


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_run, tmp_path, capsys):
    assert synth(tiny_run, tmp_path / "dry", "--n", "10", "--dry-run") == 0
    text = capsys.readouterr().out
    assert "plan: 10 images" in text and "pneumonia" in text and "negative" in text
    assert not (tmp_path / "dry").exists()


@pytest.mark.parametrize("args, message", [
    (["--labels", "pneumonnia", "--n", "4"], "valid labels are"),
    (["--labels", "pneumonia", "--n", "0"], "--n 0"),
    (["--labels", "pneumonia", "--n", "4", "--shard", "2/2"], "--shard"),
    (["--labels", "pneumonia", "--n", "4", "--shard", "a/b"], "--shard"),
    (["--labels", "pneumonia", "--n", "4", "--shard", "0/0"], "--shard"),
    (["--labels", "pneumonia", "--n", "4", "--gates", "fidelty"], "--gates"),
    (["--labels", "pneumonia", "--n", "4", "--until-accepted", "--shard", "0/2"], "--until-accepted"),
])
def test_bad_arguments_exit_2_with_one_line(tiny_run, tmp_path, capsys, args, message):
    assert main(["synth", "--model", str(tiny_run.root), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_missing_run_folder_exits_2(tmp_path, capsys):
    assert main(["synth", "--model", str(tmp_path / "nope"), "--labels", "pneumonia", "--n", "4",
                 "--out", str(tmp_path / "o")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_until_accepted_stops_at_the_budget_when_nothing_can_pass(tiny_run, classifier_dir, tmp_path):
    out = tmp_path / "impossible"
    assert synth(tiny_run, out, "--n", "4", "--negatives", "0", "--classifier", str(classifier_dir),
                 "--gates", "fidelity", "--until-accepted", "--set", "gate.thresholds={pneumonia: 1.01}",
                 "--set", "max_attempts=2.5") == 0
    m = _manifest(out)
    assert m["index"].tolist() == list(range(10))  # ceil(2.5 * 4) images, then it gives up
    assert (~_accepted(m)).all() and (m["reason"] == "fidelity").all()
    assert m["round"].tolist() == [0] * 4 + [1] * 4 + [2] * 2
    assert (m["fidelity_threshold"].astype(float) == 1.01).all()
    assert "budget reached" in (out / "README.md").read_text()
    assert len(pd.read_csv(out / "topups.csv")) == 6


def test_until_accepted_tops_up_rejected_targets(tiny_run, classifier_dir, tmp_path):
    # 1. Without top-ups, with a threshold every image passes: the round-0 scores.
    common = ("--n", "4", "--negatives", "0", "--classifier", str(classifier_dir), "--gates", "fidelity")
    assert synth(tiny_run, tmp_path / "scores", *common, "--set", "gate.thresholds={pneumonia: 0}") == 0
    scores = _manifest(tmp_path / "scores")["fidelity_score"].astype(float).to_numpy()
    thr = float(np.sort(scores)[1]) + 1e-5  # the two lowest scores fail
    # 2. With that threshold: round 0 rejects two, top-ups replace them.
    out = tmp_path / "topped"
    assert synth(tiny_run, out, *common, "--until-accepted", "--set",
                 f"gate.thresholds={{pneumonia: {thr}}}", "--set", "max_attempts=5") == 0
    m = _manifest(out)
    first = m[m["round"] == 0]
    assert (first["fidelity_score"].astype(float).to_numpy() == scores).all()
    assert (~_accepted(first)).sum() == 2
    assert len(m) > 4 and (m["target"] == "pneumonia").all()
    accepted = _accepted(m).sum()
    assert accepted == 4 or len(m) == 20
    assert accepted <= 4 and m["index"].tolist() == list(range(len(m)))
    card = json.loads((out / "cohort.json").read_text())
    assert card["counts"]["accepted"] == accepted and card["counts"]["requested"] == 4
    # 3. Killed during a top-up round, the rerun replays the same rounds.
    part = out / "parts" / "shard-0-of-1.jsonl"
    part.write_text("".join(part.read_text().splitlines(keepends=True)[:5]))
    (out / "manifest.csv").unlink()
    assert synth(tiny_run, out, *common, "--until-accepted", "--set",
                 f"gate.thresholds={{pneumonia: {thr}}}", "--set", "max_attempts=5") == 0
    again = _manifest(out)
    assert again.drop(columns="seconds").equals(m.drop(columns="seconds"))


def test_a_sampling_option_of_the_model_config_refuses_to_resume(tiny_run, tmp_path, capsys):
    """The model config's sampling options change the images: a cohort records them when on, and
    a cohort started without one does not resume with it."""
    import shutil

    from cxraug.core import config as C
    from cxraug.core.runs import RunDir
    from cxraug.diffusion.config import DiffCXRConfig

    copy = tmp_path / "model"
    shutil.copytree(tiny_run.root, copy)
    out, base = tmp_path / "c", ("--n", "2", "--gates", "none")
    assert synth(RunDir(copy), out, *base) == 0
    assert "sampling" not in json.loads((out / "synth.json").read_text())  # none on: as before
    C.save(C.load(DiffCXRConfig, copy / "config.yaml", ["sample.karras_sigmas=true"]), copy)
    capsys.readouterr()
    assert synth(RunDir(copy), out, *base) == 2
    assert "sampling.karras_sigmas" in capsys.readouterr().err
    assert synth(RunDir(copy), out, *base, "--overwrite") == 0
    assert json.loads((out / "synth.json").read_text())["sampling"] == {"karras_sigmas": True}
