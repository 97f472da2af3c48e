"""The limited-data experiment: does synthetic data help a classifier trained on little real data?

For each real fraction (nested, patient-level subsets of the training split), each arm and each
seed, one classifier is trained and scored on the real test split:

* ``real``        the real subset only;
* ``real+dup``    the real subset repeated to the size of ``real+synth`` (the control that
                  synthetic data must beat: more rows per epoch alone can help);
* ``real+synth``  the real subset plus ``synth_ratio`` x as many synthetic images;
* ``synth->real`` pre-trained on the whole synthetic cohort, fine-tuned on the real subset;
* ``synth``       the synthetic cohort only.

Generator protocols: the paper's (one generator, trained on the whole training split, for every
real fraction) and, with ``strict``, a generator per fraction trained like the given one but only
on that fraction's real subset (the classifier's own images), so that no real image outside the
subset reaches the classifier through the synthetic data. Each job records the
``generator_real_frac`` of the cohort it used.

Model selection and early stopping use the real validation split only; the test split is used
once per job. Each job writes its test scores, so an interrupted bench resumes, and ``--job i/N``
runs a disjoint share of the jobs for any scheduler. Statistics: per-label AUC and mAUC with
95% patient-bootstrap intervals, and every arm's paired difference against ``real`` on the
same seed (same resamples), then mean and spread across seeds.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxraug.classify.train import ArraySet, ClassifierConfig, train_classifier
from cxraug.config import ConfigError
from cxraug.data import labels as L
from cxraug.errors import CxraugError, DataError

ARMS = ("real", "real+dup", "real+synth", "synth->real", "synth")
SYNTH_ARMS = ("real+synth", "synth->real", "synth")


@dataclass
class BenchConfig:
    """What to compare. ``labels`` empty: every observation with at least ``min_positive``
    positives in both the training and the test split."""

    data: str = "sample:kermany"
    dataset: str = "auto"
    labels: list[str] = field(default_factory=list)
    min_positive: int = 10
    policy: str = "ignore"
    image_size: int = 64
    real_fracs: list[float] = field(default_factory=lambda: [0.01, 1.0])
    arms: list[str] = field(default_factory=lambda: ["real", "real+dup", "real+synth"])
    synth_ratio: float = 1.0
    seeds: int = 1
    split_seed: int = 0
    subset_seed: int = 0
    n_boot: int = 1000
    classifier: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(
        arch="resnet18", image_size=64, max_epochs=20, patience=4, batch_size=64))

    def validate(self) -> None:
        for f in self.real_fracs:
            if not 0 < f <= 1:
                raise ConfigError(f"real fraction {f}: must be in (0, 1], e.g. 0.01 for 1%")
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise ConfigError(f"unknown arm {bad[0]!r}; choose from {', '.join(ARMS)}")
        if self.seeds < 1:
            raise ConfigError(f"seeds {self.seeds}: must be >= 1")
        if self.synth_ratio <= 0:
            raise ConfigError(f"synth_ratio {self.synth_ratio}: must be > 0")
        if self.classifier.image_size != self.image_size:
            self.classifier.image_size = self.image_size


@dataclass
class RealData:
    train: Any  # CXRDataset of the training split
    val: ArraySet
    test: ArraySet
    train_images: np.ndarray
    labels: list[str]


def load_real(cfg: BenchConfig, splits_path: Path) -> RealData:
    """Splits (reused from ``splits_path``), cached images and targets for the chosen labels."""
    from cxraug.data.adapters import load_dataset, resolve_data
    from cxraug.data.cache import cached_images
    from cxraug.data.splits import splits_for

    ds = splits_for(load_dataset(resolve_data(cfg.data), cfg.dataset), splits_path, seed=cfg.split_seed)
    ds = ds.select(ds.table["assigned_split"].to_numpy() != "excluded")
    images, ds, _ = cached_images(ds, cfg.image_size)
    split = ds.table["assigned_split"].to_numpy()
    if cfg.labels:
        labels = [L.canonical(x) for x in cfg.labels]
    else:
        y = ds.labels
        labels = [o for i, o in enumerate(L.OBSERVATIONS) if o != "No Finding"
                  and all(((y[split == s, i] == 1).sum() >= cfg.min_positive) for s in ("train", "test"))]
        if not labels:
            raise DataError(f"{cfg.data}: no observation has {cfg.min_positive} positives in both train "
                            "and test; pass --labels or lower --min-positive")
    cols = [L.index(x) for x in labels]
    targets = L.apply_policy(ds.labels, cfg.policy)[:, cols]

    def arr(name: str) -> ArraySet:
        m = split == name
        return ArraySet(np.asarray(images[m]), targets[m], ds.patient_ids[m])

    train_ds = ds.where_split("train")
    return RealData(train_ds, arr("val"), arr("test"), np.asarray(images[split == "train"]), labels)


def load_cohort(folder: Path, labels: list[str], image_size: int, policy: str) -> tuple[ArraySet, dict]:
    """A synthetic cohort from ``cxraug synth`` (accepted images only) as an ArraySet."""
    from cxraug.data.transforms import load_grayscale, resize_square

    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{folder}: no manifest.csv; pass a cohort folder written by cxraug synth")
    df = pd.read_csv(manifest)
    missing = [c for c in ("file", *labels) if c not in df.columns]
    if missing:
        raise DataError(f"{manifest}: missing column(s) {', '.join(missing)}")
    if "accepted" in df.columns:
        df = df[df["accepted"].astype(str).str.lower().isin(["true", "1"])]
    if df.empty:
        raise DataError(f"{manifest}: no accepted images")
    imgs = np.stack([resize_square(load_grayscale(folder / f), image_size) for f in df["file"]])
    raw = np.full((len(df), L.N_OBS), np.nan, np.float32)
    for o in labels:
        raw[:, L.index(o)] = df[o].to_numpy(dtype=np.float32)
    targets = L.apply_policy(raw, policy)[:, [L.index(o) for o in labels]]
    card = json.loads((folder / "cohort.json").read_text()) if (folder / "cohort.json").is_file() else {}
    return ArraySet(imgs, targets, np.array([f"synthetic-{i}" for i in range(len(df))])), card


def jobs(cfg: BenchConfig) -> list[tuple[float, str, int]]:
    """Every (fraction, arm, seed); ``real`` first within a fraction."""
    arms = sorted(set(cfg.arms) | {"real"}, key=ARMS.index)
    return [(f, a, s) for f in cfg.real_fracs for s in range(cfg.seeds) for a in arms]


def job_dir(out: Path, frac: float, arm: str, seed: int) -> Path:
    return out / "jobs" / f"frac{frac:g}_{arm.replace('->', '-to-').replace('+', '-plus-')}_seed{seed}"


def arm_data(arm: str, real: ArraySet, synth: ArraySet | None, ratio: float, seed: int):
    """(training set, pre-training set or None) for one arm."""
    if arm in SYNTH_ARMS and synth is None:
        raise CxraugError(f"arm {arm!r} needs a synthetic cohort: pass --synth DIR or --model RUN")
    n_syn = min(len(synth), max(1, int(round(ratio * len(real))))) if synth is not None else 0
    if arm == "real":
        return real, None
    if arm == "real+dup":
        # count-matched to real+synth: the same number of extra rows, all of them real copies
        extra = n_syn if synth is not None else max(1, int(round(ratio * len(real))))
        return real.repeat(len(real) + extra, seed=seed), None
    if arm == "real+synth":
        rows = np.sort(np.random.default_rng(seed).permutation(len(synth))[:n_syn])
        return ArraySet.concat(real, synth.subset(rows)), None
    if arm == "synth->real":
        return real, synth
    return synth, None


def pretrained_on_synth(synth: ArraySet, real: RealData, ccfg: ClassifierConfig, folder: Path,
                        progress: bool = True):
    """The ``synth->real`` arm's synthetic pre-training, shared by every fraction of a seed (it
    does not depend on the real subset), saved once to ``folder``."""
    from cxraug.classify.model import Classifier

    if (folder / "config.json").is_file():
        return Classifier.from_pretrained(folder)
    model, _ = train_classifier(synth, real.val, ccfg, None, progress, label_names=real.labels)
    model.save_pretrained(folder)
    return model


#: Fewer real training images than this per class (positives or negatives of a label) make a
#: subset's test mAUC mostly noise; bench warns and records it.
MIN_PER_CLASS = 10


def subset_warnings(cfg: BenchConfig, real: RealData) -> list[str]:
    """One line per real fraction whose subset has fewer than ``MIN_PER_CLASS`` positive or
    negative images for some label."""
    from cxraug.data.splits import real_subset

    out = []
    for frac in cfg.real_fracs:
        sub = real_subset(real.train, frac, seed=cfg.subset_seed)
        y = L.apply_policy(sub.labels, cfg.policy)[:, [L.index(x) for x in real.labels]]
        for j, name in enumerate(real.labels):
            pos, neg = int((y[:, j] == 1).sum()), int((y[:, j] == 0).sum())
            if min(pos, neg) < MIN_PER_CLASS:
                out.append(f"real fraction {frac:g}: {len(sub)} training images, {pos} {name} positive "
                           f"and {neg} negative (< {MIN_PER_CLASS} per class): its numbers are "
                           "mostly noise; use a larger dataset (--data) or fraction")
    return out


def run_job(frac: float, arm: str, seed: int, real: RealData, synth: ArraySet | None,
            cfg: BenchConfig, out: Path, progress: bool = True, cohort_key: str = "cohort",
            generator_real_frac: float | None = None) -> dict:
    """Train one classifier and score the test split (skipped if already done)."""
    from cxraug.data.splits import real_subset

    folder = job_dir(out, frac, arm, seed)
    if (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    sub = real_subset(real.train, frac, seed=cfg.subset_seed)
    rows = np.flatnonzero(np.isin(real.train.ids, sub.ids))
    cols = [L.index(x) for x in real.labels]
    real_set = ArraySet(real.train_images[rows], L.apply_policy(sub.labels, cfg.policy)[:, cols],
                        sub.patient_ids)
    train_set, pre = arm_data(arm, real_set, synth, cfg.synth_ratio, seed)
    ccfg = dataclasses.replace(cfg.classifier, seed=seed)
    init = None
    if pre is not None:
        init = pretrained_on_synth(pre, real, ccfg, out / "pretrain" / f"{cohort_key}_seed{seed}", progress)
    model, history = train_classifier(train_set, real.val, ccfg, None, progress, init_from=init,
                                      label_names=real.labels)
    scores = model.predict_proba(real.test.images)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "test_scores.npy", scores)
    result = {"frac": frac, "arm": arm, "seed": seed, "n_real": len(real_set),
              "n_real_patients": int(len(set(real_set.patient_ids))), "n_train": len(train_set),
              "n_synth": int(len(train_set) - len(real_set)) if arm == "real+synth" else
              (len(synth) if arm in ("synth->real", "synth") else 0),
              "best_val_mauc": history.get("best_val_mauc"), "best_step": history.get("best_step"),
              "generator_real_frac": generator_real_frac if arm in SYNTH_ARMS else None}
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


def summarise(cfg: BenchConfig, real: RealData, results: list[dict], out: Path) -> dict:
    """Bootstrap CIs per job, paired differences vs ``real``, mean/spread across seeds."""
    from cxraug.metrics.bootstrap import bootstrap_auc, paired_difference

    test = real.test
    rows = []
    for r in results:
        s = np.load(job_dir(out, r["frac"], r["arm"], r["seed"]) / "test_scores.npy")
        b = bootstrap_auc(test.targets, s, test.patient_ids, cfg.n_boot, seed=r["seed"],
                          label_names=real.labels)
        rec = dict(r, mauc=b["mauc"], ci=list(b["ci"]),
                   per_label={k: (v["auc"] if v else None) for k, v in b["per_label"].items()})
        if r["arm"] != "real":
            ref = np.load(job_dir(out, r["frac"], "real", r["seed"]) / "test_scores.npy")
            d = paired_difference(test.targets, s, ref, test.patient_ids, cfg.n_boot, seed=r["seed"],
                                  label_names=real.labels)
            rec["diff_vs_real"] = {"diff": d["diff"], "ci": list(d["ci"]), "p_value": d["p_value"]}
        rows.append(rec)
    cells = {}
    for (frac, arm), grp in pd.DataFrame(rows).groupby(["frac", "arm"], sort=False):
        m = grp["mauc"].astype(float)
        cell = {"frac": frac, "arm": arm, "seeds": len(grp), "mauc_mean": float(m.mean()),
                "mauc_sd": float(m.std(ddof=1)) if len(m) > 1 else 0.0,
                "ci_mean": [float(np.mean([c[0] for c in grp["ci"]])), float(np.mean([c[1] for c in grp["ci"]]))]}
        if arm != "real":
            diffs = [d["diff"] for d in grp["diff_vs_real"]]
            cell["diff_vs_real_mean"] = float(np.mean(diffs))
            cell["diff_ci_mean"] = [float(np.mean([d["ci"][0] for d in grp["diff_vs_real"]])),
                                    float(np.mean([d["ci"][1] for d in grp["diff_vs_real"]]))]
        cells[f"{frac:g}|{arm}"] = cell
    return {"jobs": rows, "cells": list(cells.values())}


def test_summary(real: RealData) -> dict:
    y = real.test.targets
    return {"n_images": len(y), "n_patients": int(len(set(real.test.patient_ids))),
            "positives": {o: int(np.nansum(y[:, j] == 1)) for j, o in enumerate(real.labels)},
            "negatives": {o: int(np.nansum(y[:, j] == 0)) for j, o in enumerate(real.labels)}}


def versions() -> dict:
    import timm
    import torch

    import cxraug

    return {"cxraug": cxraug.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": __import__("os").cpu_count()}


def plot(summary: dict, path: Path, title: str) -> Path:
    """mAUC vs real fraction per arm, with the mean per-seed 95% CI as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = pd.DataFrame(summary["cells"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, grp in cells.groupby("arm", sort=False):
        grp = grp.sort_values("frac")
        ax.plot(grp["frac"], grp["mauc_mean"], marker="o", label=arm)
        ax.fill_between(grp["frac"], [c[0] for c in grp["ci_mean"]], [c[1] for c in grp["ci_mean"]],
                        alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of real training patients")
    ax.set_ylabel("test mAUC (95% patient-bootstrap CI)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cohort_for_bench(model: Path, labels: list[str], n: int, out: Path, seed: int = 0,
                     progress: bool = True) -> Path:
    """Synthesise a cohort for the benchmark's labels from a generator run (resumable)."""
    from cxraug.cohorts.generate import SynthConfig, synthesize

    cfg = SynthConfig(labels=list(labels), n=n, seed=seed, gates=["memorisation"])
    synthesize(cfg, model, out, progress=progress)
    return out


def generator_config(model: Path, frac: float, cfg: BenchConfig, overrides: list[str] | None = None):
    """The config of ``model`` retargeted to the real subset ``frac`` of the same splits."""
    from cxraug import config as C
    from cxraug.diffusion.config import DiffCXRConfig

    if not (model / "config.yaml").is_file():
        raise CxraugError(f"{model}: no config.yaml; --strict needs a run folder written by cxraug train")
    sets = [f"data.real_frac={frac}", f"data.split_seed={cfg.split_seed}",
            f"data.subset_seed={cfg.subset_seed}", *(overrides or [])]
    return C.load(DiffCXRConfig, model / "config.yaml", sets)


def strict_generator(model: Path, frac: float, cfg: BenchConfig, out: Path,
                     overrides: list[str] | None = None, progress: bool = True) -> Path:
    """A generator trained like ``model`` (its recipe, same splits) on the real subset ``frac``
    only; ``model`` itself when it already is one. Trained once into ``out`` and resumable."""
    import shutil

    from cxraug import config as C
    from cxraug.diffusion.config import DiffCXRConfig
    from cxraug.diffusion.run import train

    gen_cfg = generator_config(model, frac, cfg, overrides)
    own = C.load(DiffCXRConfig, model / "config.yaml")
    if not overrides and own.data.real_frac == frac and own.data.subset_seed == cfg.subset_seed:
        return model
    out.mkdir(parents=True, exist_ok=True)
    if (model / "splits.csv").is_file() and not (out / "splits.csv").is_file():
        shutil.copyfile(model / "splits.csv", out / "splits.csv")
    stage = "2" if (model / "adapter" / "config.json").is_file() else "1"
    train(gen_cfg, out, [stage], progress=progress)
    return out


def _trained_on(card: dict) -> dict:
    generator = card.get("generator", {}) if isinstance(card.get("generator"), dict) else {}
    return generator.get("trained_on") or {}


def run_bench(cfg: BenchConfig, out: Path, synth: Path | None = None, model: Path | None = None,
              n_synth: int = 0, job: tuple[int, int] = (0, 1), progress: bool = True,
              strict: bool = False, generator_overrides: list[str] | None = None) -> dict | None:
    """The whole experiment; returns the report, or None while other job shares are missing.

    ``strict``: the synthetic arms of fraction F use a cohort from a generator trained like
    ``model`` on F's real subset only (trained into ``out/generators/fracF``, with
    ``generator_overrides`` such as ``train.steps=600`` applied to its config).
    """
    from cxraug import config as C

    if strict and model is None:
        raise CxraugError("--strict trains a generator per real fraction from a run's recipe: pass "
                          "--model RUN (not --synth)")
    out.mkdir(parents=True, exist_ok=True)
    C.save(cfg, out)
    # A generator run's own splits keep its training images out of the classifier's test split.
    model_ref = model  # what the user named (a shipped model's cohort card keeps its name)
    if model is not None:
        from cxraug.models.zoo import resolve_model

        model = resolve_model(model)
    splits = model / "splits.csv" if model is not None and (model / "splits.csv").is_file() \
        else out / "splits.csv"
    real = load_real(cfg, splits)
    warnings = subset_warnings(cfg, real)
    if progress:
        for w in warnings:
            from rich.console import Console

            Console(stderr=True).print(f"[yellow]warning[/]: {w}", highlight=False)
    needs_synth = any(a in SYNTH_ARMS for a in cfg.arms)
    if needs_synth and synth is None and model is None:
        raise CxraugError("arms with synthetic data need --synth DIR or --model RUN")
    if strict:
        for frac in cfg.real_fracs:  # fail before any training if a setting is wrong
            generator_config(model, frac, cfg, generator_overrides)
    cohorts: dict[float, tuple[ArraySet, dict, Path]] = {}

    def cohort_for(frac: float) -> tuple[ArraySet | None, dict, Path | None]:
        if not needs_synth:
            return None, {}, None
        key = frac if strict else -1.0
        if key not in cohorts:
            folder = synth
            if strict:
                gen = strict_generator(model, frac, cfg, out / "generators" / f"frac{frac:g}",
                                       generator_overrides, progress)
                folder = cohort_for_bench(gen, real.labels, n_synth or len(real.train),
                                          out / "cohorts" / f"frac{frac:g}", progress=progress)
            elif folder is None:
                folder = cohort_for_bench(model_ref, real.labels, n_synth or len(real.train),
                                          out / "cohort", progress=progress)
            arrays, card = load_cohort(folder, real.labels, cfg.image_size, cfg.policy)
            cohorts[key] = (arrays, card, folder)
        return cohorts[key]

    i, n = job
    todo = jobs(cfg)
    for k, (frac, arm, seed) in enumerate(todo):
        if k % n != i or (job_dir(out, frac, arm, seed) / "result.json").is_file():
            continue
        arrays, card, folder = cohort_for(frac) if arm in SYNTH_ARMS else (None, {}, None)
        run_job(frac, arm, seed, real, arrays, cfg, out, progress,
                cohort_key=f"frac{frac:g}" if strict else "cohort",
                generator_real_frac=_trained_on(card).get("real_frac"))
    if not all((job_dir(out, *j) / "result.json").is_file() for j in todo):
        return None
    results = [json.loads((job_dir(out, *j) / "result.json").read_text()) for j in todo]
    summary = summarise(cfg, real, results, out)
    used = sorted({f for f in cfg.real_fracs}) if needs_synth else []
    cards = {f"{f:g}": cohort_for(f) for f in used} if strict else ({"all": cohort_for(-1)} if needs_synth else {})
    report = {"config": C.to_dict(cfg), "versions": versions(), "labels": real.labels,
              "warnings": warnings,
              "test": test_summary(real),
              "synthetic": {"protocol": "strict" if strict else "paper",
                            "cohorts": {k: {"folder": str(v[2]),
                                            "generator_real_frac": _trained_on(v[1]).get("real_frac"),
                                            "generator_train_images": _trained_on(v[1]).get("images"),
                                            "card": v[1]} for k, v in cards.items()}},
              **summary}
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    plot(summary, out / "mauc.png", f"{cfg.data}: {', '.join(real.labels)}")
    return report
