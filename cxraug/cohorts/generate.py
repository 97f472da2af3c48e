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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cxraug.cohorts.gates import (
    GATES,
    FidelityGate,
    GateConfig,
    Gates,
    MemorisationGate,
    pixel_embedding,
)
from cxraug.cohorts.plan import CohortSpec, plan_cohort
from cxraug.cohorts.store import (
    CohortDir,
    clean_orphans,
    csv_text,
    fsync_dir,
    read_rows,
    write_atomic,
    write_image,
)
from cxraug.core import config as C
from cxraug.core.errors import CxraugError
from cxraug.core.precision import default_device, resolve_precision
from cxraug.core.progress import job_progress
from cxraug.data import labels as L

OBS = list(L.OBSERVATIONS)


@dataclass
class SynthConfig:
    """Everything that defines a cohort (``batch_size`` only changes speed, not the images)."""

    labels: list[str] = field(default_factory=list)
    n: int = 0
    negatives: float = 0.2
    cooccurrence: Literal["empirical", "none"] = "empirical"
    prompts: Literal["mined", "paper"] = "mined"
    seed: int = 0
    steps: int | None = None  # None: the run's sample.steps
    guidance: float | None = None  # None: the run's sample.guidance
    sampler: Literal["dpm++", "ddim"] = "dpm++"
    batch_size: int = 16
    classifier: str | None = None  # Classifier folder for the fidelity gate (and embeddings)
    gates: list[str] = field(default_factory=lambda: list(GATES))
    gate: GateConfig = field(default_factory=GateConfig)
    until_accepted: bool = False
    max_attempts: float = 3.0  # --until-accepted: at most max_attempts * n images in total
    format: Literal["png", "dicom"] = "png"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # denoiser arithmetic; auto: bf16 if fast

    def validate(self) -> None:
        self.labels = L.parse_label_list(self.labels)
        self.spec().validate()
        bad = [g for g in self.gates if g not in GATES]
        if bad:
            raise CxraugError(f"--gates {bad[0]!r}: choose from {', '.join(GATES)} or none")
        if self.batch_size < 1:
            raise CxraugError(f"--batch-size {self.batch_size}: must be >= 1")
        if self.steps is not None and not 1 <= self.steps <= 1000:
            raise CxraugError(f"--steps {self.steps}: must be between 1 and 1000")
        if self.guidance is not None and not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise CxraugError(f"--guidance {self.guidance}: must be >= 0 (1 = no guidance)")
        if self.max_attempts < 1:
            raise CxraugError(f"max_attempts {self.max_attempts}: must be >= 1 (a multiple of --n)")

    def spec(self) -> CohortSpec:
        return CohortSpec(list(self.labels), self.n, self.negatives, self.cooccurrence, self.seed)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``--shard i/N`` -> ``(i, N)`` (see :func:`cxraug.core.config.parse_slice`)."""
    return C.parse_slice(text, "--shard")


# ------------------------------------------------------------------------------ the generator

@dataclass
class Generator:
    """A trained generator as the cohort sees it: its config, training set and identity.

    A run folder (``cxraug train``) reads its training and val images through its recipe's
    dataset; a packaged model (``cxraug export``, e.g. the shipped ``kermany-128``) carries them
    as a :class:`~cxraug.data.reference.Reference` instead.
    """

    run: object  # cxraug.diffusion.prepare.RunDir
    cfg: object  # DiffCXRConfig
    has_adapter: bool
    hash: str
    name: str = ""
    reference: object = None  # cxraug.data.reference.Reference of a packaged model

    @classmethod
    def open(cls, model: str | Path) -> Generator:
        from cxraug.core.runs import RunDir
        from cxraug.data.reference import REFERENCE_NAME, Reference
        from cxraug.diffusion.config import DiffCXRConfig
        from cxraug.models.zoo import resolve_model

        run = RunDir(resolve_model(model))
        if not (run.root / "config.yaml").is_file() or not (run.denoiser / "config.json").is_file():
            raise CxraugError(f"--model {model}: not a trained cxraug run (needs config.yaml and "
                              "denoiser/); train one with cxraug train --stage 1")
        cfg = C.load(DiffCXRConfig, run.root / "config.yaml")
        ref = run.root / REFERENCE_NAME
        return cls(run, cfg, (run.adapter / "config.json").is_file(),
                   folder_hash(run.vae, run.text, run.denoiser, run.adapter), str(model),
                   Reference.load(ref) if ref.is_file() else None)

    def training_set(self):
        from cxraug.diffusion.prepare import training_dataset

        if self.reference is not None:
            return self.reference.train
        return training_dataset(self.cfg, self.run)

    def split(self, name: str):
        from cxraug.data.adapters import load_dataset, resolve_data
        from cxraug.data.splits import splits_for

        if self.reference is not None:
            if name not in ("train", "val"):
                raise CxraugError(f"{self.name}: a packaged model carries its train and val "
                                  f"references only, not {name!r}")
            return getattr(self.reference, name)
        ds = load_dataset(resolve_data(self.cfg.data.data), self.cfg.data.dataset,
                              missing="keep" if self.cfg.data.skip_bad else "error")
        return splits_for(ds, self.run.splits, seed=self.cfg.data.split_seed).where_split(name)

    def images(self, ds):
        """``(uint8 [N, S, S] memmap, dataset rows kept)`` at the generator's image size (a
        packaged model's training reference: at its reference size)."""
        from cxraug.data.cache import cached_images
        from cxraug.data.reference import Rows

        if isinstance(ds, Rows):
            return ds.images, ds
        images, kept, _ = cached_images(ds, self.cfg.data.image_size, skip_bad=self.cfg.data.skip_bad,
                                        progress=False)
        return images, kept

    def check_labels(self, labels: list[str], train_labels: np.ndarray) -> None:
        from cxraug.data.reference import check_known

        check_known(labels, train_labels, self.name)

    def card(self) -> dict:
        """What the generator is and what it was trained on (for the dataset card)."""
        def meta(folder: Path) -> dict:
            p = folder / "config.json"
            return json.loads(p.read_text()).get("meta", {}) if p.is_file() else {}

        from cxraug.models.zoo import SHIPPED

        d, den, ada = self.cfg.data, meta(self.run.denoiser), meta(self.run.adapter)
        # a shipped model by its name: no path of this machine goes into the cohort card
        where = f"cxraug:{self.name}" if self.name in SHIPPED else str(self.run.root.resolve())
        return {"run": where, "hash": self.hash, "model_card": f"{where}/README.md",
                "trained_on": {"data": d.data, "dataset": den.get("trained_on", d.dataset),
                               "images": den.get("n_train_images"),
                               "split": "train (patient-level split of the official training images)"
                               if self.reference is not None else "train of splits.csv",
                               "real_frac": d.real_frac, "filter": d.filter, "image_size": d.image_size,
                               "prompts": d.prompts},
                "denoiser": {"preset": self.cfg.denoiser.preset, "steps": den.get("steps")},
                "adapter": {"steps": ada.get("steps")} if self.has_adapter else None}


