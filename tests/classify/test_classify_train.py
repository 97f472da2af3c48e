"""Classifier training: masked loss, no-flip augmentation, val-only selection, fine-tuning."""

import math

import numpy as np
import pytest
import torch

from cxraug.classify.augment import AugmentConfig, augment_batch
from cxraug.classify.data import ArraySet
from cxraug.classify.model import Classifier
from cxraug.classify.train import (
    ClassifierConfig,
    evaluate,
    masked_bce_with_logits,
    train_classifier,
)
from cxraug.core.errors import DataError
from cxraug.data import transforms

LABELS = ["Cardiomegaly", "Pleural Effusion"]


def _toy(n=64, size=32, seed=0, invert=False):
    """Label 0 = bright blob on the left half, label 1 = bright blob at the bottom (+ noise)."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, (n, 2)).astype(np.float32)
    img = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    h = size // 2
    img[t[:, 0] == 1, 4:h, 2:h - 2] += 150
    img[t[:, 1] == 1, h + 2:, 4:-4] += 150
    t[rng.random((n, 2)) < 0.1] = np.nan  # some missing labels
    if invert:
        t = np.where(np.isnan(t), t, 1 - t)
    return ArraySet(img, t, [f"p{i // 2}" for i in range(n)])


def _cfg(**kw):
    base = {"arch": "resnet10t", "image_size": 32, "batch_size": 16, "max_steps": 8,
            "eval_every": 2, "patience": 0, "lr": 3e-3, "warmup_steps": 0}
    return ClassifierConfig(**{**base, **kw})


def test_masked_bce_matches_hand_computation():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    targets = torch.tensor([[1.0, math.nan], [0.0, 1.0]])
    # BCE(x, 1) = log(1 + e^-x), BCE(x, 0) = log(1 + e^x); the NaN entry is skipped
    expected = (math.log(2) + math.log(1 + math.exp(-1)) + math.log(2)) / 3
    assert masked_bce_with_logits(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    pw = torch.tensor([3.0, 5.0])  # positives of label 0 weigh 3x, label 1 5x
    expected_pw = (3 * math.log(2) + math.log(1 + math.exp(-1)) + 5 * math.log(2)) / 3
    assert masked_bce_with_logits(logits, targets, pw).item() == pytest.approx(expected_pw, rel=1e-6)
    logits.requires_grad_(True)
    masked_bce_with_logits(logits, targets).backward()
    assert logits.grad[0, 1] == 0  # missing entries give no gradient
    assert masked_bce_with_logits(logits, torch.full((2, 2), math.nan)).item() == 0


@pytest.mark.parametrize("rotate", [0.0, 7.0])
def test_augmentation_never_flips(rotate):
    img = np.zeros((64, 32, 32), dtype=np.uint8)
    img[:, 8:24, 3:12] = 255  # all mass on the left
    aug = AugmentConfig(rotate_deg=rotate, translate=0.05, scale=0.1, brightness=0.05, contrast=0.1)
    x = augment_batch(transforms.uint8_to_model(img), aug, torch.Generator().manual_seed(0))
    mass = x[:, 0] + 1  # black = 0
    left, right = mass[:, :, :16].sum(dim=(1, 2)), mass[:, :, 16:].sum(dim=(1, 2))
    assert (left > 5 * right).all()
    assert not torch.equal(x, transforms.uint8_to_model(img))  # it did augment
    assert x.min() >= -1 and x.max() <= 1


def test_augmentation_off_is_identity():
    img = np.random.default_rng(0).integers(0, 256, (4, 16, 16), dtype=np.uint8)
    x = transforms.uint8_to_model(img)
    off = AugmentConfig(rotate_deg=0, translate=0, scale=0, brightness=0, contrast=0)
    assert torch.equal(augment_batch(x, off, torch.Generator().manual_seed(0)), x)


def test_array_set_repeat_and_concat():
    a = _toy(n=10)
    r = a.repeat(25, seed=0)
    assert len(r) == 25
    counts = np.unique(r.patient_ids, return_counts=True)[1]  # 2 images per patient id
    assert set(counts) <= {4, 5, 6}  # each row appears 2 or 3 times
    c = ArraySet.concat(a, r)
    assert len(c) == 35 and np.array_equal(c.images[:10], a.images)
    with pytest.raises(DataError, match="0, 1 or NaN"):
        ArraySet(a.images, np.full((10, 2), -1.0), a.patient_ids)


def test_tiny_training_restores_best_val_weights(tmp_path):
    train, val = _toy(seed=0), _toy(n=48, seed=1)
    model, hist = train_classifier(train, val, _cfg(), out_dir=tmp_path, progress=False,
                                   label_names=LABELS)
    maucs = [e["val_mauc"] for e in hist["evals"]]
    assert [e["step"] for e in hist["evals"]] == [2, 4, 6, 8] and hist["steps"] == 8
    assert hist["best_val_mauc"] == max(maucs)
    assert hist["best_step"] == hist["evals"][int(np.argmax(maucs))]["step"]
    assert evaluate(model, val)["mauc"] == pytest.approx(hist["best_val_mauc"], abs=1e-6)
    assert hist["train_images_per_s"] > 0
    loaded = Classifier.from_pretrained(tmp_path / "model")
    assert np.array_equal(loaded.predict_proba(val.images), model.predict_proba(val.images))
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "history.json").is_file()


def test_selection_and_early_stopping_follow_val_only():
    """Validation only selects: with the same training data and seed, a validation set with
    inverted labels sees the same trajectory (its mAUC is 1 - the other's), picks its own best
    checkpoint and stops `patience` validations after it."""
    train = _toy(seed=0)
    val, bad_val = _toy(n=48, seed=1), _toy(n=48, seed=1, invert=True)
    _, good = train_classifier(train, val, _cfg(max_steps=10, patience=0), progress=False,
                               label_names=LABELS)
    model, bad = train_classifier(train, bad_val, _cfg(max_steps=10, patience=2), progress=False,
                                  label_names=LABELS)
    g, b = ([e["val_mauc"] for e in h["evals"]] for h in (good, bad))
    assert np.allclose(b, 1 - np.array(g[:len(b)]), atol=1e-9)  # val never steers training
    for h, curve in ((good, g), (bad, b)):
        assert h["best_step"] == h["evals"][int(np.argmax(curve))]["step"]
    assert bad["stopped_early"] and bad["steps"] < 10 and not good["stopped_early"]
    assert len(b) == int(np.argmax(b)) + 1 + 2
    assert evaluate(model, bad_val)["mauc"] == pytest.approx(bad["best_val_mauc"], abs=1e-6)


def test_seeded_runs_repeat_and_memmap_matches_in_memory(tmp_path):
    train, val = _toy(seed=0), _toy(n=32, seed=1)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8,
                                   shape=train.images.shape)
    mm[:] = train.images
    mm.flush()
    on_disk = ArraySet(np.load(tmp_path / "x.npy", mmap_mode="r"), train.targets,
                       train.patient_ids)
    cfg = _cfg(max_steps=4, eval_every=4)
    _, a = train_classifier(on_disk, val, cfg, progress=False, label_names=LABELS)
    cfg.in_memory = True
    _, b = train_classifier(train, val, cfg, progress=False, label_names=LABELS)
    assert a["evals"][0]["train_loss"] == b["evals"][0]["train_loss"]
    assert a["evals"][0]["val_mauc"] == b["evals"][0]["val_mauc"]


def test_fine_tune_from_pretrained_model_leaves_it_untouched():
    train, val = _toy(seed=0), _toy(n=32, seed=1)
    base, _ = train_classifier(train, val, _cfg(max_steps=2), progress=False, label_names=LABELS)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tuned, hist = train_classifier(_toy(seed=2), val, _cfg(max_steps=2, lr=1e-2), progress=False,
                                   init_from=base)
    assert tuned.label_names == LABELS and hist["init_from"]
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())


def test_val_without_both_classes_is_refused():
    train, val = _toy(seed=0), _toy(n=16, seed=1)
    val.targets[:] = 1
    with pytest.raises(DataError, match="val"):
        train_classifier(train, val, _cfg(), progress=False, label_names=LABELS)


def _state(model: Classifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _killed_at(monkeypatch, stop: int):
    """Make the training step raise KeyboardInterrupt (Ctrl-C) once ``stop`` steps are done."""
    import cxraug.classify.train as T

    real_step, done = T._train_step, []

    def step(*args, **kwargs):
        if len(done) == stop:
            raise KeyboardInterrupt
        done.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(T, "_train_step", step)
    return lambda: monkeypatch.setattr(T, "_train_step", real_step)


# 4 steps per epoch: killed mid-epoch after a validation (its best weights in the checkpoint),
# and at an epoch's end
@pytest.mark.parametrize("stop", [7, 8])
def test_killed_classifier_training_resumes_exactly(tmp_path, monkeypatch, stop):
    """Train 10 steps in one go; and killed after ``stop`` steps, then rerun as a fresh call:
    the same weights, history and log, and the checkpoints are gone once the run is saved."""
    from cxraug.core.progress import read_metrics

    train, val = _toy(seed=0), _toy(n=48, seed=1)
    cfg = _cfg(max_steps=10, eval_every=3, drop_rate=0.3)  # dropout draws from the global RNG
    full, a = train_classifier(train, val, cfg, out_dir=tmp_path / "a", progress=False,
                               label_names=LABELS, checkpoint_every=1)
    assert not (tmp_path / "a" / "checkpoints").exists()

    restore = _killed_at(monkeypatch, stop)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(train, val, cfg, out_dir=tmp_path / "b", progress=False,
                         label_names=LABELS, checkpoint_every=1)
    restore()
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == [f"step_{stop:08d}"]
    torch.manual_seed(1234)  # a fresh process's global RNG is not the killed one's
    resumed, b = train_classifier(train, val, cfg, out_dir=tmp_path / "b", progress=False,
                                  label_names=LABELS, checkpoint_every=1)
    ref = _state(full)
    for k, v in _state(resumed).items():
        assert torch.equal(v, ref[k]), k
    assert a["evals"] == b["evals"] and (a["best_step"], a["steps"]) == (b["best_step"], b["steps"])
    assert read_metrics(tmp_path / "b" / "train_log.jsonl") == read_metrics(tmp_path / "a" / "train_log.jsonl")
    assert not (tmp_path / "b" / "checkpoints").exists()
    # without checkpoints it is the same training (the kit only adds the saving)
    plain, _ = train_classifier(train, val, cfg, progress=False, label_names=LABELS)
    assert all(torch.equal(v, ref[k]) for k, v in _state(plain).items())


def test_classifier_checkpoints_of_other_settings_are_refused(tmp_path, monkeypatch):
    from cxraug.core.errors import CxraugError

    train = _toy(seed=0)
    restore = _killed_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(train, None, _cfg(), progress=False, label_names=LABELS,
                         checkpoints=tmp_path / "c", checkpoint_every=1)
    restore()
    with pytest.raises(CxraugError, match="other settings"):
        train_classifier(train, None, _cfg(lr=1e-2), progress=False, label_names=LABELS,
                         checkpoints=tmp_path / "c")
    # the same settings resume; an explicit checkpoint folder is the caller's to remove
    train_classifier(train, None, _cfg(), progress=False, label_names=LABELS,
                     checkpoints=tmp_path / "c")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["step_00000008"]
