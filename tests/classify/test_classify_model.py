"""Classifier component: timm by name, local weights only, save/load, predict and embed."""

import shutil

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from cxraug.classify.model import Classifier
from cxraug.core.errors import CxraugError, WeightsError

LABELS = ["Cardiomegaly", "Pleural Effusion"]


def _images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


@pytest.mark.parametrize("arch", ["resnet10t", "mobilenetv3_small_050", "vit_tiny_patch16_224"])
def test_any_timm_arch_predicts_and_embeds(arch):
    torch.manual_seed(0)
    m = Classifier(arch, LABELS, image_size=32)
    p = m.predict_proba(_images(), batch_size=4)
    assert p.shape == (6, 2) and p.dtype == np.float32 and ((p > 0) & (p < 1)).all()
    e = m.embed(_images(), batch_size=4)
    assert e.shape == (6, m.num_features) and np.isfinite(e).all()


def test_unknown_arch_lists_valid_names():
    with pytest.raises(CxraugError, match="resnet18"):
        Classifier("resnt18", LABELS)


def test_pretrained_true_without_path_is_refused():
    with pytest.raises(WeightsError, match="never downloads"):
        Classifier("resnet10t", LABELS, pretrained=True)
    with pytest.raises(WeightsError, match="not found"):
        Classifier("resnet10t", LABELS, pretrained="/nonexistent/weights.safetensors")


def test_labels_must_follow_observation_order():
    with pytest.raises(CxraugError, match="OBSERVATIONS order"):
        Classifier("resnet10t", ["Pleural Effusion", "Cardiomegaly"])
    assert Classifier("resnet10t", ["cardiomegaly", "effusion"]).label_names == LABELS


def test_local_timm_weights_adapted_to_one_channel(tmp_path):
    src = timm.create_model("resnet10t", pretrained=False)  # 3 channels, 1000 classes
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    m = Classifier("resnet10t", LABELS, pretrained=str(tmp_path / "w.safetensors"))
    stem = "conv1.0.weight"
    assert torch.allclose(m.net.state_dict()[stem],
                          src.state_dict()[stem].sum(dim=1, keepdim=True), atol=1e-6)
    assert m.net.fc.weight.shape == (2, src.num_features)
    shutil.copy(tmp_path / "w.safetensors", tmp_path / "model.safetensors")  # a model folder
    m2 = Classifier("resnet10t", LABELS, pretrained=str(tmp_path))
    assert torch.equal(m2.net.state_dict()[stem], m.net.state_dict()[stem])


def test_save_load_round_trip_and_meta(tmp_path):
    m = Classifier("resnet10t", LABELS, image_size=32, drop_rate=0.1)
    m.save_pretrained(tmp_path / "clf")
    loaded = Classifier.from_pretrained(tmp_path / "clf")
    x = _images()
    assert np.array_equal(m.predict_proba(x), loaded.predict_proba(x))
    assert loaded.meta["label_names"] == LABELS and loaded.meta["image_size"] == 32
    assert loaded.meta["pixel_mean"] == 0.5 and loaded.meta["pixel_std"] == 0.25


def test_classifier_folder_as_pretrained_keeps_backbone_not_head(tmp_path):
    src = Classifier("resnet10t", LABELS, image_size=32)
    src.save_pretrained(tmp_path / "src")
    m = Classifier("resnet10t", ["Edema"], image_size=32, pretrained=str(tmp_path / "src"))
    assert torch.equal(m.net.conv1[0].weight, src.net.conv1[0].weight)
    assert m.net.fc.weight.shape[0] == 1
    m.save_pretrained(tmp_path / "ft")
    shutil.rmtree(tmp_path / "src")  # loading must not need the original pretrained folder
    again = Classifier.from_pretrained(tmp_path / "ft")
    assert again.meta["pretrained_from"] == str(tmp_path / "src")
    with pytest.raises(WeightsError, match="resnet10t"):
        Classifier("resnet18", LABELS, pretrained=str(tmp_path / "ft"))


def test_predict_resizes_other_sizes_and_rejects_wrong_dtype():
    m = Classifier("resnet10t", LABELS, image_size=32)
    assert m.predict_proba(_images(size=64)).shape == (6, 2)
    assert m.predict_proba(_images(size=48)[:, :, :40]).shape == (6, 2)  # non-square: padded
    with pytest.raises(CxraugError, match="uint8"):
        m.predict_proba(_images().astype(np.float32))


def test_weights_of_another_arch_are_a_weights_error(tmp_path):
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(),
              str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match="cannot load into resnet18"):
        Classifier("resnet18", LABELS, pretrained=str(tmp_path / "w.safetensors"))