def folder_hash(*folders: Path) -> str:
    """sha256 (16 hex) of every file's relative path and bytes under ``folders``."""
    h = hashlib.sha256()
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for p in sorted(q for q in Path(folder).rglob("*") if q.is_file()):
            h.update(f"{p.parent.name}/{p.name}\0".encode())
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


class Autocast:
    """A denoiser run under bf16 autocast that returns float32, so the solver's state and
    arithmetic stay in float32 (only the network's matrix products use bf16)."""

    def __init__(self, model, device: str = "cpu"):
        self.model, self.device = model, device

    def __call__(self, *args):
        import torch

        with torch.autocast(self.device, dtype=torch.bfloat16):
            return self.model(*args).float()


# ------------------------------------------------------------------------------------ the plan

def build_plan(cfg: SynthConfig, train_labels: np.ndarray, has_adapter: bool, start_index: int = 0,
               targets: list[str] | None = None, round_: int = 0) -> pd.DataFrame:
    """The cohort plan with each image's prompt and DKIM hint (both deterministic)."""
    from cxraug.core.seeds import stable_seed
    from cxraug.data.templates import PromptBuilder, paper_hint

    plan = plan_cohort(cfg.spec(), train_labels, start_index, targets)
    builder = PromptBuilder(source=cfg.prompts)
    vecs = plan[OBS].to_numpy(np.float32)
    prompts = [builder.build(v, seed=stable_seed(cfg.seed, "prompt", i))
               for v, i in zip(vecs, plan["index"])]
    hints = [paper_hint(v) if has_adapter else "" for v in vecs]
    plan.insert(1, "round", round_)
    plan.insert(4, "prompt", prompts)
    plan.insert(5, "hint", hints)
    return plan


