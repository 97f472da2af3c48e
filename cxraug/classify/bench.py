"""The limited-data experiment: does synthetic data help a classifier trained on little real data?

For each real fraction (nested, patient-level subsets of the training split), each arm and each
seed, one classifier is trained and scored on the real test split:

* ``real``        the real subset only;
* ``real+dup``    the real subset repeated to the size of ``real+synth`` (the control that
                  synthetic data must beat: more rows per epoch alone can help);
* ``real+synth``  the real subset plus ``synth_ratio`` x as many synthetic images;
* ``synth->real`` pre-trained on the whole synthetic cohort, fine-tuned on the real subset;
* ``gen-data->real`` pre-trained on the generator's own real training images (with their
                  labels), fine-tuned on the real subset, on the same schedule as ``synth->real``:
                  its control (is the synthetic data worth more, or less, than the real images
                  the generator was made from?);
* ``synth``       the synthetic cohort only.

Generator protocols: the paper's (one generator, trained on the whole training split, for every
real fraction) and, with ``strict``, a generator per fraction trained like the given one but only
on that fraction's real subset (the classifier's own images), so that no real image outside the
subset reaches the classifier through the synthetic data. Each job records the
``generator_real_frac`` and ``generator_real_images`` of the generator involved. The images
``gen-data->real`` pre-trains on are those the generator was trained on: under the paper's
protocol the generator run's training split (its ``splits.csv`` is the bench's, or its exported
``reference.npz`` lists them), under ``strict`` the real subset of the generator's fraction.
Per real fraction, the transfer efficiency ``(synth->real - real) / (gen-data->real - real)``
says how much of what the generator's training images give a classifier its synthetic images
give; it is computed on the same patient-bootstrap resamples as the paired differences and is
undefined (None, with the reason) when the denominator's interval includes 0.

Model selection and early stopping use the real validation split only; the test split is used
once per job. Each job writes its test scores, so an interrupted bench resumes, and ``--job i/N``
runs a disjoint share of the jobs for any scheduler. Statistics: per-label AUC and mAUC with
95% patient-bootstrap intervals, and every arm's paired difference against ``real`` on the
same seed (same resamples), then mean and spread across seeds.

External test sets (``test_data``): every classifier is also scored on other datasets (any
layout the adapters read; all their images), on the labels they have both classes of (the
others are skipped and listed). Each job saves its classifier (``model/``) and its scores per
external set (``external/<name>.npz`` with the image ids), so a test set added later is scored
from the saved classifiers without retraining.
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

from cxraug.classify.train import ArraySet, ClassifierConfig, RealDataConfig, train_classifier
from cxraug.core.config import ConfigError
from cxraug.core.errors import CxraugError, DataError
from cxraug.data import labels as L

ARMS = ("real", "real+dup", "real+synth", "synth->real", "gen-data->real", "synth")
SYNTH_ARMS = ("real+synth", "synth->real", "synth")
GEN_DATA = "gen-data->real"
GEN_ARMS = (*SYNTH_ARMS, GEN_DATA)  # arms whose result depends on a generator


@dataclass
class BenchConfig(RealDataConfig):
    """What to compare: the real data (:class:`RealDataConfig`), fractions, arms and seeds."""

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
        if not self.real_fracs:
            raise ConfigError("real_fracs is empty: give one or more fractions in (0, 1], e.g. [0.01, 1.0]")
        if not self.arms:
            raise ConfigError(f"arms is empty: choose one or more of {', '.join(ARMS)}")
        for f in self.real_fracs:
            if not (isinstance(f, (int, float)) and 0 < f <= 1):  # nan fails here too
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
    from cxraug.cohorts.store import read_manifest
    from cxraug.data.transforms import load_grayscale, resize_square

    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{folder}: no manifest.csv; pass a cohort folder written by cxraug synth")
    df = read_manifest(manifest)
    missing = [c for c in ("file", *labels) if c not in df.columns]
    if missing:
        raise DataError(f"{manifest}: missing column(s) {', '.join(missing)}")
    if "accepted" in df.columns:
        df = df[df["accepted"]]
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
    """The pre-training of ``synth->real`` (on the synthetic cohort) or ``gen-data->real`` (on
    the generator's real images), shared by every fraction of a seed and generator (it does not
    depend on the real subset), saved once to ``folder``."""
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


@dataclass
class TestSet:
    """An external test set: every image of another dataset, targets in the bench's label
    ``columns`` (NaN where unlabelled); ``labels`` are those it has both classes of."""

    name: str
    source: str
    data: ArraySet
    ids: np.ndarray
    columns: list[str]
    labels: list[str]
    skipped: dict[str, str]

    def card(self) -> dict:
        y = self.data.targets
        return {"data": self.source, "n_images": len(self.data),
                "n_patients": int(len(set(self.data.patient_ids))), "labels": self.labels,
                "skipped": self.skipped,
                "positives": {o: int((y[:, j] == 1).sum()) for j, o in enumerate(self.columns)
                              if o in self.labels}}


def test_set_names(specs: list[str]) -> list[str]:
    """A short, file-safe, distinct name per ``--test-data`` value (``sample:nih14`` -> nih14)."""
    import re

    names: list[str] = []
    for spec in specs:
        base = re.sub(r"[^\w.-]+", "_", Path(str(spec).split(":", 1)[-1].rstrip("/")).name) or "test"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def load_test_set(spec: str, name: str, cfg: BenchConfig, labels: list[str]) -> TestSet:
    """All images of dataset ``spec`` with targets for ``labels``; labels without both classes
    there are skipped (with the reason) rather than scored."""
    from cxraug.data.adapters import load_dataset, resolve_data
    from cxraug.data.cache import cached_images

    root = resolve_data(spec)
    if Path(root).resolve() == Path(resolve_data(cfg.data)).resolve():
        raise CxraugError(f"--test-data {spec}: is the bench's own --data (its test split is "
                          "already scored); pass another dataset")
    images, ds, _ = cached_images(load_dataset(root), cfg.image_size, progress=False)
    y = L.apply_policy(ds.labels, cfg.policy)[:, [L.index(x) for x in labels]]
    evaluated, skipped = [], {}
    for j, label in enumerate(labels):
        pos, neg = int((y[:, j] == 1).sum()), int((y[:, j] == 0).sum())
        if pos and neg:
            evaluated.append(label)
        else:
            skipped[label] = "not labelled there" if not pos + neg else \
                f"{pos} positive and {neg} negative images there (needs both)"
    if not evaluated:
        raise DataError(f"--test-data {spec}: none of the bench labels ({', '.join(labels)}) has "
                        "both positive and negative images there; nothing to score")
    data = ArraySet(images, y, ds.patient_ids)  # the cache memmap: read one batch at a time
    return TestSet(name, str(spec), data, np.asarray(ds.ids, dtype=str), list(labels), evaluated,
                   skipped)


def load_test_sets(specs: list[str] | None, cfg: BenchConfig, labels: list[str]) -> list[TestSet]:
    specs = list(specs or [])
    return [load_test_set(s, n, cfg, labels) for s, n in zip(specs, test_set_names(specs))]


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


def _saved_classifier(folder: Path) -> Path:
    from cxraug.core.artifacts import CONFIG_NAME

    if not (folder / "model" / CONFIG_NAME).is_file():
        raise CxraugError(f"{folder}: this job saved no classifier (an older cxraug ran it), so "
                          "--test-data cannot score it; delete that job folder to retrain it")
    return folder / "model"


def score_external(folder: Path, tests: list[TestSet], cfg: BenchConfig, model=None) -> None:
    """Save the job's scores on every external set it lacks; without ``model`` its saved
    classifier is loaded (a finished job is never retrained for a new test set)."""
    from cxraug.classify.model import Classifier

    todo = [t for t in tests if saved_external_scores(folder, t) is None]
    if not todo:
        return
    if model is None:
        model = Classifier.from_pretrained(_saved_classifier(folder)).to(cfg.classifier.device)
    (folder / "external").mkdir(parents=True, exist_ok=True)
    for t in todo:
        scores = model.predict_proba(t.data.images, cfg.classifier.eval_batch_size)
        tmp = _external_path(folder, t).with_suffix(".tmp")
        with tmp.open("wb") as f:
            np.savez(f, scores=scores, ids=t.ids)
        tmp.replace(_external_path(folder, t))


def real_subset_set(real: RealData, frac: float, cfg: BenchConfig) -> ArraySet:
    """The real training subset ``frac`` as an ArraySet (images, policy-applied targets)."""
    from cxraug.data.splits import real_subset

    sub = real_subset(real.train, frac, seed=cfg.subset_seed)
    rows = np.flatnonzero(np.isin(real.train.ids, sub.ids))
    cols = [L.index(x) for x in real.labels]
    return ArraySet(real.train_images[rows], L.apply_policy(sub.labels, cfg.policy)[:, cols],
                    sub.patient_ids)


def train_rows_set(real: RealData, rows: np.ndarray, policy: str) -> ArraySet:
    """Rows of the real training split as an ArraySet (the generator's own images)."""
    cols = [L.index(x) for x in real.labels]
    y = L.apply_policy(real.train.labels[rows], policy)[:, cols]
    return ArraySet(np.asarray(real.train_images[rows]), y, real.train.patient_ids[rows])


def _denoiser_meta(folder: Path) -> dict:
    p = folder / "denoiser" / "config.json"
    return json.loads(p.read_text()).get("meta", {}) if p.is_file() else {}


def generator_images(real: RealData, folder: Path, gen_cfg: Any) -> np.ndarray:
    """Rows of ``real.train`` the generator in ``folder`` (recipe ``gen_cfg``) is trained on.

    An exported model lists them (``reference.npz``); for a run folder they are the same
    function of the training split as in its training (real fraction and subset seed, then its
    LNFS filter), which holds because the bench reuses the run's ``splits.csv``. A trained
    generator's recorded image count must match, or the bench's data is not the generator's.
    """
    from cxraug.data.reference import REFERENCE_NAME
    from cxraug.data.splits import real_subset

    ids = np.asarray(real.train.ids, dtype=str)
    if (folder / REFERENCE_NAME).is_file():
        with np.load(folder / REFERENCE_NAME, allow_pickle=False) as z:
            seen = z["train_ids"].astype(str)
        expected: int | None = len(seen)
    else:
        train = real.train
        if gen_cfg.data.real_frac < 1:
            train = real_subset(train, gen_cfg.data.real_frac, seed=gen_cfg.data.subset_seed)
        if gen_cfg.data.filter:
            from cxraug.diffusion.prepare import apply_filter

            train = apply_filter(train, Path(gen_cfg.data.filter))
        seen, expected = np.asarray(train.ids, dtype=str), _denoiser_meta(folder).get("n_train_images")
    rows = np.flatnonzero(np.isin(ids, seen))
    if expected is not None and len(rows) != expected:
        raise DataError(f"{folder}: the generator was trained on {expected} real images but "
                        f"{len(rows)} of them are in this bench's training split; run the bench "
                        "on the generator's own data (--data) for arm gen-data->real")
    if len(rows) < 2:
        raise DataError(f"{folder}: {len(rows)} of the generator's training images found in this "
                        "bench's training split; need at least 2 for arm gen-data->real")
    return rows


def run_job(frac: float, arm: str, seed: int, real: RealData, synth: ArraySet | None,
            cfg: BenchConfig, out: Path, progress: bool = True, cohort_key: str = "cohort",
            generator_real_frac: float | None = None, *, gen_data: ArraySet | None = None,
            generator_real_images: int | None = None, tests: list[TestSet] | None = None,
            init: str | None = None) -> dict:
    """Train one classifier, save it, score the test split and the external test sets. A job
    already done only scores the external sets it lacks, with its saved classifier."""
    from cxraug.classify.model import init_name

    folder = job_dir(out, frac, arm, seed)
    if (folder / "result.json").is_file():
        score_external(folder, tests or [], cfg)
        return json.loads((folder / "result.json").read_text())
    real_set = real_subset_set(real, frac, cfg)
    train_set, pre = arm_data(arm, real_set, synth, cfg.synth_ratio, seed, gen_data)
    ccfg = dataclasses.replace(cfg.classifier, seed=seed)
    start = None
    if pre is not None:
        key = cohort_key if arm != GEN_DATA else (
            f"gen-data_frac{generator_real_frac:g}" if generator_real_frac is not None else "gen-data")
        start = pretrained_on_synth(pre, real, ccfg, out / "pretrain" / f"{key}_seed{seed}", progress)
    model, history = train_classifier(train_set, real.val, ccfg, None, progress, init_from=start,
                                      label_names=real.labels)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder / "model")  # so test sets added later need no retraining
    np.save(folder / "test_scores.npy", model.predict_proba(real.test.images))
    score_external(folder, tests or [], cfg, model)
    gen = arm in GEN_ARMS
    result = {"frac": frac, "arm": arm, "seed": seed, "n_real": len(real_set),
              "n_real_patients": int(len(set(real_set.patient_ids))), "n_train": len(train_set),
              "n_synth": int(len(train_set) - len(real_set)) if arm == "real+synth" else
              (len(synth) if arm in ("synth->real", "synth") else 0),
              "n_pretrain": len(pre) if pre is not None else 0,
              "best_val_mauc": history.get("best_val_mauc"), "best_step": history.get("best_step"),
              "generator_real_frac": generator_real_frac if gen else None,
              "generator_real_images": generator_real_images if gen else None,
              "init": init or init_name(cfg.classifier.pretrained)}
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _external_stats(cfg: BenchConfig, r: dict, out: Path, tests: list[TestSet]) -> dict:
    """mAUC with a patient-bootstrap CI per external test set, for one job."""
    from cxraug.metrics.bootstrap import bootstrap_auc

    folder, stats = job_dir(out, r["frac"], r["arm"], r["seed"]), {}
    for t in tests:
        s = saved_external_scores(folder, t)
        if s is None:
            raise CxraugError(f"{folder}: no scores on test set {t.name}; rerun the bench to add them")
        b = bootstrap_auc(t.data.targets, s, t.data.patient_ids, cfg.n_boot, seed=r["seed"],
                          label_names=t.columns)
        stats[t.name] = {"mauc": b["mauc"], "ci": list(b["ci"]),
                         "per_label": {k: (v["auc"] if v else None) for k, v in b["per_label"].items()}}
    return stats


