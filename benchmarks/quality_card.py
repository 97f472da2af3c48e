"""The quality card of a generator: everything issue #13 asks to compare, from one command.

    python benchmarks/quality_card.py --model runs/kermany-128 --data ../shared/data/kermany \
        [--name kermany-128] [--n 400] [--work runs/quality]

1. Cohort: ``cxraug synth --labels pneumonia --n N`` (0.2 negatives, seed 0, the memorisation
   gate), the same command as the 64 px card in the README, so the counts match (320 pneumonia,
   80 negatives at N=400).
2. Extractor: a resnet18 trained on REAL images only at 64 px (``dkim_fidelity.judge``: the run's
   own training split, val for selection, 3 epochs; the recipe of the 64 px card's extractor), so
   a 128 px generator is compared at 64 px, the resolution of the earlier one.
3. ``cxraug eval``: FID/KID, precision/recall, density/coverage on up to 5,000 real images,
   the real-vs-real floor and the classifier two-sample AUC (and its floor).
4. Label fidelity: ``benchmarks/dkim_fidelity.py`` (pneumonia, n=32 per target, 20 steps) judged
   by the same 64 px real-data resnet18 (the judge of the 64 px table in the README: same recipe,
   same cache key), stage 1 and stage 1 + adapter.
5. Memorisation-gate counts of the cohort, and a real-vs-generated grid at the model's size
   (8 real test images per class beside 8 generated ones).

Writes ``benchmarks/results/quality_<name>.json`` and ``..._grid.png`` (paths relative to the
working directory) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def rel(p) -> str:
    """A path relative to the results folder (committed results hold no absolute paths)."""
    return os.path.relpath(Path(p).resolve(), (HERE / "results").resolve())


def cohort(model: str, n: int, out: Path) -> dict:
    from cxraug.cohorts.config import SynthConfig
    from cxraug.cohorts.generate import synthesize

    t0 = time.perf_counter()
    summary = synthesize(SynthConfig(labels=["pneumonia"], n=n, seed=0, gates=["memorisation"]),
                         model, out)
    import pandas as pd

    m = pd.read_csv(out / "manifest.csv")
    return {"folder": rel(out), "n": int(len(m)), "targets": m["target"].value_counts().to_dict(),
            "memorisation_pass": int((m["memorisation"] == "pass").sum()),
            "memorisation_fail": int((m["memorisation"] == "fail").sum()),
            "seconds": time.perf_counter() - t0, "complete": bool(summary["complete"])}


def extractor(run: Path, data: str, work: Path) -> Path:
    """The 64 px real-data resnet18 (cached by dkim_fidelity's key)."""
    import dkim_fidelity as D

    args = argparse.Namespace(classifier=None, clf_epochs=3, data=data, model=run, work=work,
                              n_boot=200)
    ds, images, split = D.load_real(data, run, 64)
    _, info = D.judge(args, ds, images, split, ["Pneumonia"], 64)
    return Path(info["path"])


def grid(model: str, data: str, out: Path) -> Path:
    from PIL import Image

    from cxraug.data import labels as L
    from cxraug.data.adapters import load_dataset, resolve_data
    from cxraug.data.cache import cached_images
    from cxraug.data.templates import PromptBuilder
    from cxraug.diffusion.pipeline import DiffCXRPipeline, grid_image

    pipe = DiffCXRPipeline.from_pretrained(model)
    size = pipe.space.image_size
    test = load_dataset(resolve_data(data))
    test = test.select(test.table["split"].to_numpy() == "test")  # the official test split
    rows = []
    for target in ("Pneumonia", "No Finding"):
        idx = np.flatnonzero(test.labels[:, L.index(target)] == 1)
        pick = np.random.default_rng(0).choice(idx, 8, replace=False)
        real, _, _ = cached_images(test.select(np.isin(np.arange(len(test)), pick)), size, progress=False)
        vec = L.vector(positive=[target])
        prompts = [PromptBuilder("mined").build(vec, seed=i) for i in range(8)]
        fake = pipe(prompts, seeds=list(range(100, 108)), labels=np.stack([vec] * 8))
        rows += [np.asarray(real), fake]
    Image.fromarray(grid_image(np.concatenate(rows), 4)).save(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="run folder (with splits.csv)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--name", help="model name for the output files (default: the run folder's)")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--work", type=Path, default=Path("runs/quality"))
    ap.add_argument("--skip-fidelity", action="store_true")
    args = ap.parse_args()
    name = args.name or args.model.name
    work = args.work / name
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"model": name, "run": rel(args.model), "data": rel(args.data)}
    t0 = time.perf_counter()

    res["cohort"] = cohort(str(args.model), args.n, work / "cohort")
    clf = extractor(args.model, args.data, args.work / "judges")
    from cxraug.experiments.quality import evaluate

    card = evaluate(args.data, work / "cohort", "classifier", clf, image_size=64, max_images=5000,
                    seed=0)
    res["eval"] = {k: card.get(k) for k in ("counts", "metrics", "two_sample_auc", "floor",
                                            "synthetic_matched", "diversity", "per_label")}
    res["eval"]["extractor"] = {k: v for k, v in card["extractor"].items() if k != "path"}
    if not args.skip_fidelity:
        out = work / "fidelity.json"
        subprocess.run([sys.executable, str(HERE / "dkim_fidelity.py"), "--model", str(args.model),
                        "--data", args.data, "--labels", "pneumonia", "--n", "32", "--steps", "20",
                        "--classifier", str(clf),
                        "--work", str(args.work / "judges"), "--out", str(out)], check=True)
        fid = json.loads(out.read_text())
        res["label_fidelity"] = {"pneumonia": fid["labels"]["Pneumonia"],
                                 "judge_real_test_auc": fid["classifier"]["real_test"]["per_label"]}
    res["grid"] = rel(grid(str(args.model), args.data, HERE / "results" / f"quality_{name}_grid.png"))
    res["seconds"] = time.perf_counter() - t0
    out = HERE / "results" / f"quality_{name}.json"
    out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    m, f = res["eval"]["metrics"], (res["eval"].get("floor") or {})
    print(f"{name}: FID {m['fid']:.1f} (floor {f.get('fid') or float('nan'):.1f}), precision "
          f"{m['precision']:.3f}, recall {m['recall']:.3f}, density {m['density']:.3f}, coverage "
          f"{m['coverage']:.3f}; two-sample AUC {res['eval']['two_sample_auc']} (floor "
          f"{f.get('two_sample_auc')}); memorisation gate {res['cohort']['memorisation_fail']} of "
          f"{res['cohort']['n']} rejected")
    eq, feq = (res["eval"].get("synthetic_matched") or {}).get("equal_n"), f.get("equal_n")
    if eq and feq:
        print(f"at equal n ({eq['n']} vs {eq['n']}): precision {eq['precision']:.3f} (floor "
              f"{feq['precision']:.3f}), recall {eq['recall']:.3f} ({feq['recall']:.3f}), coverage "
              f"{eq['coverage']:.3f} ({feq['coverage']:.3f}), two-sample AUC {eq['two_sample_auc']:.3f} "
              f"({feq['two_sample_auc']:.3f})")
    if "label_fidelity" in res:
        lf = res["label_fidelity"]["pneumonia"]
        print(f"label fidelity (pneumonia AUC): stage 1 {lf['stage1']['auc']:.3f}, + adapter "
              f"{lf['stage1+adapter']['auc']:.3f}")
    print(f"-> {rel(out)}")


if __name__ == "__main__":
    main()
