"""Training a multi-label classifier on plain arrays (real, synthetic, mixed or duplicated).

Data comes in as an :class:`ArraySet` (``uint8 [N, H, W]`` images, possibly a ``np.memmap``;
targets ``float32 [N, L]`` in {0, 1, NaN}; patient ids ``[N]``). Batches are read as ``uint8``,
converted to float and augmented on the fly in torch, one batch at a time.

Model selection and early stopping look at the validation mAUC only; the test set never enters
this module. The weights of the best validation evaluation are restored before returning.

Augmentation is a small random affine (rotation, translation, scale) plus brightness/contrast,
applied per image to a batch. There is deliberately no horizontal flip: left and right are
anatomy on a chest X-ray. Padding revealed by the affine is black, like the padding of
:func:`cxraug.data.transforms.resize_square`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cxraug.classify.model import Classifier, check_arch, to_model_range
from cxraug.core import config as cfgio
from cxraug.core.errors import CxraugError, DataError
from cxraug.core.progress import job_progress
from cxraug.core.seeds import subseed
from cxraug.data import transforms
from cxraug.metrics.auc import has_both_classes, mean_auc, per_label_auc

# ------------------------------------------------------------------------------------ data

@dataclass
class ArraySet:
    """Images with targets and patient ids, row-aligned.

    ``images``: ``uint8 [N, H, W]`` (array or memmap); ``targets``: ``float32 [N, L]`` in
    {0, 1, NaN}; ``patient_ids``: ``str [N]`` (for patient-level bootstrap and leakage checks).
    """

    images: np.ndarray
    targets: np.ndarray
    patient_ids: np.ndarray

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=np.float32)
        self.patient_ids = np.asarray(self.patient_ids).astype(str)
        n = len(self.images)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise DataError(f"ArraySet.images: expected uint8 [N, H, W], got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if self.targets.ndim != 2 or len(self.targets) != n or len(self.patient_ids) != n:
            raise DataError(f"ArraySet: {n} images but targets {self.targets.shape} and "
                            f"{len(self.patient_ids)} patient ids")
        ok = np.isnan(self.targets) | np.isin(self.targets, (0.0, 1.0))
        if not ok.all():
            raise DataError(f"ArraySet.targets: values must be 0, 1 or NaN (apply an uncertainty "
                            f"policy first); found {sorted(set(self.targets[~ok].tolist()))[:5]}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_labels(self) -> int:
        return self.targets.shape[1]

    def subset(self, rows: Sequence[int] | np.ndarray) -> ArraySet:
        rows = np.asarray(rows, dtype=np.int64)
        return ArraySet(np.asarray(self.images[rows]), self.targets[rows], self.patient_ids[rows])

    @staticmethod
    def concat(*sets: ArraySet) -> ArraySet:
        """Rows of all ``sets`` in order (images are read into memory)."""
        if len({s.images.shape[1:] for s in sets}) != 1 or len({s.n_labels for s in sets}) != 1:
            raise DataError("ArraySet.concat: sets differ in image size or label count: "
                            + ", ".join(f"{s.images.shape[1:]}/{s.n_labels}" for s in sets))
        return ArraySet(np.concatenate([np.asarray(s.images) for s in sets]),
                        np.concatenate([s.targets for s in sets]),
                        np.concatenate([s.patient_ids for s in sets]))

    def repeat(self, total: int, seed: int = 0) -> ArraySet:
        """Exactly ``total`` rows: whole copies of this set, then a seeded random remainder.

        This is the ``real+dup`` control: the real subset duplicated to the size of a
        real+synthetic arm, so that more rows per epoch alone cannot explain a gain.
        """
        n = len(self)
        if n == 0 or total < 1:
            raise DataError(f"ArraySet.repeat: cannot make {total} rows from {n}")
        copies, rest = divmod(total, n)
        extra = np.sort(np.random.default_rng(seed).permutation(n)[:rest])
        return self.subset(np.concatenate([np.tile(np.arange(n), copies), extra]))


class _Batches(Dataset):
    """``dataset[rows]`` -> ``(uint8 [b, H, W], float32 [b, L])``; one item is one batch."""

    def __init__(self, data: ArraySet, in_memory: bool) -> None:
        # in_memory reads everything once (a memmap becomes RAM) to measure loading overhead.
        self.images = torch.from_numpy(np.array(data.images, copy=True)) if in_memory else data.images
        self.targets = torch.from_numpy(data.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.sort(rows)  # ascending reads are much faster on a memmap; order is irrelevant
        if torch.is_tensor(self.images):
            images = self.images[torch.from_numpy(rows)]
        else:
            images = torch.from_numpy(np.asarray(self.images[rows]))
        return images, self.targets[torch.from_numpy(rows)]


class _EpochSampler:
    """Yields one shuffled epoch of row batches per iteration, from a seeded generator."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.generator = n, min(batch_size, n), generator

    def __len__(self) -> int:
        return self.n // self.batch_size  # drop the ragged last batch (BatchNorm needs > 1 row)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).numpy()
        for i in range(len(self)):
            yield order[i * self.batch_size:(i + 1) * self.batch_size]


