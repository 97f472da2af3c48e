"""AVA-TLS: information squeeze shapes, CLIP loss, contrastive tuning and save/load."""

import numpy as np
import pytest
import torch

from cxraug.core.artifacts import load_weights
from cxraug.core.config import ConfigError
from cxraug.core.errors import WeightsError
from cxraug.core.progress import read_metrics
from cxraug.text.config import TextConfig
from cxraug.text.squeeze import InformationSqueeze, ReportEncoder, clip_loss, train_text

REPORTS = ["There is cardiomegaly.", "No acute cardiopulmonary process.",
           "Small left pleural effusion.", "Right upper lobe pneumonia.",
           "Mild pulmonary edema.", "There is no finding."]


@pytest.mark.parametrize("k", [32, 77, 128])
def test_squeeze_gives_k_plus_one_tokens(k):
    squeeze = InformationSqueeze(max_tokens=256, cond_tokens=k, width=48)
    out = squeeze(torch.randn(2, 257, 48))
    assert out.shape == (2, k + 1, 48)
    assert out.min() >= 0  # ends in ReLU, as in the paper


def test_clip_loss_prefers_matched_pairs():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(16, 32, generator=g)
    txt = img + 0.1 * torch.randn(16, 32, generator=g)
    matched = clip_loss(txt, img)
    shuffled = clip_loss(txt, img[torch.randperm(16, generator=g)])
    assert matched < 0.1 < shuffled
    assert torch.isclose(clip_loss(txt, img), clip_loss(img, txt))  # symmetric


def tiny_config(**kw):
    return TextConfig(**{"max_tokens": 24, "cond_tokens": 8, "image_encoder": "timm",
                         "image_model": "test_resnet", "image_size": 32, "batch_size": 3,
                         "max_steps": 2, "epochs": 1, "lr": 1e-3, **kw})


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (len(REPORTS), 40, 40), dtype=np.uint8)


def test_train_text_two_steps_and_round_trip(images, tmp_path):
    # lr 0 leaves the seeded initialisation; lr > 0 moves every squeeze tensor
    fresh = train_text(REPORTS, images, tiny_config(lr=0.0, image_lr=0.0), progress=False)
    model = train_text(REPORTS, images, tiny_config(), tmp_path / "text", progress=False)
    for name, p in model.squeeze.state_dict().items():
        assert not torch.equal(p, fresh.squeeze.state_dict()[name]), name
    assert not any(p.requires_grad for p in model.parameters())
    assert model.meta["train"]["steps"] == 2 and np.isfinite(model.meta["train"]["final_loss"])
    assert (tmp_path / "text" / "image_encoder.safetensors").is_file()
    log = read_metrics(tmp_path / "text" / "train_log.jsonl")  # one record per step
    assert [r["step"] for r in log] == [1, 2] and all(set(r) == {"step", "loss"} for r in log)
    assert np.mean([r["loss"] for r in log]) == pytest.approx(model.meta["train"]["final_loss"])

    g1, c1 = model.encode(REPORTS[:2])
    assert g1.shape == (2, 96) and c1.shape == (2, 8, 384)  # token 0 -> test_resnet width 96
    again = ReportEncoder.from_pretrained(tmp_path / "text")
    g2, c2 = again.encode(REPORTS[:2])
    assert torch.equal(g1, g2) and torch.equal(c1, c2)
    assert again.encoder_id == model.encoder_id


def test_tuning_last_layer_saves_text_weights(images, tmp_path):
    base = ReportEncoder("minilm", max_tokens=24, cond_tokens=8)
    model = train_text(REPORTS, images, tiny_config(tune="last"), tmp_path / "t", progress=False)
    base_layers = dict(base.text.transformer.named_parameters())
    changed = [n for n, p in model.text.transformer.named_parameters()
               if not torch.equal(p, base_layers[n])]
    assert changed and all(n.startswith("encoder.layer.5.") for n in changed)
    assert model.encoder_id != base.encoder_id
    again = ReportEncoder.from_pretrained(tmp_path / "t")
    assert torch.equal(again.encode(REPORTS[:1])[1], model.encode(REPORTS[:1])[1])


def test_bad_settings_and_folders_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="at least 2"):
        TextConfig(batch_size=1).validate()
    with pytest.raises(WeightsError, match="no config.json"):
        ReportEncoder.from_pretrained(tmp_path)


def test_train_text_with_a_paired_clip_image_tower(images, tmp_path):
    from test_text_encoders import make_tiny_biomedclip

    folder = tmp_path / "biomedclip"
    make_tiny_biomedclip(folder, tmp_path)
    config = tiny_config(encoder="biomedclip", encoder_path=str(folder), image_encoder="auto")
    model = train_text(REPORTS, images, config, tmp_path / "text", progress=False)
    assert not (tmp_path / "text" / "image_encoder.safetensors").exists()  # tower stays frozen
    g, c = model.encode(REPORTS[:2])
    assert g.shape == (2, 16) and c.shape == (2, 8, 32)  # token 0 -> CLIP embed_dim 16


@pytest.mark.parametrize("tune,stop", [("squeeze", 3), ("last", 2)])  # mid-epoch / epoch end
def test_killed_tuning_resumes_exactly(images, tmp_path, tune, stop):
    """5 steps over 2-batch epochs in one go; and 'killed' after ``stop`` steps, then rerun as a
    fresh call from the checkpoint: the same weights, log and record. ``last`` tunes a transformer
    block with dropout, which draws from torch's global generator (saved with the checkpoint)."""
    cfg = tiny_config(tune=tune, max_steps=5, epochs=3)
    torch.manual_seed(7)
    full = train_text(REPORTS, images, cfg, tmp_path / "a", progress=False, checkpoints=tmp_path / "ca",
                      checkpoint_every=stop)
    torch.manual_seed(7)
    assert train_text(REPORTS, images, cfg, tmp_path / "b", progress=False, checkpoints=tmp_path / "cb",
                      checkpoint_every=stop, max_steps=stop) is None
    torch.manual_seed(99)  # a fresh process's global RNG is not the killed one's
    resumed = train_text(REPORTS, images, cfg, tmp_path / "b", progress=False,
                         checkpoints=tmp_path / "cb", checkpoint_every=stop)
    ref = full.state_dict()
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert read_metrics(tmp_path / "b" / "train_log.jsonl") == read_metrics(tmp_path / "a" / "train_log.jsonl")
    assert resumed.meta == full.meta and resumed.meta["train"]["steps"] == 5
    for name in ("image_encoder.safetensors", "model.safetensors"):  # the image side resumed too
        a, b = load_weights(tmp_path / "a" / name), load_weights(tmp_path / "b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
