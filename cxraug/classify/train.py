"""Training a multi-label classifier on plain arrays (real, synthetic, mixed or duplicated).

Data comes in as an :class:`~cxraug.classify.data.ArraySet`; batches are read as ``uint8``,
converted to float and augmented on the fly in torch, one batch at a time.

Model selection and early stopping look at the validation mAUC only; the test set never enters
this module. The weights of the best validation evaluation are restored before returning. Without
a validation set (``val=None``) the run is a fixed schedule: exactly ``total`` optimiser steps,
no validation, and the final weights are returned (``selection: "final"`` in the history) -- what
the limited-data bench uses, so that no image outside the training data chooses a model.

Augmentation (:mod:`cxraug.classify.augment`) is a small random affine plus brightness/contrast
per image, never a flip.

The loop (:func:`train_classifier`) reads as its steps: check the inputs, set up the model and
optimiser, resume from a checkpoint if there is one, train (one step per batch, a validation every
``eval_every`` steps that keeps the best weights and decides early stopping, a checkpoint every
``checkpoint_every``), restore the best weights and save. It runs on the training kit
(:mod:`cxraug.core.training`): a run with a checkpoint folder, killed and rerun with the same
arguments, ends with the same weights, history and log as an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cxraug.classify.augment import augment_batch
from cxraug.classify.config import ClassifierConfig
from cxraug.classify.data import ArraySet, BatchReader, EpochSampler
from cxraug.classify.loss import balanced_pos_weight, masked_bce_with_logits
from cxraug.classify.model import Classifier, to_model_range
from cxraug.core import config as cfgio
from cxraug.core.errors import CxraugError, DataError
from cxraug.core.precision import resolve_precision
from cxraug.core.progress import MetricsLog, job_progress
from cxraug.core.runs import CHECKPOINTS  # removed once a run's results are saved
from cxraug.core.seeds import subseed
from cxraug.core.training import EpochReplay, TrainState
from cxraug.data import transforms
from cxraug.metrics.auc import has_both_classes, mean_auc, per_label_auc

#: The per-validation curve of a run, one :class:`~cxraug.core.progress.MetricsLog` record per
#: validation, written next to ``history.json``.
TRAIN_LOG = "train_log.jsonl"

__all__ = ["CHECKPOINTS", "TRAIN_LOG", "ClassifierConfig", "balanced_pos_weight", "evaluate",
           "masked_bce_with_logits", "train_classifier"]

# ------------------------------------------------------------------------------ schedule

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


# ------------------------------------------------------------------------------ training

@dataclass
class _Training:
    """What the loop works with: the model and how it is fed and optimised."""

    model: Classifier
    device: torch.device
    memory_format: torch.memory_format
    sampler: EpochSampler
    loader: DataLoader
    order: EpochReplay  # the loader's epochs, one batch at a time, resumable
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    pos_weight: torch.Tensor | None
    augment_rng: torch.Generator
    total_steps: int
    eval_every: int
    bf16: bool = False  # autocast the training step to bf16


@dataclass
class _Progress:
    """Where the loop stands: steps done, validations so far, the best weights, timings."""

    step: int = 0
    evals: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"mauc": -math.inf, "step": 0,
                                                          "state": None})
    since_best: int = 0
    stopped_early: bool = False
    losses: list[float] = field(default_factory=list)  # train losses since the last validation
    t_data: float = 0.0  # waiting for the loader
    t_train: float = 0.0  # augmentation, forward, backward, step

    def to_json(self) -> dict[str, Any]:
        """Everything but the best weights, for a checkpoint's ``state.json``."""
        kept = self.best["state"] is not None
        return {"step": self.step, "evals": self.evals, "best_mauc": self.best["mauc"] if kept else None,
                "best_step": self.best["step"], "since_best": self.since_best,
                "stopped_early": self.stopped_early, "losses": self.losses,
                "t_data": self.t_data, "t_train": self.t_train}

    @classmethod
    def from_json(cls, d: dict[str, Any], best_state: dict[str, torch.Tensor]) -> _Progress:
        best = ({"mauc": d["best_mauc"], "step": d["best_step"], "state": dict(best_state)}
                if best_state else {"mauc": -math.inf, "step": d["best_step"], "state": None})
        return cls(step=d["step"], evals=d["evals"], best=best, since_best=d["since_best"],
                   stopped_early=d["stopped_early"], losses=d["losses"], t_data=d["t_data"],
                   t_train=d["t_train"])