# ------------------------------------------------------------------------------- config

@dataclass
class AugmentConfig:
    """Per-image random affine + intensity jitter. No flips, by design."""

    rotate_deg: float = 7.0  # uniform in [-rotate_deg, rotate_deg]
    translate: float = 0.05  # fraction of the image side, per axis
    scale: float = 0.08  # zoom factor uniform in [1 - scale, 1 + scale]
    brightness: float = 0.05  # additive shift, fraction of the full intensity range
    contrast: float = 0.1  # multiplicative around the image mean, in [1 - c, 1 + c]

    def validate(self) -> None:
        for name in ("rotate_deg", "translate", "scale", "brightness", "contrast"):
            if getattr(self, name) < 0:
                raise cfgio.ConfigError(f"augment.{name}: must be >= 0")
        if self.scale >= 1:
            raise cfgio.ConfigError("augment.scale: must be < 1 (a zoom factor of 1 +- scale)")


@dataclass
class ClassifierConfig:
    """Everything a classifier training run needs besides its data."""

    arch: str = "resnet18"  # any timm model name
    image_size: int = 64
    drop_rate: float = 0.0
    pretrained: str | None = None  # local weights file/folder, or a timm/hub name to download
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50  # linear warm-up (capped at a tenth of the run), then cosine to 0
    max_epochs: int = 30
    max_steps: int = 0  # 0: max_epochs decides; otherwise whichever limit comes first
    eval_every: int = 0  # steps between validations; 0: once per epoch
    patience: int = 5  # validations without a better val mAUC before stopping; 0: never stop
    pos_weight: bool = False  # weight positives by neg/pos per label (train frequencies)
    num_workers: int = 0  # DataLoader workers reading uint8 batches
    in_memory: bool = False  # load all images as one tensor first (to time data loading)
    channels_last: bool = True
    device: str = "cpu"
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        for name in ("image_size", "batch_size", "eval_batch_size", "max_epochs"):
            if getattr(self, name) < 1:
                raise cfgio.ConfigError(f"{name}: must be >= 1")
        for name in ("max_steps", "eval_every", "patience", "num_workers", "warmup_steps"):
            if getattr(self, name) < 0:
                raise cfgio.ConfigError(f"{name}: must be >= 0")
        if not self.lr > 0:
            raise cfgio.ConfigError("lr: must be > 0")
        self.augment.validate()


# ----------------------------------------------------------------------- augment and loss

