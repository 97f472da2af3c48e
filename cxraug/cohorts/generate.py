"""``cxraug synth``: a label-balanced synthetic cohort, gated, resumable and with provenance.

    cfg = SynthConfig(labels=["pneumonia"], n=5000)
    synthesize(cfg, "runs/kermany-cpu", "cohorts/pneumonia")

An output folder holds::

    synth.json            the arguments that define the cohort (compared when resuming)
    plan.csv              one row per planned image (written before any image)
    topups.csv            --until-accepted: extra rows planned for targets the gates rejected
    gates.json            calibrated gate thresholds
    images/000123.png     accepted images (uint8 grayscale PNG, or DICOM with --format dicom)
    rejected/000124.png   images a gate rejected (for auditing the gates; do not share them)
    parts/shard-0-of-2.jsonl   manifest rows, appended per batch by each process
    manifest.csv          all rows sorted by index, assembled when every planned image is done
    cohort.json, README.md, grids/   the dataset card and a sample grid per target

One process writes a folder (or one shard of it) at a time: a lock file beside the folder
(``cohorts/.pneumonia-300.lock``, see :mod:`cxraug.core.locks`) stops a second one at once.

Every image has its own seed (``plan.image_seed``), so its pixels do not depend on the batch
size or on how the cohort is split across processes (``shard=(i, N)`` takes the indices with
``index % N == i``). An image file is written to a temporary name and renamed; its manifest row
is appended (and fsynced) only after that, so a killed run resumed with the same command
regenerates exactly the images without a row and nothing else.

Shards: start N processes with ``--shard i/N`` and otherwise identical arguments. Each appends
to its own part file; whichever finishes last finds every planned row present and assembles
``manifest.csv`` and the card (rerunning any shard afterwards does it again, idempotently).
``--overwrite`` is refused with shards (each shard would delete the others' work), and so is
``--until-accepted``: its top-up rounds depend on every image's gate result, so one process
runs them (for a sharded cohort, ask for a larger ``--n`` instead).

This module runs the loop; the pieces live by concern: the arguments and ``synth.json``
(:mod:`~cxraug.cohorts.config`), the loaded generator (:mod:`~cxraug.cohorts.generator`), the plan
(:mod:`~cxraug.cohorts.plan`), the gates (:mod:`~cxraug.cohorts.gates`), the output folder
(:mod:`~cxraug.cohorts.store`) and the dataset card (:mod:`~cxraug.cohorts.card`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxraug.cohorts.card import write_card
from cxraug.cohorts.config import SynthConfig, cohort_settings
from cxraug.cohorts.gates import Gates, build_gates
from cxraug.cohorts.generator import Autocast, LoadedGenerator
from cxraug.cohorts.plan import build_plan
from cxraug.cohorts.store import (
    CohortDir,
    clean_orphans,
    csv_text,
    fsync_dir,
    open_output,
    read_rows,
    write_atomic,
    write_image,
)
from cxraug.core.errors import CxraugError, writing
from cxraug.core.locks import folder_lock
from cxraug.core.precision import default_device
from cxraug.core.progress import job_progress
from cxraug.data import labels as L

OBS = list(L.OBSERVATIONS)


#: The most images one cohort may plan. The plan is held in memory (about 1 KB an image) and
#: written as one plan.csv and manifest.csv; a larger set is several cohorts (another --seed).
MAX_IMAGES = 1_000_000
MAX_SEED = 2**63 - 1


def check_config(cfg: SynthConfig) -> None:
    """Every argument of a cohort, before any model, data or file is touched (also for
    ``--dry-run``): one line naming the option."""
    cfg.validate()
    if cfg.n > MAX_IMAGES:
        raise CxraugError(f"--n {cfg.n}: at most {MAX_IMAGES:,} images per cohort (the plan is "
                          "held in memory); make a larger set as several cohorts with other --seed")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise CxraugError(f"--seed {cfg.seed}: must be between 0 and {MAX_SEED}")
    if not math.isfinite(cfg.max_attempts):
        raise CxraugError(f"max_attempts {cfg.max_attempts}: must be a finite number >= 1")
    if cfg.until_accepted and cfg.max_attempts * cfg.n > MAX_IMAGES:
        raise CxraugError(f"max_attempts {cfg.max_attempts} x --n {cfg.n}: --until-accepted may "
                          f"plan at most {MAX_IMAGES:,} images; lower max_attempts or --n")


def preview(cfg: SynthConfig, run_dir: str | Path) -> pd.DataFrame:
    """The plan ``synthesize`` would follow (for ``--dry-run``); writes nothing."""
    check_config(cfg)
    gen = LoadedGenerator.open(run_dir)
    train_labels = gen.training_set().labels
    gen.check_labels(cfg.labels, train_labels)
    return build_plan(cfg.spec(), cfg.prompts, train_labels, gen.has_adapter)


def synthesize(cfg: SynthConfig, run_dir: str | Path, out_dir: str | Path,
               shard: tuple[int, int] = (0, 1), overwrite: bool = False, progress: bool = True,
               on_plan=None) -> dict:
    """Generate this shard's part of the cohort (resuming), then assemble the manifest and the
    dataset card if every planned image is done. Returns a summary dict.

    ``on_plan(plan)`` is called once the plan is known, before any image is generated.
    ``--until-accepted`` runs rounds: after each, the targets the gates rejected are planned
    again (new indices and seeds), until every requested target has its accepted count or
    ``max_attempts * n`` images exist. Rounds depend on every earlier image's gate result, so
    they run in one process only (``shard`` must be ``(0, 1)``).
    """
    # 1. The generator, the resolved sampling settings and the plan; the output folder (one
    # writer per folder and shard: a second process on the same --out stops here).
    _check_arguments(cfg, shard, overwrite)
    cohort = _open_cohort(cfg, run_dir, out_dir, on_plan)
    part = "" if shard[1] == 1 else f"shard-{shard[0]}-of-{shard[1]}"
    with folder_lock(cohort.out.root, "cohort", part):
        return _synthesize(cohort, shard, overwrite, progress)


def _synthesize(cohort: _Cohort, shard: tuple[int, int], overwrite: bool, progress: bool) -> dict:
    """:func:`synthesize` once the arguments are checked and the folder is locked."""
    cfg = cohort.cfg
    open_output(cohort.out, cohort.settings, cohort.plan, overwrite)

    # 2. Gates (calibrated once, on real val images) and the pipeline.
    gates, gate_info = build_gates(cfg.gates, cfg.gate, cfg.labels, cfg.classifier, cohort.gen,
                                   cohort.out, cohort.train_ds)
    pipe = _load_pipeline(cohort.gen, cohort.settings["precision"])

    # 3. Resume: rows already written (any shard), orphans of this shard removed.
    part = cohort.out.part(shard)
    done = read_rows(cohort.out.parts, repair=part)
    clean_orphans(cohort.out, shard, done)

    # 4. This shard's images, round by round (one round unless --until-accepted).
    make = _BatchWriter(pipe, gates, cfg, cohort.out, cohort.steps, cohort.guidance,
                        cohort.gen.hash, cohort.cohort_id)
    t_start = time.perf_counter()
    plans, n_new = _run_rounds(cohort, make, shard, done, part, progress)

    # 5. All planned images done (by every shard)? Then the manifest and the dataset card.
    summary = {"out": str(cohort.out.root), "shard": f"{shard[0]}/{shard[1]}",
               "generated_now": n_new}
    return summary | _assemble_if_complete(cohort, plans, gate_info, t_start)


# ------------------------------------------------------------------------------- set-up

@dataclass
class _Cohort:
    """One cohort being made: its arguments, generator, plan, folder and resolved settings."""

    cfg: SynthConfig
    gen: LoadedGenerator
    train_ds: Any  # the generator's training set (its labels drive the plan)
    plan: pd.DataFrame  # the first round's plan (plan.csv)
    out: CohortDir
    settings: dict  # synth.json
    cohort_id: str  # sha256 (16 hex) of the settings
    steps: int
    guidance: float


def _check_arguments(cfg: SynthConfig, shard: tuple[int, int], overwrite: bool) -> None:
    check_config(cfg)
    if overwrite and shard[1] != 1:
        raise CxraugError("--overwrite with --shard: every shard would delete the others' images; "
                          "delete the folder once, then start the shards without --overwrite")
    if cfg.until_accepted and shard[1] != 1:
        raise CxraugError(f"--until-accepted with --shard {shard[0]}/{shard[1]}: top-up rounds depend "
                          "on every image's gate result, so run it as one process (no --shard)")


def _open_cohort(cfg: SynthConfig, run_dir: str | Path, out_dir: str | Path,
                 on_plan) -> _Cohort:
    """Load the generator, resolve steps and guidance, plan (``on_plan(plan)``), settle the
    settings that identify the cohort."""
    gen = LoadedGenerator.open(run_dir)
    steps = cfg.steps or gen.cfg.sample.steps
    guidance = gen.cfg.sample.guidance if cfg.guidance is None else cfg.guidance
    train_ds = gen.training_set()
    gen.check_labels(cfg.labels, train_ds.labels)
    plan = build_plan(cfg.spec(), cfg.prompts, train_ds.labels, gen.has_adapter)
    if on_plan:
        on_plan(plan)
    out = CohortDir(Path(out_dir))
    settings = cohort_settings(cfg, gen, steps, guidance)
    cohort_id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return _Cohort(cfg, gen, train_ds, plan, out, settings, cohort_id, steps, guidance)


def _load_pipeline(gen: LoadedGenerator, precision: str):
    """The generator's sampling pipeline; bf16 runs its denoiser under autocast."""

    pipe = gen.pipeline(default_device())  # the folder and config it has opened
    if precision == "bf16":
        pipe.model = Autocast(pipe.model, pipe.device.type)
    return pipe