def _transfer(cfg: BenchConfig, real: RealData, out: Path, fracs: list[float],
              results: list[dict]) -> list[dict]:
    """Per real fraction: ``(synth->real - real) / (gen-data->real - real)`` per seed on the
    paired differences' resamples, and the cell value from the seeds' mean differences."""
    from cxraug.metrics.bootstrap import paired_ratio

    have = {(r["frac"], r["arm"], r["seed"]) for r in results}
    test, cells = real.test, []
    for frac in fracs:
        seeds = sorted({r["seed"] for r in results if r["frac"] == frac})
        both = [s for s in seeds if {(frac, "synth->real", s), (frac, GEN_DATA, s)} <= have]
        cell: dict[str, Any] = {"frac": frac, "value": None, "ci": None, "per_seed": []}
        if not both or len(both) < len(seeds):
            cell["reason"] = "needs arms synth->real and gen-data->real (--arms)"
            cells.append(cell)
            continue
        for seed in both:
            s = {a: np.load(job_dir(out, frac, a, seed) / "test_scores.npy")
                 for a in ("synth->real", GEN_DATA, "real")}
            q = paired_ratio(test.targets, s["synth->real"], s[GEN_DATA], s["real"],
                             test.patient_ids, cfg.n_boot, seed=seed, label_names=real.labels)
            cell["per_seed"].append({"seed": seed, "value": q["ratio"],
                                     "ci": list(q["ci"]) if q["ci"] else None,
                                     "numerator": q["numerator"], "numerator_ci": list(q["numerator_ci"]),
                                     "denominator": q["denominator"],
                                     "denominator_ci": list(q["denominator_ci"]), "reason": q["reason"]})
        bad = next((p for p in cell["per_seed"] if p["value"] is None), None)
        if bad is not None:
            cell["reason"] = f"seed {bad['seed']}: gen-data->real - real: {bad['reason']}"
        else:
            ps = cell["per_seed"]
            cell["value"] = float(np.mean([p["numerator"] for p in ps]) / np.mean([p["denominator"] for p in ps]))
            cell["ci"] = [float(np.mean([p["ci"][0] for p in ps])), float(np.mean([p["ci"][1] for p in ps]))]
            cell["reason"] = None
        cells.append(cell)
    return cells