# ------------------------------------------------------------------------------- output folder

def _settings(cfg: SynthConfig, gen: Generator, steps: int, guidance: float) -> dict:
    s = C.to_dict(cfg)
    s.pop("batch_size")
    if not cfg.until_accepted:
        s.pop("max_attempts")
    if "fidelity" not in cfg.gates or not cfg.classifier:
        for k in ("recall", "negative_keep", "thresholds"):
            s["gate"].pop(k)
    if "memorisation" not in cfg.gates:
        for k in ("alpha", "top_k", "pixel_embed"):
            s["gate"].pop(k)
    s["gate"].pop("batch_size")
    s.pop("classifier")  # the weights identify the classifier, not the path it was given by
    s["classifier_hash"] = folder_hash(Path(cfg.classifier)) if cfg.classifier else None
    return s | {"steps": steps, "guidance": guidance, "generator": gen.hash,
                "precision": resolve_precision(cfg.precision, default_device())}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v}
    return out


def open_output(out: CohortDir, settings: dict, plan: pd.DataFrame, overwrite: bool) -> None:
    """Create the folder, or check that it holds this very cohort (then we resume)."""
    if out.root.exists() and any(out.root.iterdir()):
        if not out.settings.is_file():  # never delete a folder we did not make
            raise CxraugError(f"{out.root}: folder exists and is not a cxraug cohort; choose "
                              "another --out")
        if overwrite:
            shutil.rmtree(out.root)
        else:
            old, new = _flat(json.loads(out.settings.read_text())), _flat(settings)
            diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            if diff:
                k = diff[0]
                raise CxraugError(f"{out.root}: holds a cohort made with other arguments ({k}: "
                                  f"{old.get(k)!r} now {new.get(k)!r}); rerun the original "
                                  "command to resume, or pass --overwrite, or another --out")
            if out.plan.is_file() and out.plan.read_text() != csv_text(plan):
                raise CxraugError(f"{out.plan}: the plan differs from the one on disk (generator "
                                  "training labels or prompt templates changed?); pass --overwrite "
                                  "or another --out")
    for folder in (out.root, out.images, out.rejected, out.parts):
        folder.mkdir(parents=True, exist_ok=True)
    if not out.settings.is_file():
        write_atomic(out.settings, json.dumps(settings, indent=2) + "\n")
    if not out.plan.is_file():
        write_atomic(out.plan, csv_text(plan))


# ---------------------------------------------------------------------------------------- gates