# ---------------------------------------------------------------------------------- the loop

class _BatchWriter:
    """One batch of plan rows -> images (sampled, gated, written) -> their manifest rows."""

    def __init__(self, pipe, gates: Gates, cfg: SynthConfig, out: CohortDir, steps: int,
                 guidance: float, generator_hash: str, cohort_id: str):
        self.pipe, self.gates, self.cfg, self.out = pipe, gates, cfg, out
        self.steps, self.guidance = steps, guidance
        self.generator_hash, self.cohort_id = generator_hash, cohort_id
        self.ext = "png" if cfg.format == "png" else "dcm"

    def __call__(self, batch: pd.DataFrame) -> list[dict]:
        vecs = batch[OBS].to_numpy(np.float32)
        images = self.pipe(batch["prompt"].tolist(), seeds=batch["seed"].tolist(), labels=vecs,
                           steps=self.steps, guidance=self.guidance, sampler=self.cfg.sampler,
                           batch_size=len(batch))
        checks = self.gates.check(images, batch["target"].tolist())
        rows = []
        for p, vec, img, chk in zip(batch.to_dict("records"), vecs, images, checks):
            ident = f"{int(p['index']):06d}"
            file = f"{'images' if chk['accepted'] else 'rejected'}/{ident}.{self.ext}"
            row = {"id": ident, "index": int(p["index"]), "round": int(p["round"]), "file": file,
                   "seed": int(p["seed"]), "prompt": p["prompt"], "hint": p["hint"],
                   "target": p["target"],
                   **{o: (None if np.isnan(v) else float(v)) for o, v in zip(OBS, vec)},
                   "sampler": self.cfg.sampler, "steps": self.steps, "guidance": self.guidance,
                   "generator": self.generator_hash, **chk}
            write_image(self.out.root / file, img, self.cfg.format, row, self.cohort_id)
            rows.append(row)
        return rows


