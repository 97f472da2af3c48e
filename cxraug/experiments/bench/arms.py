"""One bench job: the arm's training (and pre-training) data, training and saving the
classifier, its test scores, and its scores on the external test sets."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from cxraug.classify.data import ArraySet
from cxraug.classify.model import Classifier, init_name
from cxraug.classify.real import RealData
from cxraug.classify.train import ClassifierConfig, train_classifier
from cxraug.core.artifacts import CONFIG_NAME
from cxraug.core.errors import CxraugError
from cxraug.core.precision import resolve_precision
from cxraug.data import labels as L
from cxraug.data.splits import real_subset
from cxraug.experiments.bench.config import (
    DUP,
    GEN_ARMS,
    GEN_DATA,
    PRETRAIN_ARMS,
    SELECTION,
    SHUFFLED,
    SYNTH_ARMS,
    BenchConfig,
    job_dir,
)
from cxraug.experiments.bench.inputs import TestSet


def arm_data(arm: str, real: ArraySet, synth: ArraySet | None, ratio: float, seed: int,
             gen_data: ArraySet | None = None):
    """(training set, pre-training set or None) for one arm; ``gen_data``: the generator's own
    real training images (``gen-data->real`` only)."""
    if arm in SYNTH_ARMS and synth is None:
        raise CxraugError(f"arm {arm!r} needs a synthetic cohort: pass --synth DIR or --model RUN")
    if arm == GEN_DATA:
        if gen_data is None:
            raise CxraugError(f"arm {arm!r} needs the generator's training images: pass --model RUN")
        return real, gen_data
    n_extra = max(1, int(round(ratio * len(real))))
    if synth is not None:
        n_extra = min(len(synth), n_extra)
    if arm == "real":
        return real, None
    if arm == DUP:  # as many extra rows as real+synth adds, all of them real copies
        return real.repeat(len(real) + n_extra, seed=seed), None
    if arm == "real+synth":
        rows = np.sort(np.random.default_rng(seed).permutation(len(synth))[:n_extra])
        return ArraySet.concat(real, synth.subset(rows)), None
    if arm == "synth->real":
        return real, synth
    if arm == SHUFFLED:
        return real, shuffled_labels(synth, seed)
    return synth, None


def shuffled_labels(data: ArraySet, seed: int) -> ArraySet:
    """``data`` with its label rows permuted across images (the same pixels, the same label
    frequencies, no link between the two): the control for "pre-training on anything"."""
    perm = np.random.default_rng(seed).permutation(len(data))
    return ArraySet(data.images, data.targets[perm], data.patient_ids)


def pretrained(pre: ArraySet, labels: list[str], ccfg: ClassifierConfig, folder: Path,
               progress: bool = True) -> Classifier:
    """The pre-training of a pre-training arm (``ccfg.max_steps`` steps, no validation, final
    weights), shared by every fraction and draw that uses the same set and seed, saved once to
    ``folder``."""
    if (folder / "config.json").is_file():
        return Classifier.from_pretrained(folder)
    t0 = time.perf_counter()
    model, _ = train_classifier(pre, None, ccfg, None, progress, label_names=labels)
    model.meta["pretrain"] = {"steps": ccfg.max_steps, "seconds": round(time.perf_counter() - t0, 2)}
    model.save_pretrained(folder)
    return model


def _pretrain_seconds(model: Classifier, steps: int) -> float | None:
    """Seconds the shared pre-training took (recorded once, when it was trained)."""
    meta = getattr(model, "meta", None) or {}
    return (meta.get("pretrain") or {}).get("seconds")


def budget(ccfg: ClassifierConfig, steps: int, seed: int) -> ClassifierConfig:
    """``ccfg`` as a fixed schedule of exactly ``steps`` optimiser steps (no early stopping)."""
    return dataclasses.replace(ccfg, seed=seed, max_steps=steps, max_epochs=10**9, patience=0)


def draw_seed(cfg: BenchConfig, draw: int) -> int:
    """The subset seed of draw ``draw`` (independent patient-level draws of every fraction)."""
    return cfg.subset_seed + draw


def real_subset_set(real: RealData, frac: float, cfg: BenchConfig, draw: int = 0) -> ArraySet:
    """The real training subset ``frac`` of draw ``draw`` as an ArraySet (images,
    policy-applied targets)."""
    sub = real_subset(real.train, frac, seed=draw_seed(cfg, draw))
    rows = np.flatnonzero(np.isin(real.train.ids, sub.ids))
    cols = [L.index(x) for x in real.labels]
    return ArraySet(real.train_images[rows], L.apply_policy(sub.labels, cfg.policy)[:, cols],
                    sub.patient_ids)


def train_rows_set(real: RealData, rows: np.ndarray, policy: str) -> ArraySet:
    """Rows of the real training split as an ArraySet (the generator's own images)."""
    cols = [L.index(x) for x in real.labels]
    y = L.apply_policy(real.train.labels[rows], policy)[:, cols]
    return ArraySet(np.asarray(real.train_images[rows]), y, real.train.patient_ids[rows])


def _external_path(folder: Path, t: TestSet) -> Path:
    return folder / "external" / f"{t.name}.npz"


def saved_external_scores(folder: Path, t: TestSet) -> np.ndarray | None:
    """A job's saved scores on ``t``, or None when missing or made for other images."""
    path = _external_path(folder, t)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        same = z["ids"].shape == t.ids.shape and bool((z["ids"] == t.ids).all())
        return z["scores"] if same else None


def saved_classifier(folder: Path) -> Path:
    if not (folder / "model" / CONFIG_NAME).is_file():
        raise CxraugError(f"{folder}: this job saved no classifier (an older cxraug ran it), so "
                          "--test-data cannot score it; delete that job folder to retrain it")
    return folder / "model"


def score_external(folder: Path, tests: list[TestSet], cfg: BenchConfig, model=None) -> None:
    """Save the job's scores on every external set it lacks; without ``model`` its saved
    classifier is loaded (a finished job is never retrained for a new test set)."""
    todo = [t for t in tests if saved_external_scores(folder, t) is None]
    if not todo:
        return
    if model is None:
        model = Classifier.from_pretrained(saved_classifier(folder)).to(cfg.classifier.device)
    (folder / "external").mkdir(parents=True, exist_ok=True)
    for t in todo:
        scores = model.predict_proba(t.data.images, cfg.classifier.eval_batch_size)
        tmp = _external_path(folder, t).with_suffix(".tmp")
        with tmp.open("wb") as f:
            np.savez(f, scores=scores, ids=t.ids)
        tmp.replace(_external_path(folder, t))


def run_job(frac: float, draw: int, arm: str, seed: int, real: RealData, synth: ArraySet | None,
            cfg: BenchConfig, out: Path, progress: bool = True, cohort_key: str = "cohort",
            generator_real_frac: float | None = None, *, gen_data: ArraySet | None = None,
            generator_real_images: int | None = None, tests: list[TestSet] | None = None,
            init: str | None = None) -> dict:
    """Train one classifier on ``cfg.steps`` optimiser steps (pre-training included), save it,
    score the test split and the external test sets. A job already done only scores the
    external sets it lacks, with its saved classifier."""
    folder = job_dir(out, frac, draw, arm, seed)
    if (folder / "result.json").is_file():
        score_external(folder, tests or [], cfg)
        return json.loads((folder / "result.json").read_text())
    real_set = real_subset_set(real, frac, cfg, draw)
    train_set, pre = arm_data(arm, real_set, synth, cfg.synth_ratio, seed, gen_data)
    pre_steps, fine_steps = cfg.split_steps() if pre is not None else (0, cfg.steps)
    start = None
    if pre is not None:
        key = cohort_key if arm != GEN_DATA else (
            f"gen-data_{cohort_key}" if cohort_key != "cohort"  # strict: one generator per draw
            else f"gen-data_frac{generator_real_frac:g}" if generator_real_frac is not None else "gen-data")
        key = f"shuffled-{key}" if arm == SHUFFLED else key
        start = pretrained(pre, real.labels, budget(cfg.classifier, pre_steps, seed),
                           out / "pretrain" / f"{key}_steps{pre_steps}_seed{seed}", progress)
    t1 = time.perf_counter()  # pre-training (when this job did it) is timed on its own
    model, history = train_classifier(train_set, None, budget(cfg.classifier, fine_steps, seed),
                                      None, progress, init_from=start, label_names=real.labels)
    if history["steps"] != fine_steps:  # the budget is the protocol: never report another one
        raise CxraugError(f"{folder.name}: trained {history['steps']} steps, budget {fine_steps}")
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder / "model")  # so test sets added later need no retraining
    np.save(folder / "test_scores.npy", model.predict_proba(real.test.images))
    score_external(folder, tests or [], cfg, model)
    gen = arm in GEN_ARMS
    bs = cfg.classifier.batch_size
    result = {"frac": frac, "draw": draw, "subset_seed": draw_seed(cfg, draw), "arm": arm,
              "seed": seed, "n_real": len(real_set),
              "n_real_patients": int(len(set(real_set.patient_ids))), "n_train": len(train_set),
              "n_synth": int(len(train_set) - len(real_set)) if arm == "real+synth" else
              (len(synth) if arm in (*PRETRAIN_ARMS, "synth") and arm != GEN_DATA else 0),
              "n_pretrain": len(pre) if pre is not None else 0,
              "optimizer_steps": pre_steps + fine_steps, "pretrain_steps": pre_steps,
              "finetune_steps": fine_steps, "batch_size": bs,
              "images_seen": (pre_steps + fine_steps) * bs, "selection": SELECTION,
              "generator_real_frac": generator_real_frac if gen else None,
              "generator_real_images": generator_real_images if gen else None,
              "init": init or init_name(cfg.classifier.pretrained),
              "seconds": round(time.perf_counter() - t1, 2),
              "pretrain_seconds": _pretrain_seconds(start, pre_steps) if pre is not None else 0.0,
              "precision": resolve_precision(cfg.classifier.precision, cfg.classifier.device)}
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result