def summarise(cfg: BenchConfig, real: RealData, results: list[dict], out: Path,
              tests: list[TestSet] | None = None) -> dict:
    """Bootstrap CIs per job, paired differences vs ``real``, mean/spread across seeds, the
    transfer efficiency per fraction and the external test sets' mAUC."""
    from cxraug.metrics.bootstrap import bootstrap_auc, paired_difference

    test, tests = real.test, tests or []
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
        if tests:
            rec["external"] = _external_stats(cfg, r, out, tests)
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
        if tests:
            cell["external"] = {t.name: _mean_stats([e[t.name] for e in grp["external"]]) for t in tests}
        cells[f"{frac:g}|{arm}"] = cell
    return {"jobs": rows, "cells": list(cells.values()),
            "transfer_efficiency": _transfer(cfg, real, out, list(cfg.real_fracs), results)}


def _mean_stats(stats: list[dict]) -> dict:
    """Mean/spread of one test set's mAUC across seeds, and the mean per-seed CI."""
    m = np.array([s["mauc"] if s["mauc"] is not None else np.nan for s in stats], float)
    return {"mauc_mean": float(np.nanmean(m)) if np.isfinite(m).any() else None,
            "mauc_sd": float(np.nanstd(m, ddof=1)) if np.isfinite(m).sum() > 1 else 0.0,
            "ci_mean": [float(np.mean([s["ci"][0] for s in stats])), float(np.mean([s["ci"][1] for s in stats]))]}


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
    from cxraug.core import config as C
    from cxraug.diffusion.config import DiffCXRConfig

    if not (model / "config.yaml").is_file():
        raise CxraugError(f"{model}: no config.yaml; --strict needs a run folder written by cxraug train")
    sets = [f"data.real_frac={frac}", f"data.split_seed={cfg.split_seed}",
            f"data.subset_seed={cfg.subset_seed}", *(overrides or [])]
    return C.load(DiffCXRConfig, model / "config.yaml", sets)