def train_classifier(train: ArraySet, val: ArraySet | None, config: ClassifierConfig,
                     out_dir: str | Path | None = None, progress: bool = True,
                     init_from: Classifier | None = None, *,
                     label_names: Sequence[str] | None = None,
                     train_log: str | Path | None = None, checkpoints: str | Path | None = None,
                     checkpoint_every: int = 0) -> tuple[Classifier, dict[str, Any]]:
    """Train on ``train``, select and stop early on ``val`` mAUC, return the best model.

    Args:
        train, val: row-aligned sets with the same label columns (``val`` is only evaluated);
            ``val`` None: no validation, a fixed schedule whose final weights are returned.
        config: hyper-parameters; ``arch``/``image_size``/``pretrained`` are ignored when
            ``init_from`` is given.
        out_dir: if set, receives ``config.yaml`` (before training), ``model/`` (best
            classifier), ``history.json`` and ``train_log.jsonl``.
        init_from: start from a copy of this classifier (synthetic pre-training -> real
            fine-tuning); the caller's model is not modified.
        label_names: the label of each target column (defaults to ``init_from``'s labels).
        train_log: where to write the per-validation curve (a :class:`MetricsLog` jsonl file);
            defaults to ``out_dir/train_log.jsonl``, or none without ``out_dir``.
        checkpoints: folder of resumable checkpoints; defaults to ``out_dir/checkpoints``
            (removed once ``out_dir`` holds the results), or none without ``out_dir``. A run
            whose folder holds a checkpoint resumes from the newest intact one.
        checkpoint_every: steps between checkpoints; 0: every ``eval_every`` (once per epoch
            by default).
    Returns:
        ``(classifier with the best val weights, history)``; history holds one record per
        validation (``step``, ``epoch``, ``train_loss``, ``val_mauc``, ``val_auc``, ``lr``) and
        the run summary (``best_step``, ``best_val_mauc``, ``stopped_early``, images/s, time
        spent waiting for data).
    """
    # 1. Check inputs and write the resolved config before any work.
    label_names = _checked_label_names(train, val, config, init_from, label_names)
    if out_dir is not None:
        out_dir = Path(out_dir)
        cfgio.save(config, out_dir)
        train_log = out_dir / TRAIN_LOG if train_log is None else train_log
        checkpoints = out_dir / CHECKPOINTS if checkpoints is None else checkpoints
    log = MetricsLog(train_log) if train_log is not None else None

    with torch.random.fork_rng(devices=[]):  # dropout/init draw from torch's global RNG
        torch.manual_seed(subseed(config.seed, "init"))
        # 2. Model, optimiser, schedule; the checkpoint to resume from, if any.
        run = _set_up(train, config, init_from, label_names)
        state = _train_state(run, config)
        done = _resume(state, config, checkpoints)
        if log is not None:
            log.resume(done.step)  # a new run (step 0) keeps no records of an earlier one
        # 3. Train; validate every eval_every steps; keep the best val weights.
        every = checkpoint_every or run.eval_every
        _train_loop(run, done, val, config, progress, log,
                    (state, Path(checkpoints), every) if checkpoints is not None else None)

    # 4. Restore the best weights, summarise, save.
    _restore_best(run.model, done)
    history = _history(run, done, train, config, init_from)
    if out_dir is not None:
        _save(out_dir, run.model, history)
        shutil.rmtree(checkpoints, ignore_errors=True)
    return run.model, history


def _checked_label_names(train: ArraySet, val: ArraySet, config: ClassifierConfig,
                         init_from: Classifier | None,
                         label_names: Sequence[str] | None) -> Sequence[str]:
    """Validate the config and the data; the label of each target column."""
    config.validate()
    if label_names is None:
        if init_from is None:
            raise CxraugError("train_classifier: pass label_names (one per target column)")
        label_names = init_from.label_names
    if len(label_names) != train.n_labels or (val is not None and val.n_labels != train.n_labels):
        raise DataError(f"{len(label_names)} label names, but train has {train.n_labels} and val "
                        f"{val.n_labels if val is not None else '-'} target columns")
    if val is not None and not has_both_classes(val.targets).any():
        raise DataError("validation targets: no label has both a positive and a negative, so val "
                        "mAUC (used for model selection) is undefined; enlarge the val split")
    if len(train) < 2:
        raise DataError(f"training set has {len(train)} image(s); need at least 2")
    return label_names


