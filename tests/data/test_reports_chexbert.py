"""CheXbert backend with a tiny randomly initialised checkpoint of the same architecture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cxraug.cli.main import main
from cxraug.core.errors import WeightsError
from cxraug.data import labels as L
from cxraug.data.chexbert import (
    HEAD_CLASSES,
    CheXbert,
    CheXbertModel,
    infer_bert_config,
    load_chexbert,
    load_tokenizer,
    raw_from_classes,
)

WORDS = ["no", "mild", "small", "left", "right", "pleural", "effusion", "cardio", "##megaly",
         "pneumo", "##thorax", "heart", "size", "is", "normal", "lungs", "are", "clear", ".", ","]


def tiny_config(vocab_size: int) -> dict:
    return {"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 37, "max_position_embeddings": 64}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # any attempt to reach the hub would fail loudly instead of hanging
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def tokenizer_dir(tmp_path):
    d = tmp_path / "tok"
    d.mkdir()
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])
                                 + "\n")
    return d


@pytest.fixture
def tiny(tmp_path, tokenizer_dir):
    """A tiny CheXbert saved the way the published chexbert.pth is (DataParallel checkpoint)."""
    torch.manual_seed(0)
    cfg = tiny_config(5 + len(WORDS))
    model = CheXbertModel(bert_config=cfg).eval()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {"lr": 2e-5}},
               ckpt / "chexbert.pth")
    (ckpt / "config.json").write_text(json.dumps(cfg))
    return model, ckpt / "chexbert.pth", cfg


TEXTS = ["No pleural effusion.", "Mild cardiomegaly. Small left effusion.", "",
         "FINDINGS: Heart size is normal. IMPRESSION: Lungs are clear."]


def test_round_trip_from_published_checkpoint_format(tiny, tokenizer_dir):
    model, pth, _cfg = tiny
    loaded = load_chexbert(pth)  # config.json beside the .pth gives the geometry
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not loaded.training
    labeler = CheXbert(pth, tokenizer_dir, batch_size=2)
    out = labeler.label(TEXTS)
    assert out.shape == (len(TEXTS), L.N_OBS) and out.dtype == np.float32
    L.check_raw(out)
    assert np.isin(out[:, -1][~np.isnan(out[:, -1])], [1.0]).all()  # No Finding: 1 or blank
    # batching and ordering do not change results
    np.testing.assert_array_equal(out, CheXbert(pth, tokenizer_dir, batch_size=1).label(TEXTS))
    np.testing.assert_array_equal(out[::-1], labeler.label(TEXTS[::-1]))


def test_label_order_and_class_mapping(tiny, tokenizer_dir, tmp_path):
    model, _, _cfg = tiny
    # zero weights, one-hot biases: head i picks class i % 4 (No Finding head: class i % 2)
    with torch.no_grad():
        for i, head in enumerate(model.linear_heads):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[i % head.out_features] = 5.0
    model.save_pretrained(tmp_path / "forced", meta={"labels": list(L.OBSERVATIONS)})
    out = CheXbert(tmp_path / "forced", tokenizer_dir).label(["No effusion.", "Mild cardiomegaly."])
    expected = raw_from_classes(np.array([i % 4 for i in range(13)] + [13 % 2]))
    assert HEAD_CLASSES == ("blank", "positive", "negative", "uncertain")
    for row in out:
        np.testing.assert_array_equal(row, expected)
    assert row[L.index("Cardiomegaly")] == L.POSITIVE and row[L.index("Lung Opacity")] == L.NEGATIVE
    assert row[L.index("Lung Lesion")] == L.UNCERTAIN and np.isnan(row[L.index("Edema")])
    assert row[L.index("No Finding")] == L.POSITIVE


def test_hf_style_folder_and_shape_inference(tiny, tmp_path):
    model, pth, cfg = tiny
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
    loaded = load_chexbert(folder)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.state_dict().values()))
    # geometry read off the tensors (heads = hidden / 64, as in every BERT)
    wide = {**cfg, "hidden_size": 64, "num_attention_heads": 1}
    assert infer_bert_config(CheXbertModel(bert_config=wide).state_dict()) == {
        k: wide[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                             "num_attention_heads", "intermediate_size",
                             "max_position_embeddings")} | {"type_vocab_size": 2}
    # without a config.json the head count is read as hidden/64, impossible for hidden=32
    bare = tmp_path / "bare" / "chexbert.pth"
    bare.parent.mkdir()
    bare.write_bytes(pth.read_bytes())
    with pytest.raises(WeightsError, match="not a multiple of 64"):
        load_chexbert(bare)
    assert load_chexbert(bare, config=cfg) is not None


def test_missing_and_wrong_weights_fail_with_one_line(tiny, tokenizer_dir, tmp_path):
    _, pth, cfg = tiny
    for bad in (None, tmp_path / "nope.pth"):
        with pytest.raises(WeightsError) as e:
            load_chexbert(bad)
        assert "\n" not in str(e.value) and "--weights" in str(e.value)
    with pytest.raises(WeightsError, match="do not fit"):
        load_chexbert(pth, config={**cfg, "num_hidden_layers": 3})
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
        load_chexbert(tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="vocab.txt"):
        load_tokenizer(tmp_path)
    with pytest.raises(WeightsError, match="tokenizer"):
        load_tokenizer(None)
    assert len(load_tokenizer(tokenizer_dir / "vocab.txt")) == 5 + len(WORDS)


def test_cli_chexbert_without_weights_is_a_user_error(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.txt").write_text("No effusion.")
    code = main(["label", str(tmp_path / "r"), "--out", str(tmp_path / "o.csv"),
                 "--labeler", "chexbert"])
    err = capsys.readouterr().err
    assert code == 2 and "weights" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.csv").exists()


def test_cli_chexbert_with_tiny_weights(tiny, tokenizer_dir, tmp_path):
    _, pth, _ = tiny
    (tmp_path / "r").mkdir()
    for i, t in enumerate(TEXTS[:2]):
        (tmp_path / "r" / f"{i}.txt").write_text(t)
    out = tmp_path / "o.csv"
    assert main(["label", str(tmp_path / "r"), "--out", str(out), "--labeler", "chexbert",
                 "--weights", str(pth), "--tokenizer", str(tokenizer_dir)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == ["id", *L.OBSERVATIONS] and len(lines) == 3