def _strict_is_model(model: Path, frac: float, cfg: BenchConfig,
                     overrides: list[str] | None = None) -> bool:
    """Whether ``model`` already is the strict generator of fraction ``frac``."""
    from cxraug.core import config as C
    from cxraug.diffusion.config import DiffCXRConfig

    own = C.load(DiffCXRConfig, model / "config.yaml")
    return not overrides and own.data.real_frac == frac and own.data.subset_seed == cfg.subset_seed


def generator_source(model: Path, frac: float | None, cfg: BenchConfig, out: Path,
                     overrides: list[str] | None = None) -> tuple[Path, Any]:
    """``(folder, recipe)`` of the generator whose training images ``gen-data->real`` uses: the
    given run under the paper's protocol (``frac`` None), else the strict generator of ``frac``
    (its recipe is known before it is trained)."""
    from cxraug.core import config as C
    from cxraug.data.reference import REFERENCE_NAME
    from cxraug.diffusion.config import DiffCXRConfig

    if not (model / "config.yaml").is_file():
        raise CxraugError(f"{model}: no config.yaml; arm gen-data->real needs a generator run "
                          "folder written by cxraug train, or an exported model")
    if frac is None or _strict_is_model(model, frac, cfg, overrides):
        if not any((model / n).is_file() for n in ("splits.csv", REFERENCE_NAME)):
            raise CxraugError(f"{model}: has neither splits.csv nor {REFERENCE_NAME}, so which "
                              "real images the generator saw is unknown; arm gen-data->real "
                              "needs a run folder from cxraug train or an exported model")
        return model, C.load(DiffCXRConfig, model / "config.yaml")
    return out / "generators" / f"frac{frac:g}", generator_config(model, frac, cfg, overrides)


