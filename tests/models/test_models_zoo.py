"""Packaged models (``cxraug export``) and model names: a run becomes a self-contained folder that
``--model`` takes anywhere, with the real-data reference synth's gates need, and no dataset."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from cxraug.cli.main import main
from cxraug.core.errors import CxraugError
from cxraug.data.reference import Reference, downsample
from cxraug.models.zoo import DEFAULT_MODEL, SHIPPED, resolve_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import train_tiny_run

    _, run, data = train_tiny_run(tmp_path_factory)
    return run.root, data


@pytest.fixture(scope="module")
def packaged(tiny, tmp_path_factory):
    """The tiny run exported with 16 px reference images, then its dataset deleted."""
    run, data = tiny
    out = tmp_path_factory.mktemp("models") / "tiny-model"
    assert main(["export", str(run), "--out", str(out), "--reference-size", "16"]) == 0
    moved = data.with_name(data.name + "-gone")
    shutil.copytree(data, moved)
    shutil.rmtree(data)  # the packaged model must not need its training data
    yield out
    shutil.copytree(moved, data)


def test_export_writes_fp16_weights_reference_and_card(tiny, packaged):
    run, _ = tiny
    assert {p.name for p in packaged.iterdir()} >= {"config.yaml", "vae", "text", "denoiser",
                                                      "adapter", "reference.npz", "README.md"}
    sd = load_file(str(packaged / "denoiser" / "model.safetensors"))
    assert all(v.dtype.is_floating_point is False or str(v.dtype) == "torch.float16" for v in sd.values())
    assert not (packaged / "checkpoints").exists() and not (packaged / "cache").exists()
    ref = Reference.load(packaged / "reference.npz")
    splits = pd.read_csv(run / "splits.csv", dtype=str)
    col = "assigned_split" if "assigned_split" in splits.columns else splits.columns[-1]
    train_ids = set(splits.loc[splits[col] == "train", "id"])
    assert set(ref.train.ids) <= train_ids and len(ref.train.ids) > 0
    assert not set(ref.val.ids) & set(ref.train.ids)
    assert ref.train.images.shape[1:] == (16, 16) and ref.val.images.shape[1:] == (32, 32)
    assert ref.train.labels.shape == (len(ref.train.ids), 14)
    assert (packaged / "training_cost.json").read_bytes() == (run / "training_cost.json").read_bytes()


def test_packaged_model_synthesises_without_its_data(packaged, tmp_path):
    out = tmp_path / "cohort"
    assert main(["synth", "--model", str(packaged), "--labels", "pneumonia", "--n", "4",
                 "--out", str(out), "--steps", "2"]) == 0
    m = pd.read_csv(out / "manifest.csv")
    assert len(m) == 4 and (m["memorisation"] != "not run").all()
    gates = json.loads((out / "gates.json").read_text())
    assert gates["memorisation"]["n_reference"] == len(Reference.load(packaged / "reference.npz").train.ids)


def test_packaged_weights_give_the_run_images(tiny, packaged, tmp_path):
    """fp16 storage changes the weights by rounding only: the images stay close to the run's."""
    from cxraug.diffusion.pipeline import DiffCXRPipeline

    run, _ = tiny
    a = DiffCXRPipeline.from_pretrained(run)(["There is pneumonia."], seeds=[3], steps=3)
    b = DiffCXRPipeline.from_pretrained(packaged)(["There is pneumonia."], seeds=[3], steps=3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_unknown_label_is_refused_naming_the_known_ones(packaged, tmp_path, capsys):
    code = main(["synth", "--model", str(packaged), "--labels", "cardiomegaly", "--n", "4",
                 "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "cardiomegaly" in err and "knows: pneumonia" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists()
    code = main(["generate", "--model", str(packaged), "--labels", "cardiomegaly", "--n", "1",
                 "--out", str(tmp_path / "g")])
    assert code == 2 and "knows: pneumonia" in capsys.readouterr().err


def test_default_output_folders_are_named_and_printed(packaged, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--model", str(packaged), "--labels", "pneumonia", "--n", "2",
                 "--steps", "2"]) == 0
    assert "generated/pneumonia-2" in capsys.readouterr().out
    assert len(list((tmp_path / "generated" / "pneumonia-2").glob("*.png"))) == 2
    assert main(["synth", "--model", str(packaged), "--labels", "Pneumonia", "--n", "2",
                 "--steps", "2", "--gates", "none"]) == 0
    assert "cohorts/pneumonia-2" in capsys.readouterr().out
    assert (tmp_path / "cohorts" / "pneumonia-2" / "manifest.csv").is_file()


def test_export_refuses_to_overwrite_a_folder_it_did_not_make(tiny, tmp_path, capsys):
    run, _ = tiny
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["export", str(run), "--out", str(tmp_path / "mine"), "--overwrite"]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert "not a cxraug model folder" in capsys.readouterr().err


def test_resolve_model_names_folders_and_errors(tmp_path):
    assert DEFAULT_MODEL in SHIPPED
    with pytest.raises(CxraugError, match="no such run folder"):
        resolve_model(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    with pytest.raises(CxraugError, match="is a file"):
        resolve_model(tmp_path / "f")
    assert resolve_model(tmp_path) == tmp_path


def test_hub_id_offline_is_one_line_with_the_fix(monkeypatch):
    """Truly offline: huggingface_hub is imported long before this test (reading HF_HUB_OFFLINE
    then), so cxraug reads the variable at call time; any connection attempt fails the test."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("resolve_model tried the network although HF_HUB_OFFLINE=1")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CxraugError, match="HF_HUB_OFFLINE is set .*hf download nobody/no-such-model "
                                          "--local-dir DIR"):
        resolve_model("nobody/no-such-model")


def test_downsample_is_an_area_mean():
    x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    assert downsample(x, 2).tolist() == [[[2, 4], [10, 12]]]  # means 2.5->2 (banker's), 4.5->4 ...
