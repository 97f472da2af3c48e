"""Label fidelity with and without the DKIM adapter: do generated images carry their target label?

    python benchmarks/dkim_fidelity.py --model RUN --data DATA [--classifier DIR] \
        [--labels pneumonia] [--n 64] [--steps 20] [--prompts mined|neutral] \
        [--out benchmarks/results/dkim_fidelity_<name>[_neutral].json]

1. Load the run twice: stage 1 alone (``use_adapter=False``) and stage 1 + the DKIM adapter.
2. A judge trained on REAL images only: ``--classifier DIR`` or a resnet18 trained here for a few
   epochs on the run's own training split (``RUN/splits.csv``, or for a packaged model the same
   patient-level split written under ``--work``; val split for model selection),
   cached in ``--work`` so a rerun reuses it. Its real test AUC is reported as a sanity check.
3. Per label L: ``--n`` images targeted "L positive" and ``--n`` targeted "No Finding positive,
   L negative". Prompts are mined templates for the target; every image has its own seed, and
   both generators get the same prompts, seeds and target labels (the adapter's hint follows
   the target), so only the adapter differs. ``--prompts neutral`` gives every image the same
   label-free report (NEUTRAL_REPORT): stage 1 then cannot know the target (AUC ~0.5 expected)
   and whatever separation remains with the adapter comes through its disease hint alone.
4. AUC of "intended label" vs the judge's score for L, per generator, with a bootstrap interval
   over images (no patients here), and the paired difference (adapter - stage 1) bootstrapped on
   the same resamples.

Writes benchmarks/results/dkim_fidelity_<run name>.json and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import cxraug
from cxraug.classify.data import ArraySet
from cxraug.classify.model import Classifier
from cxraug.classify.train import ClassifierConfig, train_classifier
from cxraug.data import labels as L
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.data.splits import splits_for
from cxraug.data.templates import PromptBuilder
from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.metrics.bootstrap import bootstrap_auc, paired_difference

RESULTS = Path(__file__).parent / "results"
NEUTRAL_REPORT = "Frontal chest radiograph."  # says nothing about any observation
MIN_POSITIVE = 20  # default labels: training-split observations with at least this many positives
console = Console(width=None if sys.stdout.isatty() else 130)  # logs: keep table rows whole


# ------------------------------------------------------------------------------ real data

def splits_file(model: Path, work: Path) -> Path:
    """The run's ``splits.csv``. A packaged model folder or a shipped name (``kermany-128``)
    carries none: the same patient-level split (seed 0) is written under ``work``, never into the
    model folder or a stray folder named like the model in the working directory."""
    own = Path(model) / "splits.csv"
    return own if own.is_file() else Path(work) / "splits" / f"{Path(model).name}.csv"


def load_real(data: str, splits: Path, size: int):
    """``data`` split by the file ``splits`` (:func:`splits_file`; written when missing):
    ``(dataset, uint8 [N, size, size] images, split names)``."""
    ds = splits_for(load_dataset(resolve_data(data)), splits)
    ds = ds.select(ds.table["assigned_split"].to_numpy() != "excluded")
    images, ds, _ = cached_images(ds, size)
    return ds, images, ds.table["assigned_split"].to_numpy()


def default_labels(ds, split: np.ndarray) -> list[str]:
    y = ds.labels[split == "train"]
    return [o for i, o in enumerate(L.OBSERVATIONS)
            if o != "No Finding" and (y[:, i] == 1).sum() >= MIN_POSITIVE]


def arrays(ds, images: np.ndarray, split: np.ndarray, labels: list[str], name: str) -> ArraySet:
    m = split == name
    targets = L.apply_policy(ds.labels, "ignore")[:, [L.index(o) for o in labels]]
    return ArraySet(np.asarray(images[m]), targets[m], ds.patient_ids[m])


# ---------------------------------------------------------------------------- the judge

def classifier_config(size: int, epochs: int) -> ClassifierConfig:
    # A few epochs of resnet18 at the run's size: about 2-3 minutes on one CPU core.
    return ClassifierConfig(arch="resnet18", image_size=size, max_epochs=epochs, patience=0,
                            batch_size=64, seed=0)


def judge(args, ds, images, split, labels: list[str], size: int) -> tuple[Classifier, dict]:
    """The given classifier, or one trained on the real training split (cached in ``--work``)."""
    t0 = time.perf_counter()
    if args.classifier is not None:
        clf = Classifier.from_pretrained(args.classifier)
        info = {"source": "given", "path": str(args.classifier)}
    else:
        cfg = classifier_config(size, args.clf_epochs)
        key = hashlib.sha256(json.dumps({
            "data": str(resolve_data(args.data).resolve()), "labels": labels, "size": size,
            "splits": hashlib.sha256(splits_file(args.model, args.work).read_bytes()).hexdigest(),
            "config": repr(cfg)}).encode()).hexdigest()[:16]
        folder = args.work / f"classifier-{key}"
        if (folder / "model" / "config.json").is_file():
            clf = Classifier.from_pretrained(folder / "model")
            info = {"source": "cached", "path": str(folder / "model")}
        else:
            console.print(f"training the real-data judge ({cfg.arch}, {cfg.max_epochs} epochs) "
                          f"-> {folder}")
            clf, hist = train_classifier(arrays(ds, images, split, labels, "train"),
                                         arrays(ds, images, split, labels, "val"), cfg, folder,
                                         label_names=labels)
            info = {"source": "trained", "path": str(folder / "model"),
                    "best_val_mauc": hist["best_val_mauc"], "steps": hist["steps"]}
        info["train_config"] = {"arch": cfg.arch, "epochs": cfg.max_epochs, "batch_size": 64}
    clf.eval()
    missing = [o for o in labels if o not in clf.label_names]
    if missing:
        raise SystemExit(f"{info['path']}: classifier does not predict {', '.join(missing)} "
                         f"(it has {', '.join(clf.label_names)}); pass another --classifier")
    # Sanity: the judge on real test images, its own label columns.
    test = arrays(ds, images, split, list(clf.label_names), "test")
    scores = clf.predict_proba(test.images)
    real = bootstrap_auc(test.targets, scores, test.patient_ids, n_boot=args.n_boot, seed=0,
                         label_names=clf.label_names)
    info.update(arch=clf.args["arch"], label_names=list(clf.label_names), image_size=clf.image_size,
                real_test={"n_images": len(test), "n_patients": real["n_patients"],
                           "per_label": real["per_label"], "mauc": real["mauc"], "ci": real["ci"]},
                seconds=time.perf_counter() - t0)
    return clf, info


# ---------------------------------------------------------------------------- generation

def targets(label: str, n: int) -> np.ndarray:
    """``float32 [2n, 14]``: n "label positive" rows, then n "No Finding, label negative" rows."""
    pos = L.vector(positive=[label])
    neg = L.vector(positive=["No Finding"], negative=[label])
    return np.stack([pos] * n + [neg] * n)


def generate(pipe: DiffCXRPipeline, prompts: list[str], vecs: np.ndarray, seeds: list[int],
             steps: int, guidance: float) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    images = pipe(prompts, seeds=seeds, labels=vecs, steps=steps, guidance=guidance)
    return images, time.perf_counter() - t0


def fidelity(label: str, clf: Classifier, pipes: dict[str, DiffCXRPipeline], args,
             guidance: float, offset: int) -> dict:
    """Generate the positive/negative targets with each generator and score them with the judge."""
    vecs = targets(label, args.n)
    seeds = [args.seed + offset + k for k in range(2 * args.n)]
    if args.prompts == "neutral":
        prompts = [NEUTRAL_REPORT] * len(seeds)
    else:
        builder = PromptBuilder("mined")
        prompts = [builder.build(v, s) for v, s in zip(vecs, seeds)]
    y = np.r_[np.ones(args.n), np.zeros(args.n)][:, None]
    pids = np.arange(2 * args.n).astype(str)  # no patients: resample images
    col = clf.label_names.index(label)
    out: dict = {"prompts_positive": sorted(set(prompts[:args.n])),
                 "prompts_negative": sorted(set(prompts[args.n:])), "seconds": {}}
    scores = {}
    for name, pipe in pipes.items():
        console.print(f"{label}: generating {2 * args.n} images with {name}")
        images, secs = generate(pipe, prompts, vecs, seeds, args.steps, guidance)
        s = clf.predict_proba(images)[:, col:col + 1]
        scores[name] = s
        b = bootstrap_auc(y, s, pids, n_boot=args.n_boot, seed=0, label_names=[label])
        auc = b["per_label"][label]
        out[name] = {"auc": auc["auc"] if auc else None, "ci": auc["ci"] if auc else None,
                     "mean_score_positive_target": float(s[:args.n].mean()),
                     "mean_score_negative_target": float(s[args.n:].mean()),
                     "scores": [round(float(v), 5) for v in s[:, 0]]}
        out["seconds"][name] = secs
    d = paired_difference(y, scores["stage1+adapter"], scores["stage1"], pids, n_boot=args.n_boot,
                          seed=0, label_names=[label])
    out["difference"] = {"diff": d["diff"], "ci": d["ci"], "p_value": d["p_value"]}
    return out


# ---------------------------------------------------------------------------------- main

def fmt(auc, ci) -> str:
    return "-" if auc is None else f"{auc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="run folder with denoiser/, adapter/ and splits.csv")
    ap.add_argument("--data", required=True, help="the real data the run was trained on")
    ap.add_argument("--classifier", type=Path, help="a real-data classifier folder (else trained here)")
    ap.add_argument("--labels", help="comma-separated observations (default: train positives >= 20)")
    ap.add_argument("--n", type=int, default=64, help="images per target (positive and negative)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", choices=("mined", "neutral"), default="mined",
                    help="mined: report templates for the target; neutral: one label-free report "
                         "for all (only the adapter's hint knows the target)")
    ap.add_argument("--guidance", type=float, help="default: the run's sample.guidance")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--clf-epochs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cxraug-bench-dkim")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    suffix = "_neutral" if args.prompts == "neutral" else ""
    out = args.out or RESULTS / f"dkim_fidelity_{args.model.resolve().name}{suffix}.json"
    t_start = time.perf_counter()

    # 1. Both generators from one run.
    stage1 = DiffCXRPipeline.from_pretrained(args.model, use_adapter=False)
    adapted = DiffCXRPipeline.from_pretrained(args.model, use_adapter=True)
    if not adapted.has_adapter:
        raise SystemExit(f"{args.model}: no trained adapter (adapter/config.json); this benchmark "
                         "compares stage 1 with stage 1 + adapter, so train stage 2 first")
    pipes = {"stage1": stage1, "stage1+adapter": adapted}
    size = stage1.space.image_size
    guidance = stage1.sample_cfg.guidance if args.guidance is None else args.guidance

    # 2. Real data and the real-data judge.
    ds, images, split = load_real(args.data, splits_file(args.model, args.work), size)
    labels = (L.parse_label_list(args.labels) if args.labels else default_labels(ds, split))
    if not labels:
        raise SystemExit(f"{args.data}: no observation has {MIN_POSITIVE} training positives; "
                         "pass --labels")
    labels = sorted(labels, key=L.index)
    clf, clf_info = judge(args, ds, images, split, labels, size)
    for o, r in clf_info["real_test"]["per_label"].items():
        console.print(f"judge sanity: real test AUC {o} = {fmt(r['auc'], r['ci']) if r else '-'} "
                      f"({clf_info['real_test']['n_images']} images, {clf_info['source']})")

    # 3-4. Generate per label with both generators and score.
    per_label = {o: fidelity(o, clf, pipes, args, guidance, offset=1_000_000 * k)
                 for k, o in enumerate(labels)}

    # 5. Report.
    table = Table(title=f"DKIM label fidelity: {args.model} ({args.prompts} reports, n={args.n} "
                        f"per target, {args.steps} steps, guidance {guidance:g})")
    for c in ("label", "stage-1 AUC [95% CI]", "stage-1+adapter AUC [95% CI]",
              "difference [95% CI]", "mean score pos/neg (s1 | s1+ad)"):
        table.add_column(c)
    for o, r in per_label.items():
        a, b, d = r["stage1"], r["stage1+adapter"], r["difference"]
        table.add_row(o, fmt(a["auc"], a["ci"]), fmt(b["auc"], b["ci"]),
                      f"{d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]",
                      f"{a['mean_score_positive_target']:.2f}/{a['mean_score_negative_target']:.2f}"
                      f" | {b['mean_score_positive_target']:.2f}/{b['mean_score_negative_target']:.2f}")
    console.print(table)
    result = {
        # paths relative to the results file, never this machine's absolute ones
        "run": os.path.relpath(args.model.resolve(), out.parent.resolve()),
        "data": os.path.relpath(Path(resolve_data(args.data)).resolve(), out.parent.resolve()),
        "settings": {"n_per_target": args.n, "steps": args.steps, "guidance": guidance,
                     "sampler": stage1.sample_cfg.sampler, "seed": args.seed, "n_boot": args.n_boot,
                     "image_size": size, "prompts": args.prompts, "labels": labels,
                     "negative_target": "No Finding positive, label negative"},
        "classifier": clf_info, "labels": per_label,
        "timings": {"total_s": time.perf_counter() - t_start, "classifier_s": clf_info["seconds"],
                    "generation_s": {o: r["seconds"] for o, r in per_label.items()}},
        "versions": {"cxraug": getattr(cxraug, "__version__", "?"), "torch": torch.__version__,
                     "python": platform.python_version(), "threads": torch.get_num_threads()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
