"""Which classifier-free guidance scale makes a generator's images most like real ones, without
losing the label? One cohort per scale (same plan, prompts and seeds), each scored like the
quality card: the same real-data judge as the extractor (FID, precision/recall, coverage, the
classifier two-sample AUC, also at equal n) and the judge's pneumonia AUC on the cohort's own
targets (label fidelity: do pneumonia-targeted images read as pneumonia?). ``--vae-ceiling`` also
scores the generator's VAE reconstructions of ``--n`` real test images the same way: what a
latent generator with this VAE could reach at best (if they are already told from real images,
the VAE, not the denoiser, limits the two-sample AUC).

    python benchmarks/guidance_sweep.py --model kermany-128 --data ../shared/data/kermany \
        --judge runs/quality/judges/classifier-21a50b3f4ee417ee/model \
        [--guidance 1.0,1.5,2.0,3.0] [--n 200] [--vae-ceiling] [--work runs/guidance] [--out benchmarks/results/guidance_sweep.json]

The judge: ``benchmarks/quality_card.py`` trains it (a resnet18 on real 64 px images only, cached
under ``runs/quality/judges``). Prints a table and writes JSON (machine, command, every scale).
Resumable: a finished cohort is reused.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from cxraug.classify.model import Classifier
from cxraug.cohorts.config import SynthConfig
from cxraug.cohorts.generate import synthesize
from cxraug.core.precision import cpu_info
from cxraug.core.runs import RunDir
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.experiments.quality import evaluate
from cxraug.models.autoencoder import LatentSpace
from cxraug.models.zoo import resolve_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from vae_recon import reconstruct  # a sibling script


def vae_reconstructions(model: str, data: str, n: int, out: Path, vae: str | Path | None = None) -> Path:
    """decode(encode(x)) of ``n`` official test images (fixed random subset) as PNGs in ``out``,
    by the latent space of ``model`` (or the one saved in the folder ``vae``). Reused when ``out``
    already holds the ``n`` images of the same latent space (``source.txt``: ``n``, the weights'
    sizes and times)."""
    folder = Path(vae or RunDir(resolve_model(model)).vae)
    weights = sorted(folder.glob("*.safetensors"))
    source = "\n".join([f"n {n}"] + [f"{w.name} {w.stat().st_size} {w.stat().st_mtime_ns}" for w in weights])
    if (out / "source.txt").is_file() and (out / "source.txt").read_text() == source:
        return out
    space = LatentSpace.load(folder)
    ds = load_dataset(resolve_data(data))
    test = ds.select(ds.table["split"].to_numpy() == "test")
    pick = np.sort(np.random.default_rng(0).choice(len(test), min(n, len(test)), replace=False))
    images, _, _ = cached_images(test.select(np.isin(np.arange(len(test)), pick)), space.image_size,
                                 progress=False)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # another latent space's, or another n's
        old.unlink()
    for i, im in enumerate(reconstruct(space, np.asarray(images))):
        Image.fromarray(im).save(out / f"{i:05d}.png")
    (out / "source.txt").write_text(source)
    return out


def scored(card: dict, **extra) -> dict:
    m, eq = card["metrics"], (card.get("synthetic_matched") or {}).get("equal_n") or {}
    return {**extra, "fid": m["fid"], "precision": m["precision"], "recall": m["recall"],
            "density": m["density"], "coverage": m["coverage"], "two_sample_auc": card["two_sample_auc"],
            "equal_n": {k: eq.get(k) for k in ("n", "precision", "recall", "coverage", "two_sample_auc")}}


def label_auc(judge: Classifier, cohort: Path) -> float:
    """The judge's pneumonia AUC on the cohort: targeted pneumonia vs explicit negatives."""
    m = pd.read_csv(cohort / "manifest.csv")
    images = np.stack([np.asarray(Image.open(cohort / f).convert("L").resize(
        (judge.args["image_size"],) * 2, Image.BILINEAR)) for f in m["file"]])
    p = judge.predict_proba(images)[:, list(judge.args["label_names"]).index("Pneumonia")]
    return float(roc_auc_score((m["Pneumonia"].fillna(0) == 1).to_numpy(), p))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--judge", type=Path, required=True, help="classifier folder (real images only)")
    ap.add_argument("--guidance", default="1.0,1.5,2.0,3.0")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    ap.add_argument("--vae-ceiling", action="store_true", help="also score VAE reconstructions of real test images")
    ap.add_argument("--work", type=Path, default=Path("runs/guidance"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "guidance_sweep.json")
    args = ap.parse_args()
    scales = [float(g) for g in args.guidance.split(",") if g.strip()]
    judge = Classifier.from_pretrained(args.judge)
    rows, floor = [], {}
    for g in scales:
        t0 = time.perf_counter()
        cohort = args.work / f"g{g:g}"
        synthesize(SynthConfig(labels=["pneumonia"], n=args.n, seed=0, gates=[], guidance=g,
                               steps=args.steps), args.model, cohort)
        card = evaluate(args.data, cohort, "classifier", args.judge, image_size=64, max_images=5000, seed=0)
        rows.append(scored(card, guidance=g, label_auc=label_auc(judge, cohort),
                           seconds=round(time.perf_counter() - t0, 1)))
        floor = card.get("floor") or {}
        r = rows[-1]
        print(f"guidance {g:g}: FID {r['fid']:.1f} P {r['precision']:.3f} R {r['recall']:.3f} "
              f"C {r['coverage']:.3f} two-sample AUC {r['two_sample_auc']:.3f} (equal n "
              f"{r['equal_n']['two_sample_auc']:.3f}) label AUC {r['label_auc']:.3f} [{r['seconds']:.0f} s]",
              flush=True)
    ceiling = None
    if args.vae_ceiling:
        recon = vae_reconstructions(args.model, args.data, args.n, args.work / "vae-recon")
        card = evaluate(args.data, recon, "classifier", args.judge, image_size=64, max_images=5000, seed=0)
        ceiling = scored(card, images=f"VAE reconstructions of {args.n} real test images")
        floor = floor or card.get("floor") or {}
        print(f"VAE reconstructions: FID {ceiling['fid']:.1f} P {ceiling['precision']:.3f} R "
              f"{ceiling['recall']:.3f} C {ceiling['coverage']:.3f} two-sample AUC "
              f"{ceiling['two_sample_auc']:.3f} (equal n {ceiling['equal_n']['two_sample_auc']:.3f})", flush=True)
    out = {"command": shlex.join(["benchmarks/guidance_sweep.py", *sys.argv[1:]]),
           "date": time.strftime("%Y-%m-%d"), "model": args.model, "n": args.n, "steps": args.steps,
           "machine": cpu_info() | {"torch_threads": torch.get_num_threads()},
           "judge": (args.judge.parent if args.judge.name == "model" else args.judge).name, "real_floor": {k: floor.get(k) for k in ("fid", "precision", "recall",
                                                                             "coverage", "two_sample_auc")},
           "scales": rows, "vae_ceiling": ceiling}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