def _run_rounds(cohort: _Cohort, make: _BatchWriter, shard: tuple[int, int],
                done: dict[int, dict], part: Path, progress: bool) -> tuple[list[pd.DataFrame], int]:
    """Every round's images of this shard (``done`` gains their rows); the plans of all rounds
    and how many images were made now."""
    plans, n_new = [cohort.plan], 0
    with job_progress("synth", "{task.fields[info]}", enabled=progress) as bar, \
            part.open("a") as sink:
        task = bar.add_task("synth", total=0, info="")
        while True:
            # This round's images: this shard's indices without a row yet, in batches.
            current = plans[-1]
            mine = current[current["index"] % shard[1] == shard[0]]
            todo = mine[~mine["index"].isin(list(done))]
            bar.update(task, total=bar.tasks[task].total + len(mine), advance=len(mine) - len(todo))
            for start in range(0, len(todo), cohort.cfg.batch_size):
                t0 = time.perf_counter()
                rows = make(todo.iloc[start:start + cohort.cfg.batch_size])
                dt = (time.perf_counter() - t0) / len(rows)
                _append_rows(cohort.out, sink, rows, dt)
                done.update({r["index"]: r for r in rows})
                n_new += len(rows)
                bar.update(task, advance=len(rows), info=f"{1 / dt:.2f} img/s")
            if not cohort.cfg.until_accepted:
                break
            topup = _topup_plan(cohort, plans, done)
            if topup is None:
                break
            plans.append(topup)
            write_atomic(cohort.out.topups, csv_text(pd.concat(plans[1:], ignore_index=True)))
    return plans, n_new