def strict_generator(model: Path, frac: float, cfg: BenchConfig, out: Path,
                     overrides: list[str] | None = None, progress: bool = True) -> Path:
    """A generator trained like ``model`` (its recipe, same splits) on the real subset ``frac``
    only; ``model`` itself when it already is one. Trained once into ``out`` and resumable."""
    import shutil

    from cxraug.diffusion.run import train

    gen_cfg = generator_config(model, frac, cfg, overrides)
    if _strict_is_model(model, frac, cfg, overrides):
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


def _check_resumable(out: Path, todo: list[tuple[float, str, int]], tests: list[TestSet]) -> None:
    """Fail before any work if a finished job lacks scores on a test set and has no saved
    classifier to compute them with."""
    for j in todo:
        folder = job_dir(out, *j)
        if (folder / "result.json").is_file() and any(saved_external_scores(folder, t) is None
                                                       for t in tests):
            _saved_classifier(folder)


def _generator_card(results: list[dict], strict: bool, model_ref: Any) -> dict:
    """Protocol and, per generator (one per fraction under ``strict``), its real fraction and
    image count, from the jobs that used one (``gen-data->real``'s count first: it is exact)."""
    fractions: dict[str, dict] = {}
    for r in sorted(results, key=lambda r: r["arm"] != GEN_DATA):
        if r["arm"] not in GEN_ARMS:
            continue
        rec = fractions.setdefault(f"{r['frac']:g}" if strict else "all",
                                   {"real_frac": None, "images": None})
        for k, v in (("real_frac", r.get("generator_real_frac")), ("images", r.get("generator_real_images"))):
            rec[k] = rec[k] if rec[k] is not None else v
    return {"protocol": "strict" if strict else "paper",
            "model": str(model_ref) if model_ref is not None else None, "generators": fractions}


