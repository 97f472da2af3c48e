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

import json
from pathlib import Path

import yaml

from cxraug.classify.data import ArraySet
from cxraug.classify.model import check_pretrained
from cxraug.classify.real import load_real_splits
from cxraug.core import config as C
from cxraug.core.errors import CxraugError
from cxraug.experiments.bench.arms import (
    run_job,
    saved_classifier,
    saved_external_scores,
    score_external,
    train_rows_set,
)
from cxraug.experiments.bench.config import (
    GEN_ARMS,
    GEN_DATA,
    SYNTH_ARMS,
    BenchConfig,
    job_dir,
    jobs,
)
from cxraug.experiments.bench.generators import (
    check_unseen_test,
    cohort_for_bench,
    generator_config,
    generator_images,
    generator_source,
    generator_trained_on,
    strict_generator,
)
from cxraug.experiments.bench.inputs import TestSet, load_cohort, load_test_sets, subset_warnings
from cxraug.experiments.bench.report import generator_card, plot, summarise, test_summary, versions
from cxraug.models.zoo import resolve_model


def _check_resumable(out: Path, todo: list[tuple[float, str, int]], tests: list[TestSet]) -> None:
    """Fail before any work if a finished job lacks scores on a test set and has no saved
    classifier to compute them with."""
    for j in todo:
        folder = job_dir(out, *j)
        if (folder / "result.json").is_file() and any(saved_external_scores(folder, t) is None
                                                       for t in tests):
            saved_classifier(folder)


# What may change when a bench is resumed into the same folder: more fractions, arms or seeds
# (new jobs), and how the classifiers run (not what they compute).
RESUMABLE_CHANGES = {"real_fracs", "arms", "seeds", "classifier.device", "classifier.num_workers",
                     "classifier.eval_batch_size", "classifier.in_memory"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_settings(out: Path, cfg: BenchConfig) -> None:
    """Refuse to mix jobs of other settings into a bench folder: a finished job is reused by its
    (fraction, arm, seed) alone, so resuming with, say, another classifier would silently report
    a table of two experiments."""
    path = out / "config.yaml"
    if not path.is_file():
        return
    try:
        saved = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        saved = None
    if not isinstance(saved, dict):
        raise CxraugError(f"{path}: not a bench config (damaged?); pass a new --out, or delete "
                          "the file to resume this folder with the settings given")
    old, new = _flat(saved), _flat(C.to_dict(cfg))
    for key in sorted(set(old) & set(new) - RESUMABLE_CHANGES):
        a, b = old[key], new[key]
        if key == "data" and a != b and Path(str(a)).resolve() == Path(str(b)).resolve():
            continue
        if a != b:
            raise CxraugError(f"{path}: this bench folder was run with {key}={a!r}, now {b!r}; "
                              f"pass --set {key}={a} to resume it, or a new --out for the new settings")


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
    if strict and model is None:
        raise CxraugError("--strict trains a generator per real fraction from a run's recipe: pass "
                          "--model RUN (not --synth)")
    if GEN_DATA in cfg.arms and model is None:
        raise CxraugError("arm gen-data->real pre-trains on the generator's own training images: "
                          "pass --model RUN (a --synth cohort does not say which images they were)")
    init = check_pretrained(cfg.classifier.pretrained, cfg.classifier.arch, cfg.image_size)
    check_same_settings(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    C.save(cfg, out)
    # A generator run's own splits keep its training images out of the classifier's test split.
    model_ref = model  # what the user named (a shipped model's cohort card keeps its name)
    if model is not None:
        model = resolve_model(model)
    splits = model / "splits.csv" if model is not None and (model / "splits.csv").is_file() \
        else out / "splits.csv"
    real = load_real_splits(cfg, splits, cfg.image_size, cfg.split_seed)
    if model is not None and any(a in GEN_ARMS for a in cfg.arms):
        check_unseen_test(real, model, str(model_ref))
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
        gen_set, gen = gen_data_for(frac) if arm == GEN_DATA else (None, generator_trained_on(card))
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
              "generator": generator_card(results, strict, model_ref),
              "test": test_summary(real),
              "test_sets": {t.name: t.card() for t in tests},
              "synthetic": {"protocol": "strict" if strict else "paper",
                            "cohorts": {k: {"folder": str(v[2]),
                                            "generator_real_frac": generator_trained_on(v[1]).get("real_frac"),
                                            "generator_train_images": generator_trained_on(v[1]).get("images"),
                                            "card": v[1]} for k, v in cards.items()}},
              **summary}
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    plot(summary, out / "mauc.png", f"{cfg.data}: {', '.join(real.labels)}")
    return report