def build_gates(cfg: SynthConfig, gen: Generator, out: CohortDir | None,
                train_ds) -> tuple[Gates, dict]:
    """Load the classifier, read real train/val images and calibrate (or reload) the gates."""
    from cxraug.classify.model import Classifier

    info: dict = {g: {"status": "not run"} for g in GATES}
    if not cfg.gates:
        return Gates(), info
    saved = json.loads(out.gates.read_text()) if out is not None and out.gates.is_file() else None
    clf = None
    if cfg.classifier:
        if not (Path(cfg.classifier) / "config.json").is_file():
            raise CxraugError(f"--classifier {cfg.classifier}: not a classifier folder (no "
                              "config.json); train one on real data first")
        clf = Classifier.from_pretrained(cfg.classifier).eval()
    if saved is None:  # calibrate on the real val split of the generator's data
        val_images, val_ds = gen.images(gen.split("val"))
    fid = mem = None
    if "fidelity" in cfg.gates and clf is None:
        info["fidelity"] = {"status": "not run", "why": "no --classifier given"}
    elif "fidelity" in cfg.gates and saved is not None:
        fid = FidelityGate.from_thresholds(clf, saved["fidelity"]["thresholds"])
    elif "fidelity" in cfg.gates:
        fid = FidelityGate.calibrate(clf, cfg.labels, val_images, val_ds.labels, cfg.gate)
        info["fidelity"] = {"status": "run", "classifier": str(Path(cfg.classifier).resolve()),
                            "recall": cfg.gate.recall, "negative_keep": cfg.gate.negative_keep,
                            "n_val": len(val_ds), "thresholds": fid.thresholds()}
    if "memorisation" in cfg.gates:
        ref, kept = gen.images(train_ds)
        embed, name = ((clf.embed, f"classifier {clf.args['arch']} features") if clf is not None
                       else (pixel_embedding(cfg.gate.pixel_embed),
                             f"pixels {cfg.gate.pixel_embed}x{cfg.gate.pixel_embed}"))
        mem = MemorisationGate(ref, kept.ids, embed, name, cfg.gate)
        if saved is not None:
            mem.threshold = saved["memorisation"]["threshold"]
        else:
            info["memorisation"] = {"status": "run", "embedding": name, "alpha": cfg.gate.alpha,
                                    "top_k": cfg.gate.top_k, "n_reference": len(kept),
                                    **mem.calibrate(val_images)}
    if saved is not None:
        return Gates(fid, mem), saved
    if out is not None:
        write_atomic(out.gates, json.dumps(info, indent=2) + "\n")
    return Gates(fid, mem), info


# ---------------------------------------------------------------------------------- the loop

def _round_robin(missing: dict[str, int], budget: int) -> list[str]:
    """Targets still missing, interleaved so a budget cut keeps the balance."""
    out, left = [], dict(missing)
    while len(out) < budget and any(left.values()):
        for t in list(left):
            if left[t] and len(out) < budget:
                out.append(t)
                left[t] -= 1
    return out


class _BatchWriter:
    """One batch of plan rows -> images (sampled, gated, written) -> their manifest rows."""

    def __init__(self, pipe, gates: Gates, cfg: SynthConfig, out: CohortDir, steps: int,
                 guidance: float, generator: str, cohort_id: str):
        self.pipe, self.gates, self.cfg, self.out = pipe, gates, cfg, out
        self.steps, self.guidance, self.generator, self.cohort_id = steps, guidance, generator, cohort_id
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
                   "generator": self.generator, **chk}
            write_image(self.out.root / file, img, self.cfg.format, row, self.cohort_id)
            rows.append(row)
        return rows