def augment_batch(x: torch.Tensor, aug: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random affine + brightness/contrast per image of a generator-range ``[B, 1, H, W]`` batch.

    The affine matrix is rotation x positive scale, so its determinant is always positive: the
    augmentation can never mirror an image.
    """
    b = x.shape[0]

    def uniform(half_width: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * 2 - 1) * half_width

    angle = uniform(math.radians(aug.rotate_deg))
    zoom = 1 + uniform(aug.scale)
    shift = torch.stack([uniform(2 * aug.translate), uniform(2 * aug.translate)], dim=1)
    if aug.rotate_deg or aug.scale or aug.translate:
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # sample x + 1 so that zero padding is black (-1 in generator range)
        x = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False) - 1
    if aug.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + uniform(aug.contrast)).view(b, 1, 1, 1).to(x) + mean
    if aug.brightness:
        x = x + (2 * uniform(aug.brightness)).view(b, 1, 1, 1).to(x)  # range [-1, 1] spans 2
    return x.clamp(-1, 1)


def masked_bce_with_logits(logits: torch.Tensor, targets: torch.Tensor,
                           pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy averaged over the non-missing (non-NaN) entries of ``targets [B, L]``.

    Missing entries contribute neither loss nor gradient; a batch with no labelled entry gives 0.
    """
    mask = ~torch.isnan(targets)
    loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets, nan=0.0),
                                              pos_weight=pos_weight, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


def balanced_pos_weight(targets: np.ndarray) -> np.ndarray:
    """``float32 [L]``: negatives / positives per label over non-missing targets, clipped to
    ``[0.1, 100]`` (1 where a label has no positive)."""
    pos = np.nansum(targets == 1, axis=0).astype(np.float64)
    neg = np.nansum(targets == 0, axis=0).astype(np.float64)
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return np.clip(w, 0.1, 100.0).astype(np.float32)


# ------------------------------------------------------------------------------ training

def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def evaluate(model: Classifier, data: ArraySet, batch_size: int = 256) -> dict[str, Any]:
    """Val/test metrics: ``{"mauc": float | None, "auc": {label: AUC | None}}``."""
    scores = model.predict_proba(data.images, batch_size)
    return {"mauc": mean_auc(data.targets, scores),
            "auc": per_label_auc(data.targets, scores, model.label_names)}


