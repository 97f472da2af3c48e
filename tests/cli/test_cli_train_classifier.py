"""``cxraug train classifier``: a real-data classifier folder that cxraug eval and synth accept."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxraug.cli.main import main

pytestmark = pytest.mark.no_templates


def test_train_classifier_then_eval_and_synth_accept_it(kermany_fixture, tmp_path, capsys):
    """One epoch of resnet10t at 32 px on the 24-image Kermany-layout fixture; the run folder
    (and RUN/model) then works as --classifier, and eval computes features with it."""
    from cxraug.classify.model import Classifier
    from cxraug.cli.common import classifier_folder
    from cxraug.experiments.quality.extractors import make_extractor

    run = tmp_path / "run"
    code = main(["train", "classifier", "--data", str(kermany_fixture), "--labels", "pneumonia",
                 "--out", str(run), "--epochs", "1", "--image-size", "32", "--arch", "resnet10t",
                 "--set", "classifier.batch_size=8", "--seed", "3"])
    assert code == 0
    assert {"config.yaml", "splits.csv", "history.json", "metrics.json"} <= {p.name for p in run.iterdir()}
    clf = Classifier.from_pretrained(run / "model")
    assert clf.label_names == ["Pneumonia"] and clf.image_size == 32 and clf.args["arch"] == "resnet10t"
    assert "seed: 3" in (run / "config.yaml").read_text()
    m = json.loads((run / "metrics.json").read_text())
    assert m["labels"] == ["Pneumonia"] and m["data"] == str(kermany_fixture)
    for split in ("val", "test"):
        assert set(m[split]) >= {"mauc", "auc", "n_images", "n_patients"}
    # patient-level splits: Kermany's official test split (6 images); val carved out of the
    # training patients; no patient in two splits
    assert m["test"]["n_images"] == 6 and m["val"]["n_images"] > 0
    assert m["train"]["n_images"] + m["val"]["n_images"] + m["test"]["n_images"] == 24
    splits = pd.read_csv(run / "splits.csv", dtype=str)
    assert len(splits) == 24 and splits.groupby("patient_id")["split"].nunique().max() == 1
    # a second run into the same folder is refused without --overwrite
    capsys.readouterr()
    assert main(["train", "classifier", "--data", str(kermany_fixture), "--out", str(run)]) == 2
    assert "--overwrite" in capsys.readouterr().err

    # the folder as a feature extractor, from Python and through cxraug eval
    assert classifier_folder(run) == run / "model" == classifier_folder(run / "model")
    assert (classifier_folder(run) / "config.json").is_file()  # what synth's fidelity gate checks
    embed, info = make_extractor("classifier", classifier_folder(run))
    feats = embed(np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8))
    assert feats.shape == (3, info["features"]) and np.isfinite(feats).all()
    out = tmp_path / "eval.json"
    code = main(["eval", "--real", str(kermany_fixture), "--synth", str(kermany_fixture / "images_128"),
                 "--classifier", str(run), "--image-size", "32", "--out", str(out)])
    assert code == 0
    card = json.loads(out.read_text())
    assert card["extractor"]["name"] == "classifier" and card["extractor"]["arch"] == "resnet10t"
    assert card["extractor"]["path"] == str((run / "model").resolve())
    assert card["counts"]["real"] == 24 and np.isfinite(card["metrics"]["fid"])


def test_eval_error_names_a_command_that_exists(tmp_path, capsys):
    (tmp_path / "synth").mkdir()
    code = main(["eval", "--real", "sample:kermany", "--synth", str(tmp_path / "synth"),
                 "--classifier", str(tmp_path / "nothing"), "--out", str(tmp_path / "e.json")])
    err = capsys.readouterr().err
    assert code == 2 and "cxraug train classifier" in err
    assert main(["train", "classifier", "--dry-run"]) == 0  # the command it names
    assert "classifier:" in capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    assert "classifier" in capsys.readouterr().out


def test_train_classifier_option_errors(tmp_path, capsys):
    assert main(["train", "vae", "--arch", "resnet18", "--dry-run"]) == 2
    assert "only for cxraug train classifier" in capsys.readouterr().err
    assert main(["train", "classifier", "--stage", "1"]) == 2
    assert "--stage" in capsys.readouterr().err
    assert main(["train", "classifier", "--arch", "not-a-net", "--out", str(tmp_path / "c")]) == 2
    assert "not a timm model" in capsys.readouterr().err
    assert main(["train", "classifier", "--set", "classifier.nope=1", "--dry-run"]) == 2
    assert "nope" in capsys.readouterr().err


def test_train_classifier_reuses_a_runs_splits(kermany_fixture, tmp_path, capsys):
    """--splits: the classifier uses a generator run's splits (its test split = the images the
    generator never saw), not ones made with split_seed; wrong inputs are one line each."""
    from conftest import generator_run

    gen = generator_run(kermany_fixture, tmp_path / "gen", "data.split_seed=5")
    args = ["train", "classifier", "--data", str(kermany_fixture), "--labels", "pneumonia",
            "--epochs", "1", "--image-size", "16", "--arch", "resnet10t", "--set", "classifier.batch_size=8"]
    assert main([*args, "--splits", str(gen / "splits.csv"), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "splits.csv").read_bytes() == (gen / "splits.csv").read_bytes()
    default = tmp_path / "d"
    assert main([*args, "--set", "classifier.max_steps=1", "--out", str(default)]) == 0
    ours, theirs = (pd.read_csv(p / "splits.csv", dtype=str).set_index("id")["split"]
                    for p in (default, tmp_path / "c"))
    assert not ours.equals(theirs.loc[ours.index])  # split seed 5 is another split

    capsys.readouterr()
    assert main([*args, "--splits", str(tmp_path / "none.csv"), "--out", str(tmp_path / "e")]) == 2
    assert "--splits" in capsys.readouterr().err and not (tmp_path / "e").exists()
    other = tmp_path / "other.csv"
    other.write_text("id,split,patient_id\nx.png,train,P1\n")
    assert main([*args, "--splits", str(other), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert f"{other}: split file does not match this dataset" in err
    assert not (tmp_path / "f" / "splits.csv").exists()  # a wrong file is never copied in


def test_train_classifier_interrupted_before_its_first_checkpoint_reruns(kermany_fixture, tmp_path,
                                                                         capsys, monkeypatch):
    """Ctrl-C while the data is read (config.yaml written, no checkpoint yet): the same command
    then trains the run instead of refusing the folder; a generator run's folder is refused."""
    import cxraug.classify.dataset as D

    run = tmp_path / "run"
    argv = ["train", "classifier", "--data", str(kermany_fixture), "--labels", "pneumonia",
            "--epochs", "1", "--image-size", "16", "--arch", "resnet10t",
            "--set", "classifier.batch_size=8", "--out", str(run)]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(D, "_real_data", interrupted)
        assert main(argv) == 130
    assert (run / "config.yaml").is_file() and not (run / "checkpoints").exists()
    capsys.readouterr()
    assert main(argv) == 0 and (run / "metrics.json").is_file()
    assert not (run / "checkpoints").exists()

    gen = tmp_path / "gen"  # a config.yaml that is not a classifier run's
    gen.mkdir()
    (gen / "config.yaml").write_text("vae:\n  steps: 3\n")
    capsys.readouterr()
    assert main([*argv[:-1], str(gen)]) == 2
    assert "not a classifier run's" in capsys.readouterr().err
