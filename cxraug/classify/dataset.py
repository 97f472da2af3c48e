"""``cxraug train classifier``: a classifier trained on a dataset's train split, selected on its
val split and scored once on val and test.

    metrics = train_on_dataset(DatasetClassifierConfig(data="sample:kermany"), "runs/classifier")

Splits are patient-level and the images cached, exactly as ``cxraug bench`` reads them
(:func:`cxraug.classify.real.load_real_splits`); the loop is :func:`cxraug.classify.train
.train_classifier`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxraug.classify.data import ArraySet, RealDataConfig
from cxraug.classify.model import Classifier, check_arch
from cxraug.classify.real import RealData, load_real_splits
from cxraug.classify.train import (
    CHECKPOINTS,
    TRAIN_LOG,
    ClassifierConfig,
    evaluate,
    json_text,
    train_classifier,
)
from cxraug.core import config as cfgio
from cxraug.data import labels as L


@dataclass
class DatasetClassifierConfig(RealDataConfig):
    """``cxraug train classifier``: the real data (:class:`RealDataConfig`), then the classifier's
    settings. Splits are patient-level (:func:`cxraug.data.splits.splits_for`, ``split_seed``) as
    in ``cxraug bench``."""

    split_seed: int = 0
    classifier: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(
        arch="resnet18", image_size=64, max_epochs=20, patience=4))

    def validate(self) -> None:
        if self.min_positive < 1:
            raise cfgio.ConfigError("min_positive: must be >= 1")
        # canonical names in OBSERVATIONS order: the classifier's output columns
        self.labels = sorted({L.canonical(x) for x in self.labels}, key=L.index)
        self.classifier.validate()
        check_arch(self.classifier.arch)


def train_on_dataset(cfg: DatasetClassifierConfig, out: str | Path, progress: bool = True,
                     splits: str | Path | None = None) -> dict[str, Any]:
    """Train on the train split of ``cfg.data``, select on val, score val and test once.

    Writes into ``out``: ``config.yaml`` (before any work), ``splits.csv`` (reused when it fits
    the dataset), ``model/`` (the :class:`Classifier` folder that ``cxraug eval --classifier`` and
    ``cxraug synth --classifier`` take), ``history.json``, ``train_log.jsonl`` (the validation
    curve) and ``metrics.json`` (val and test mAUC and per-label AUC). Returns the metrics.
    ``splits``: another run's ``splits.csv`` to use (checked against the data, then copied in).
    """
    # 1. Check the settings and save them before any work.
    out = Path(out)
    cfg.validate()
    cfgio.save(cfg, out)

    # 2. Real data: patient-level splits and cached images, as the bench reads them.
    real, train = _real_data(cfg, Path(splits) if splits is not None else out / "splits.csv")
    if splits is not None and Path(splits).resolve() != (out / "splits.csv").resolve():
        shutil.copyfile(splits, out / "splits.csv")

    # 3. Train with val selection, then score val and test once.
    model, history = train_classifier(train, real.val, cfg.classifier, None, progress,
                                      label_names=real.labels, train_log=out / TRAIN_LOG,
                                      checkpoints=out / CHECKPOINTS)
    metrics = _scores(cfg, model, history, real, train)

    # 4. Save the classifier and what it measured.
    model.save_pretrained(out / "model", meta={"train": {
        "data": cfg.data, "splits": "splits.csv of the run folder", "best_step": history["best_step"],
        "val_mauc": metrics["val"]["mauc"], "test_mauc": metrics["test"]["mauc"],
        "train_images": len(train)}})
    (out / "history.json").write_text(json_text(history))
    (out / "metrics.json").write_text(json_text(metrics))
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the run is complete
    return metrics


def _real_data(cfg: DatasetClassifierConfig, splits_path: Path) -> tuple[RealData, ArraySet]:
    """The real splits and the training split as arrays with policy-applied targets."""
    real = load_real_splits(cfg, splits_path, cfg.classifier.image_size, cfg.split_seed)
    cols = [L.index(x) for x in real.labels]
    train = ArraySet(real.train_images, L.apply_policy(real.train.labels, cfg.policy)[:, cols],
                     real.train.patient_ids)
    return real, train


def _scores(cfg: DatasetClassifierConfig, model: Classifier, history: dict[str, Any],
            real: RealData, train: ArraySet) -> dict[str, Any]:
    """What ``metrics.json`` holds: the data, the run's length, val and test scored once."""
    def scored(data: ArraySet) -> dict[str, Any]:
        return {**evaluate(model, data, cfg.classifier.eval_batch_size), "n_images": len(data),
                "n_patients": len(set(data.patient_ids))}

    return {"labels": list(real.labels), "data": cfg.data, "best_step": history["best_step"],
            "steps": history["steps"],
            "train": {"n_images": len(train), "n_patients": len(set(train.patient_ids))},
            "val": scored(real.val), "test": scored(real.test)}