def run_bench(cfg: BenchConfig, out: Path, synth: Path | None = None, model: Path | None = None,
              n_synth: int = 0, job: tuple[int, int] = (0, 1), progress: bool = True,
              strict: bool = False, generator_overrides: list[str] | None = None,
              test_data: list[str] | None = None) -> dict | None:
    """The whole experiment; returns the report, or None while other job shares are missing.

    ``strict``: the synthetic arms of fraction F use a cohort from a generator trained like
    ``model`` on F's real subset only (trained into ``out/generators/fracF``, with
    ``generator_overrides`` such as ``train.steps=600`` applied to its config).
    ``test_data``: other datasets every classifier is also scored on (see the module doc).
    """
    from cxraug.classify.model import check_pretrained
    from cxraug.core import config as C

    if strict and model is None:
        raise CxraugError("--strict trains a generator per real fraction from a run's recipe: pass "
                          "--model RUN (not --synth)")
    if GEN_DATA in cfg.arms and model is None:
        raise CxraugError("arm gen-data->real pre-trains on the generator's own training images: "
                          "pass --model RUN (a --synth cohort does not say which images they were)")
    init = check_pretrained(cfg.classifier.pretrained, cfg.classifier.arch, cfg.image_size)
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
    tests = load_test_sets(test_data, cfg, real.labels)
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
    if GEN_DATA in cfg.arms and not strict:
        generator_source(model, None, cfg, out, generator_overrides)
    cohorts: dict[float, tuple[ArraySet, dict, Path]] = {}
    gen_sets: dict[float, tuple[ArraySet, dict]] = {}

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

    def gen_data_for(frac: float) -> tuple[ArraySet, dict]:
        """The generator's real training images (shared by the fractions of one generator)."""
        key = frac if strict else -1.0
        if key not in gen_sets:
            folder, gen_cfg = generator_source(model, frac if strict else None, cfg, out,
                                               generator_overrides)
            rows = generator_images(real, folder, gen_cfg)
            gen_sets[key] = (train_rows_set(real, rows, cfg.policy),
                             {"real_frac": gen_cfg.data.real_frac, "images": len(rows)})
        return gen_sets[key]

    i, n = job
    todo = jobs(cfg)
    _check_resumable(out, todo, tests)
    for k, (frac, arm, seed) in enumerate(todo):
        if k % n != i:
            continue
        if (job_dir(out, frac, arm, seed) / "result.json").is_file():
            score_external(job_dir(out, frac, arm, seed), tests, cfg)
            continue
        arrays, card, _ = cohort_for(frac) if arm in SYNTH_ARMS else (None, {}, None)
        gen_set, gen = gen_data_for(frac) if arm == GEN_DATA else (None, _trained_on(card))
        run_job(frac, arm, seed, real, arrays, cfg, out, progress,
                cohort_key=f"frac{frac:g}" if strict else "cohort",
                generator_real_frac=gen.get("real_frac"), gen_data=gen_set,
                generator_real_images=gen.get("images"), tests=tests, init=init)
    if not all((job_dir(out, *j) / "result.json").is_file() for j in todo):
        return None
    for j in todo:  # jobs of other shares, finished before a test set was added
        score_external(job_dir(out, *j), tests, cfg)
    results = [json.loads((job_dir(out, *j) / "result.json").read_text()) for j in todo]
    summary = summarise(cfg, real, results, out, tests)
    used = sorted({f for f in cfg.real_fracs}) if needs_synth else []
    cards = {f"{f:g}": cohort_for(f) for f in used} if strict else ({"all": cohort_for(-1)} if needs_synth else {})
    report = {"config": C.to_dict(cfg), "versions": versions(), "labels": real.labels,
              "warnings": warnings,
              "protocol": "strict" if strict else "paper",
              "init": init,
              "generator": _generator_card(results, strict, model_ref),
              "test": test_summary(real),
              "test_sets": {t.name: t.card() for t in tests},
              "synthetic": {"protocol": "strict" if strict else "paper",
                            "cohorts": {k: {"folder": str(v[2]),
                                            "generator_real_frac": _trained_on(v[1]).get("real_frac"),
                                            "generator_train_images": _trained_on(v[1]).get("images"),
                                            "card": v[1]} for k, v in cards.items()}},
              **summary}
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    plot(summary, out / "mauc.png", f"{cfg.data}: {', '.join(real.labels)}")
    return report
