"""The limited-data experiment: does synthetic data help a classifier trained on little real data?

For each real fraction (patient-level subsets of the training split), each of ``subsets``
independent draws of it, each arm and each seed, one classifier is trained and scored on the real
test split:

* ``real``        the real subset only;
* ``real+dup``    the real subset plus as many duplicated real rows as ``real+synth`` adds
                  synthetic ones: the control every synthetic arm must beat;
* ``real+synth``  the real subset plus ``synth_ratio`` x as many synthetic images;
* ``synth->real`` pre-trained on the synthetic cohort, fine-tuned on the real subset;
* ``shuffled-synth->real`` the same, with the cohort's labels permuted across its images: how
                  much of a pre-training gain comes from chest-X-ray-like pixels alone;
* ``gen-data->real`` pre-trained on the generator's own real training images, fine-tuned on the
                  real subset: is the synthetic data worth more, or less, than its source?
* ``synth``       the synthetic cohort only.

Equal compute: every job trains exactly ``cfg.steps`` optimiser steps of the same batch size;
pre-training arms split them (``cfg.split_steps()``: pre-training, then fine-tuning). No
selection: every classifier is the final weights of its fixed schedule, so no validation image
(none belongs to a limited-data user) chooses a model or an epoch. Each job records its
``optimizer_steps``, ``images_seen`` and ``selection``.

Generator protocols: the paper's (one generator, trained on the whole training split, for every
real fraction) and, with ``strict``, a generator per fraction and draw trained with the given
run's recipe, its steps scaled to the subset (:func:`~cxraug.experiments.bench.generators.
scaled_steps`), on the bench's own data (``--data``) and that draw's real subset only, so no real
image outside the subset reaches the classifier through the synthetic data.

Statistics (:mod:`cxraug.experiments.bench.report`): a hierarchical paired bootstrap over subset
draws, seeds and test patients for every arm and difference; the primary comparison declared in
the config before the run; the other comparisons against ``real+dup`` as a Holm-adjusted family.

The test split is used once per job. Each job writes its test scores, so an interrupted bench
resumes, and ``--job i/N`` runs a disjoint share of the jobs for any scheduler. External test sets
(``test_data``): every classifier is also scored on other datasets (any layout the adapters
read; all their images), on the labels they have both classes of; each job saves its classifier
so a test set added later is scored without retraining.
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
    real_subset_set,
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


def _check_resumable(out: Path, todo: list[tuple], tests: list[TestSet]) -> None:
    """Fail before any work if a finished job lacks scores on a test set and has no saved
    classifier to compute them with."""
    for j in todo:
        folder = job_dir(out, *j)
        if (folder / "result.json").is_file() and any(saved_external_scores(folder, t) is None
                                                       for t in tests):
            saved_classifier(folder)


# What may change when a bench is resumed into the same folder: more fractions, arms or seeds
# (new jobs), and how the classifiers run (not what they compute).
RESUMABLE_CHANGES = {"real_fracs", "arms", "seeds", "subsets", "primary", "classifier.device", "classifier.num_workers",
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
    (fraction, draw, arm, seed) alone, so resuming with, say, another classifier would silently report
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
    ``model`` on each draw of F's real subset only (trained into ``out/generators/fracF_drawD``, with
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
    def n_subset(frac: float, draw: int) -> int:
        return len(real_subset_set(real, frac, cfg, draw))

    if strict:
        for frac in cfg.real_fracs:  # fail before any training if a setting is wrong
            generator_config(model, frac, cfg, generator_overrides, 0, n_subset(frac, 0))
    if GEN_DATA in cfg.arms and not strict:
        generator_source(model, None, cfg, out, generator_overrides)
    cohorts: dict[tuple, tuple[ArraySet, dict, Path]] = {}
    gen_sets: dict[tuple, tuple[ArraySet, dict]] = {}

    def cohort_for(frac: float, draw: int) -> tuple[ArraySet | None, dict, Path | None]:
        if not needs_synth:
            return None, {}, None
        key = (frac, draw) if strict else (-1.0, 0)
        if key not in cohorts:
            folder = synth
            if strict:
                name = f"frac{frac:g}_draw{draw}"
                gen = strict_generator(model, frac, cfg, out / "generators" / name,
                                       generator_overrides, progress, draw, n_subset(frac, draw),
                                       splits=splits)
                folder = cohort_for_bench(gen, real.labels, n_synth or len(real.train),
                                          out / "cohorts" / name, progress=progress)
            elif folder is None:
                folder = cohort_for_bench(model_ref, real.labels, n_synth or len(real.train),
                                          out / "cohort", progress=progress)
            arrays, card = load_cohort(folder, real.labels, cfg.image_size, cfg.policy)
            cohorts[key] = (arrays, card, folder)
        return cohorts[key]

    def gen_data_for(frac: float, draw: int) -> tuple[ArraySet, dict]:
        """The generator's real training images (shared by the fractions of one generator)."""
        key = (frac, draw) if strict else (-1.0, 0)
        if key not in gen_sets:
            folder, gen_cfg = generator_source(model, frac if strict else None, cfg, out,
                                               generator_overrides, draw,
                                               n_subset(frac, draw) if strict else None)
            rows = generator_images(real, folder, gen_cfg)
            gen_sets[key] = (train_rows_set(real, rows, cfg.policy),
                             {"real_frac": gen_cfg.data.real_frac, "images": len(rows)})
        return gen_sets[key]

    i, n = job
    todo = jobs(cfg)
    _check_resumable(out, todo, tests)
    for k, (frac, draw, arm, seed) in enumerate(todo):
        if k % n != i:
            continue
        folder = job_dir(out, frac, draw, arm, seed)
        if (folder / "result.json").is_file():
            score_external(folder, tests, cfg)
            continue
        arrays, card, _ = cohort_for(frac, draw) if arm in SYNTH_ARMS else (None, {}, None)
        gen_set, gen = (gen_data_for(frac, draw) if arm == GEN_DATA
                        else (None, generator_trained_on(card)))
        run_job(frac, draw, arm, seed, real, arrays, cfg, out, progress,
                cohort_key=f"frac{frac:g}_draw{draw}" if strict else "cohort",
                generator_real_frac=gen.get("real_frac"), gen_data=gen_set,
                generator_real_images=gen.get("images"), tests=tests, init=init)
    if not all((job_dir(out, *j) / "result.json").is_file() for j in todo):
        return None
    for j in todo:  # jobs of other shares, finished before a test set was added
        score_external(job_dir(out, *j), tests, cfg)
    results = [json.loads((job_dir(out, *j) / "result.json").read_text()) for j in todo]
    summary = summarise(cfg, real, results, out, tests)
    if strict and needs_synth:
        cards = {f"{f:g}_draw{d}": cohort_for(f, d) for f in cfg.real_fracs for d in range(cfg.subsets)}
    else:
        cards = {"all": cohort_for(-1.0, 0)} if needs_synth else {}
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