def _append_rows(out: CohortDir, sink, rows: list[dict], seconds_per_image: float) -> None:
    """Append a batch's manifest rows, durably, once their images are on disk."""
    for folder in {Path(r["file"]).parent for r in rows}:
        fsync_dir(out.root / folder)
    # rows only after their images exist; fsync so a kill cannot lose a row we keep
    with writing(sink.name):
        sink.write("".join(json.dumps(r | {"seconds": round(seconds_per_image, 4)}) + "\n"
                           for r in rows))
        sink.flush()
        os.fsync(sink.fileno())


def _topup_plan(cohort: _Cohort, plans: list[pd.DataFrame],
                done: dict[int, dict]) -> pd.DataFrame | None:
    """--until-accepted: the next round's plan for the targets still missing after the rounds so
    far, within ``max_attempts * n`` images in all; None when nothing is missing or left.

    Rows of later rounds, present when resuming, must not count: the replay has to match.
    """
    cfg = cohort.cfg
    requested = cohort.plan["target"].value_counts().to_dict()
    budget = math.ceil(cfg.max_attempts * cfg.n)
    accepted = pd.Series([r["target"] for r in done.values()
                          if r["accepted"] and r["round"] < len(plans)]).value_counts()
    missing = {t: max(0, c - int(accepted.get(t, 0))) for t, c in requested.items()}
    n_planned = sum(len(p) for p in plans)
    targets = _round_robin(missing, budget - n_planned)
    if not targets:
        return None
    return build_plan(cfg.spec(), cfg.prompts, cohort.train_ds.labels, cohort.gen.has_adapter,
                      n_planned, targets, len(plans))


def _round_robin(missing: dict[str, int], budget: int) -> list[str]:
    """Targets still missing, interleaved so a budget cut keeps the balance."""
    out, left = [], dict(missing)
    while len(out) < budget and any(left.values()):
        for t in list(left):
            if left[t] and len(out) < budget:
                out.append(t)
                left[t] -= 1
    return out


# ------------------------------------------------------------------------------ the end

def _assemble_if_complete(cohort: _Cohort, plans: list[pd.DataFrame], gate_info: dict,
                          t_start: float) -> dict:
    """If every planned row exists (any shard), write manifest.csv and the dataset card."""

    planned = set(pd.concat(plans)["index"].tolist())
    done = read_rows(cohort.out.parts)  # other shards may have finished meanwhile
    summary = {"seconds": time.perf_counter() - t_start, "complete": planned <= set(done)}
    if summary["complete"]:
        manifest = pd.DataFrame([done[i] for i in sorted(planned)])
        write_atomic(cohort.out.manifest, csv_text(manifest))
        summary |= write_card(cohort.out, manifest, cohort.plan,
                              cohort.settings | {"cohort_id": cohort.cohort_id}, cohort.gen.card(),
                              gate_info)
    return summary