def preview(cfg: SynthConfig, run_dir: str | Path) -> pd.DataFrame:
    """The plan ``synthesize`` would follow (for ``--dry-run``); writes nothing."""
    cfg.validate()
    gen = Generator.open(run_dir)
    train_labels = gen.training_set().labels
    gen.check_labels(cfg.labels, train_labels)
    return build_plan(cfg, train_labels, gen.has_adapter)


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
    from cxraug.cohorts.card import write_card

    # 1. The generator, the resolved sampling settings and the plan.
    cfg.validate()
    if overwrite and shard[1] != 1:
        raise CxraugError("--overwrite with --shard: every shard would delete the others' images; "
                          "delete the folder once, then start the shards without --overwrite")
    if cfg.until_accepted and shard[1] != 1:
        raise CxraugError(f"--until-accepted with --shard {shard[0]}/{shard[1]}: top-up rounds depend "
                          "on every image's gate result, so run it as one process (no --shard)")
    gen = Generator.open(run_dir)
    steps = cfg.steps or gen.cfg.sample.steps
    guidance = gen.cfg.sample.guidance if cfg.guidance is None else cfg.guidance
    train_ds = gen.training_set()
    gen.check_labels(cfg.labels, train_ds.labels)
    plan = build_plan(cfg, train_ds.labels, gen.has_adapter)
    if on_plan:
        on_plan(plan)
    out = CohortDir(Path(out_dir))
    settings = _settings(cfg, gen, steps, guidance)
    cohort_id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    open_output(out, settings, plan, overwrite)

    # 2. Gates (calibrated once, on real val images) and the pipeline.
    from cxraug.diffusion.pipeline import DiffCXRPipeline

    gates, gate_info = build_gates(cfg, gen, out, train_ds)
    pipe = DiffCXRPipeline.from_pretrained(gen.run.root, device=default_device())
    if settings["precision"] == "bf16":
        pipe.model = Autocast(pipe.model, pipe.device.type)

    # 3. Resume: rows already written (any shard), orphans of this shard removed.
    part = out.part(shard)
    done = read_rows(out.parts, repair=part)
    clean_orphans(out, shard, done)
    requested = plan["target"].value_counts().to_dict()
    budget = math.ceil(cfg.max_attempts * cfg.n) if cfg.until_accepted else cfg.n
    make = _BatchWriter(pipe, gates, cfg, out, steps, guidance, gen.hash, cohort_id)
    plans = [plan]
    t_start, n_new = time.perf_counter(), 0
    with job_progress("synth", "{task.fields[info]}", enabled=progress) as bar, \
            part.open("a") as sink:
        task = bar.add_task("synth", total=0, info="")
        while True:
            # 4. This round's images: this shard's indices without a row yet, in batches.
            current = plans[-1]
            mine = current[current["index"] % shard[1] == shard[0]]
            todo = mine[~mine["index"].isin(list(done))]
            bar.update(task, total=bar.tasks[task].total + len(mine), advance=len(mine) - len(todo))
            for start in range(0, len(todo), cfg.batch_size):
                t0 = time.perf_counter()
                rows = make(todo.iloc[start:start + cfg.batch_size])
                dt = (time.perf_counter() - t0) / len(rows)
                for folder in {Path(r["file"]).parent for r in rows}:
                    fsync_dir(out.root / folder)
                # rows only after their images exist; fsync so a kill cannot lose a row we keep
                sink.write("".join(json.dumps(r | {"seconds": round(dt, 4)}) + "\n" for r in rows))
                sink.flush()
                os.fsync(sink.fileno())
                done.update({r["index"]: r for r in rows})
                n_new += len(rows)
                bar.update(task, advance=len(rows), info=f"{1 / dt:.2f} img/s")
            if not cfg.until_accepted:
                break
            # 5. --until-accepted: plan the targets still missing after the rounds so far (rows of
            # later rounds, present when resuming, must not count: the replay has to match).
            accepted = pd.Series([r["target"] for r in done.values()
                                  if r["accepted"] and r["round"] < len(plans)]).value_counts()
            missing = {t: max(0, c - int(accepted.get(t, 0))) for t, c in requested.items()}
            n_planned = sum(len(p) for p in plans)
            targets = _round_robin(missing, budget - n_planned)
            if not targets:
                break
            plans.append(build_plan(cfg, train_ds.labels, gen.has_adapter, n_planned, targets,
                                    len(plans)))
            write_atomic(out.topups, csv_text(pd.concat(plans[1:], ignore_index=True)))

    # 6. All planned images done (by every shard)? Then the manifest and the dataset card.
    planned = set(pd.concat(plans)["index"].tolist())
    done = read_rows(out.parts)  # other shards may have finished meanwhile
    summary = {"out": str(out.root), "shard": f"{shard[0]}/{shard[1]}", "generated_now": n_new,
               "seconds": time.perf_counter() - t_start, "complete": planned <= set(done)}
    if summary["complete"]:
        rows = [done[i] for i in sorted(planned)]
        manifest = pd.DataFrame(rows)
        write_atomic(out.manifest, csv_text(manifest))
        summary |= write_card(out, manifest, plan, settings | {"cohort_id": cohort_id}, gen.card(),
                              gate_info)
    return summary