def _set_up(train: ArraySet, config: ClassifierConfig, init_from: Classifier | None,
            label_names: Sequence[str]) -> _Training:
    """The model (new, or a copy of ``init_from``), the batch loader, optimiser and schedule."""
    device = torch.device(config.device)
    if init_from is not None:
        model = copy.deepcopy(init_from)
        if list(model.label_names) != [str(n) for n in label_names]:
            raise DataError(f"init_from predicts {model.label_names}, data has {list(label_names)}")
    else:
        model = Classifier(config.arch, list(label_names), config.image_size,
                           drop_rate=config.drop_rate, pretrained=config.pretrained)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    sampler = EpochSampler(len(train), config.batch_size,
                           torch.Generator().manual_seed(subseed(config.seed, "order")))
    loader = DataLoader(BatchReader(train, config.in_memory), sampler=sampler, batch_size=None,
                        num_workers=config.num_workers, persistent_workers=config.num_workers > 0)
    order = EpochReplay(lambda: iter(loader), sampler.generator)
    total = config.max_epochs * len(sampler)
    total = min(total, config.max_steps) if config.max_steps else total
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(min(config.warmup_steps, total // 10), total))
    pos_weight = (torch.from_numpy(balanced_pos_weight(train.targets)).to(device)
                  if config.pos_weight else None)
    augment_rng = torch.Generator().manual_seed(subseed(config.seed, "augment"))
    bf16 = resolve_precision(config.precision, device.type) == "bf16"
    return _Training(model, device, memory_format, sampler, loader, order, opt, sched, pos_weight,
                     augment_rng, total, config.eval_every or len(sampler), bf16)


def _train_state(run: _Training, config: ClassifierConfig) -> TrainState:
    """What a checkpoint holds: weights, optimiser, schedule, the batch order, the augmentation
    and global generators (dropout, the loader's seed), the loop's progress and best weights."""
    return TrainState(run.model, run.opt, lr_sched=run.sched, order=run.order,
                      generators={"order": run.sampler.generator, "augment": run.augment_rng},
                      global_rng=True, extra={"progress": _Progress().to_json(),
                                              "config": cfgio.to_dict(config)})


def _resume(state: TrainState, config: ClassifierConfig, checkpoints: str | Path | None) -> _Progress:
    """The progress of the newest intact checkpoint in ``checkpoints`` (applied to the model,
    optimiser and generators), or a fresh start."""
    if checkpoints is None or state.resume(checkpoints) == 0:
        return _Progress()
    if state.extra["config"] != cfgio.to_dict(config):
        raise CxraugError(f"{checkpoints}: these checkpoints belong to a classifier run with other "
                          "settings; resume with the same settings, or delete that folder to start "
                          "from step 0")
    return _Progress.from_json(state.extra["progress"], state.tensors)


def _train_loop(run: _Training, done: _Progress, val: ArraySet | None, config: ClassifierConfig,
                progress: bool, log: MetricsLog | None,
                saving: tuple[TrainState, Path, int] | None) -> None:
    """Steps from ``done.step`` until ``total_steps`` or early stopping; validate every
    ``eval_every``; ``saving``: ``(state, folder, every)``, a checkpoint every ``every`` steps."""
    fields = "loss {task.fields[loss]:.4f}" + ("  val mAUC {task.fields[mauc]}" if val is not None
                                               else "  (fixed schedule, no validation)")
    with job_progress("classifier", fields, enabled=progress) as bar:
        task = bar.add_task("train", total=run.total_steps, completed=done.step,
                            loss=float("nan"), mauc="-")
        while done.step < run.total_steps and not done.stopped_early:
            t0 = time.perf_counter()
            images, targets = run.order.next()
            t1 = time.perf_counter()
            done.losses.append(_train_step(run, config, images, targets))
            done.step += 1
            done.t_data += t1 - t0
            done.t_train += time.perf_counter() - t1
            bar.update(task, advance=1, loss=float(np.mean(done.losses[-20:])))

            if val is not None and (done.step % run.eval_every == 0
                                    or done.step == run.total_steps):
                mauc = _validate(run, done, val, config, log)
                bar.update(task, mauc=f"{mauc:.4f} (best {done.best['mauc']:.4f})")
            if saving is not None and (done.step % saving[2] == 0 or done.step == run.total_steps
                                       or done.stopped_early):
                state, folder, _ = saving
                _checkpoint(done, state, folder)


def _checkpoint(done: _Progress, state: TrainState, folder: Path) -> None:
    """Save the run after ``done.step`` steps (the newest checkpoint only)."""
    state.extra["progress"] = done.to_json()
    state.tensors.clear()
    state.tensors.update(done.best["state"] or {})
    state.save(folder, done.step, keep=1)


def _train_step(run: _Training, config: ClassifierConfig, images: torch.Tensor,
                targets: torch.Tensor) -> float:
    """Augment one uint8 batch, take one optimiser and schedule step; the batch loss."""
    model = run.model
    model.train()
    x = augment_batch(to_model_range(images, model.image_size), config.augment, run.augment_rng)
    x = transforms.model_to_classifier(x).to(run.device, memory_format=run.memory_format)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        logits = model(x)
    loss = masked_bce_with_logits(logits.float(), targets.to(run.device), run.pos_weight)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    run.sched.step()
    return loss.item()


def _validate(run: _Training, done: _Progress, val: ArraySet, config: ClassifierConfig,
              log: MetricsLog | None) -> float:
    """Score ``val``, record it, keep the weights if best, decide early stopping; the mAUC."""
    metrics = evaluate(run.model, val, config.eval_batch_size)
    mauc = metrics["mauc"] if metrics["mauc"] is not None else float("nan")
    record = {"step": done.step, "epoch": done.step / len(run.sampler),
              "train_loss": float(np.mean(done.losses)), "val_mauc": mauc,
              "val_auc": metrics["auc"], "lr": run.sched.get_last_lr()[0]}
    done.evals.append(record)
    if log is not None:
        log.write(**record)
    done.losses = []
    if mauc > done.best["mauc"]:
        done.best = {"mauc": mauc, "step": done.step, "state": {
            k: v.detach().clone() for k, v in run.model.state_dict().items()}}
        done.since_best = 0
    else:
        done.since_best += 1
    if config.patience and done.since_best >= config.patience:
        done.stopped_early = True
    return mauc


def _restore_best(model: Classifier, done: _Progress) -> None:
    """Load the best validation's weights; leave the model as a freshly loaded one is."""
    if done.best["state"] is not None:
        model.load_state_dict(done.best["state"])
    model.to(memory_format=torch.contiguous_format).eval()


def _history(run: _Training, done: _Progress, train: ArraySet, config: ClassifierConfig,
             init_from: Classifier | None) -> dict[str, Any]:
    """The validations and the run summary (what ``history.json`` holds)."""
    return {
        "evals": done.evals,
        "selection": "best-val" if done.evals else "final",
        "best_step": done.best["step"] if done.evals else done.step,
        "best_val_mauc": done.best["mauc"] if done.best["state"] is not None else None,
        "stopped_early": done.stopped_early,
        "steps": done.step,
        "steps_per_epoch": len(run.sampler),
        "train_images": len(train),
        "train_images_per_s": done.step * run.sampler.batch_size / max(done.t_train, 1e-9),
        "data_wait_fraction": done.t_data / max(done.t_data + done.t_train, 1e-9),
        "pos_weight": run.pos_weight.tolist() if run.pos_weight is not None else None,
        "init_from": init_from is not None,
        "config": cfgio.to_dict(config),
    }


def _save(out_dir: Path, model: Classifier, history: dict[str, Any]) -> None:
    model.save_pretrained(out_dir / "model", meta={"train": {
        k: history[k] for k in ("best_step", "best_val_mauc", "steps", "train_images")}})
    (out_dir / "history.json").write_text(json_text(history))


def json_text(obj: Any) -> str:
    """``obj`` (a history or metrics dict) as indented JSON, as ``history.json`` holds it (a
    dataclass as its fields, anything else JSON lacks as its string)."""
    return json.dumps(obj, indent=2, default=_json_default)


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)