def train_classifier(train: ArraySet, val: ArraySet, config: ClassifierConfig,
                     out_dir: str | Path | None = None, progress: bool = True,
                     init_from: Classifier | None = None, *,
                     label_names: Sequence[str] | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Train on ``train``, select and stop early on ``val`` mAUC, return the best model.

    Args:
        train, val: row-aligned sets with the same label columns (``val`` is only evaluated).
        config: hyper-parameters; ``arch``/``image_size``/``pretrained`` are ignored when
            ``init_from`` is given.
        out_dir: if set, receives ``config.yaml`` (before training), ``model/`` (best
            classifier) and ``history.json``.
        init_from: start from a copy of this classifier (synthetic pre-training -> real
            fine-tuning); the caller's model is not modified.
        label_names: the label of each target column (defaults to ``init_from``'s labels).
    Returns:
        ``(classifier with the best val weights, history)``; history holds one record per
        validation (``step``, ``epoch``, ``train_loss``, ``val_mauc``, ``val_auc``, ``lr``) and
        the run summary (``best_step``, ``best_val_mauc``, ``stopped_early``, images/s, time
        spent waiting for data).
    """
    # 1. Check inputs and write the resolved config before any work.
    config.validate()
    if label_names is None:
        if init_from is None:
            raise CxraugError("train_classifier: pass label_names (one per target column)")
        label_names = init_from.label_names
    if not (len(label_names) == train.n_labels == val.n_labels):
        raise DataError(f"{len(label_names)} label names, but train has {train.n_labels} and val "
                        f"{val.n_labels} target columns")
    if not has_both_classes(val.targets).any():
        raise DataError("validation targets: no label has both a positive and a negative, so val "
                        "mAUC (used for model selection) is undefined; enlarge the val split")
    if len(train) < 2:
        raise DataError(f"training set has {len(train)} image(s); need at least 2")
    if out_dir is not None:
        out_dir = Path(out_dir)
        cfgio.save(config, out_dir)
    device = torch.device(config.device)

    with torch.random.fork_rng(devices=[]):  # dropout/init draw from torch's global RNG
        torch.manual_seed(subseed(config.seed, "init"))

        # 2. Model, optimiser, schedule.
        if init_from is not None:
            model = copy.deepcopy(init_from)
            if list(model.label_names) != [str(n) for n in label_names]:
                raise DataError(f"init_from predicts {model.label_names}, data has {list(label_names)}")
        else:
            model = Classifier(config.arch, list(label_names), config.image_size,
                               drop_rate=config.drop_rate, pretrained=config.pretrained)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        model.to(device=device, memory_format=memory_format)
        sampler = _EpochSampler(len(train), config.batch_size,
                                torch.Generator().manual_seed(subseed(config.seed, "order")))
        loader = DataLoader(_Batches(train, config.in_memory), sampler=sampler, batch_size=None,
                            num_workers=config.num_workers,
                            persistent_workers=config.num_workers > 0)
        total = config.max_epochs * len(sampler)
        total = min(total, config.max_steps) if config.max_steps else total
        eval_every = config.eval_every or len(sampler)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, _lr_lambda(min(config.warmup_steps, total // 10), total))
        pos_weight = (torch.from_numpy(balanced_pos_weight(train.targets)).to(device)
                      if config.pos_weight else None)
        aug_gen = torch.Generator().manual_seed(subseed(config.seed, "augment"))

        # 3. Train; validate every eval_every steps; keep the best val weights.
        evals: list[dict[str, Any]] = []
        best = {"mauc": -math.inf, "step": 0, "state": None}
        step, since_best, stopped_early = 0, 0, False
        losses: list[float] = []
        t_data = t_train = 0.0
        with job_progress("classifier", "loss {task.fields[loss]:.4f}  val mAUC {task.fields[mauc]}",
                          enabled=progress) as bar:
            task = bar.add_task("train", total=total, loss=float("nan"), mauc="-")
            while step < total and not stopped_early:
                t0 = time.perf_counter()
                for images, targets in loader:
                    t1 = time.perf_counter()
                    model.train()
                    x = augment_batch(to_model_range(images, model.image_size), config.augment,
                                      aug_gen)
                    x = transforms.model_to_classifier(x).to(device, memory_format=memory_format)
                    loss = masked_bce_with_logits(model(x), targets.to(device), pos_weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    step += 1
                    losses.append(loss.item())
                    t_data += t1 - t0  # waiting for the loader
                    t0 = time.perf_counter()
                    t_train += t0 - t1  # augmentation, forward, backward, step
                    bar.update(task, advance=1, loss=float(np.mean(losses[-20:])))

                    if step % eval_every == 0 or step == total:
                        metrics = evaluate(model, val, config.eval_batch_size)
                        mauc = metrics["mauc"] if metrics["mauc"] is not None else float("nan")
                        evals.append({"step": step, "epoch": step / len(sampler),
                                      "train_loss": float(np.mean(losses)), "val_mauc": mauc,
                                      "val_auc": metrics["auc"], "lr": sched.get_last_lr()[0]})
                        losses = []
                        if mauc > best["mauc"]:
                            best = {"mauc": mauc, "step": step, "state": {
                                k: v.detach().clone() for k, v in model.state_dict().items()}}
                            since_best = 0
                        else:
                            since_best += 1
                        bar.update(task, mauc=f"{mauc:.4f} (best {best['mauc']:.4f})")
                        if config.patience and since_best >= config.patience:
                            stopped_early = True
                        t0 = time.perf_counter()  # validation time is not data time
                    if step >= total or stopped_early:
                        break

    # 4. Restore the best weights, summarise, save.
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.to(memory_format=torch.contiguous_format).eval()  # as a freshly loaded model is
    history = {
        "evals": evals,
        "best_step": best["step"],
        "best_val_mauc": best["mauc"] if best["state"] is not None else None,
        "stopped_early": stopped_early,
        "steps": step,
        "steps_per_epoch": len(sampler),
        "train_images": len(train),
        "train_images_per_s": step * sampler.batch_size / max(t_train, 1e-9),
        "data_wait_fraction": t_data / max(t_data + t_train, 1e-9),
        "pos_weight": pos_weight.tolist() if pos_weight is not None else None,
        "init_from": init_from is not None,
        "config": cfgio.to_dict(config),
    }
    if out_dir is not None:
        model.save_pretrained(out_dir / "model", meta={"train": {
            k: history[k] for k in ("best_step", "best_val_mauc", "steps", "train_images")}})
        (out_dir / "history.json").write_text(json.dumps(history, indent=2, default=_json_default))
    return model, history


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)


# ----------------------------------------------------------------- a classifier on a dataset

@dataclass
class RealDataConfig:
    """Which real data and labels a classifier learns (``cxraug train classifier``, ``cxraug
    bench``): ``labels`` empty means every observation with at least ``min_positive`` positives in
    both the train and the test split; ``policy`` maps uncertain labels."""

    data: str = "sample:kermany"
    dataset: str = "auto"
    labels: list[str] = field(default_factory=list)
    min_positive: int = 10
    policy: str = "ignore"


@dataclass
class DatasetClassifierConfig(RealDataConfig):
    """``cxraug train classifier``: the real data (:class:`RealDataConfig`), then the classifier's
    settings. Splits are patient-level (:func:`cxraug.data.splits.splits_for`, ``split_seed``) as
    in ``cxraug bench``."""

    split_seed: int = 0
    classifier: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(
        arch="resnet18", image_size=64, max_epochs=20, patience=4))

    def validate(self) -> None:
        from cxraug.data import labels as L

        if self.min_positive < 1:
            raise cfgio.ConfigError("min_positive: must be >= 1")
        # canonical names in OBSERVATIONS order: the classifier's output columns
        self.labels = sorted({L.canonical(x) for x in self.labels}, key=L.index)
        self.classifier.validate()
        check_arch(self.classifier.arch)


def train_on_dataset(cfg: DatasetClassifierConfig, out: str | Path,
                     progress: bool = True) -> dict[str, Any]:
    """Train on the train split of ``cfg.data``, select on val, score val and test once.

    Writes into ``out``: ``config.yaml`` (before any work), ``splits.csv`` (reused when it fits
    the dataset), ``model/`` (the :class:`Classifier` folder that ``cxraug eval --classifier`` and
    ``cxraug synth --classifier`` take), ``history.json`` and ``metrics.json`` (val and test mAUC
    and per-label AUC). Returns the metrics.
    """
    from cxraug.classify.bench import BenchConfig, load_real
    from cxraug.data import labels as L

    # 1. Check the settings and save them before any work.
    out = Path(out)
    cfg.validate()
    cfgio.save(cfg, out)

    # 2. Real data: patient-level splits and cached images, as the bench reads them.
    real = load_real(BenchConfig(data=cfg.data, dataset=cfg.dataset, labels=cfg.labels,
                                 min_positive=cfg.min_positive, policy=cfg.policy,
                                 image_size=cfg.classifier.image_size, split_seed=cfg.split_seed),
                     out / "splits.csv")
    cols = [L.index(x) for x in real.labels]
    train = ArraySet(real.train_images, L.apply_policy(real.train.labels, cfg.policy)[:, cols],
                     real.train.patient_ids)

    # 3. Train with val selection, then score val and test once.
    model, history = train_classifier(train, real.val, cfg.classifier, None, progress,
                                      label_names=real.labels)

    def scored(data: ArraySet) -> dict[str, Any]:
        return {**evaluate(model, data, cfg.classifier.eval_batch_size), "n_images": len(data),
                "n_patients": len(set(data.patient_ids))}

    metrics = {"labels": list(real.labels), "data": cfg.data, "best_step": history["best_step"],
               "steps": history["steps"],
               "train": {"n_images": len(train), "n_patients": len(set(train.patient_ids))},
               "val": scored(real.val), "test": scored(real.test)}

    # 4. Save the classifier and what it measured.
    model.save_pretrained(out / "model", meta={"train": {
        "data": cfg.data, "splits": "splits.csv of the run folder", "best_step": history["best_step"],
        "val_mauc": metrics["val"]["mauc"], "test_mauc": metrics["test"]["mauc"],
        "train_images": len(train)}})
    (out / "history.json").write_text(json.dumps(history, indent=2, default=_json_default))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    return metrics
