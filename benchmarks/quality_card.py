"""The quality card of a generator: everything issue #13 asks to compare, from one command.

    python benchmarks/quality_card.py --model runs/kermany-128 --data ../shared/data/kermany \
        [--name kermany-128] [--n 400] [--cohort-seed 0] [--vae-n 300] [--work runs/quality] [--stats-only | --vae-only]
        [--vae FOLDER]

1. Cohort: ``cxraug synth --labels pneumonia --n N`` (0.2 negatives, seed 0 or ``--cohort-seed``, the memorisation
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
6. VAE reconstructions of ``--vae-n`` official test images, scored like the cohort (3.): what a
   generator with this latent space could reach at best.
7. Image statistics of the cohort and of the VAE reconstructions (power spectrum per band,
   Laplacian variance, gradient, pixel std, 1st / 99th percentiles, each with its single-statistic
   AUC; centre-cropped at 128 px), each beside its real-vs-real floor: part of the eval card.

``--vae-only`` grades a latent space before any denoiser is trained on it: 6. and 7. for the
reconstructions alone (the run's ``vae/``, or ``--vae FOLDER``, e.g. a copy kept before decoder
tuning replaced it), written to ``quality_<name>_vae.json`` and ``.md``.

Writes ``benchmarks/results/quality_<name>.json``, ``.md`` and ``..._grid.png`` (paths relative to
the working directory) and prints a summary. ``--stats-only`` skips the judge, the eval card,
label fidelity and the grid: the cohort and the reconstructions are compared with the official
test images on the image statistics alone (the floor: two disjoint parts of the test images),
written to ``quality_<name>_stats.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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


def cohort(model: str, n: int, out: Path, seed: int = 0) -> dict:
    from cxraug.cohorts.config import SynthConfig
    from cxraug.cohorts.generate import synthesize

    t0 = time.perf_counter()
    summary = synthesize(SynthConfig(labels=["pneumonia"], n=n, seed=seed, gates=["memorisation"]),
                         model, out)
    import pandas as pd

    m = pd.read_csv(out / "manifest.csv")
    return {"folder": rel(out), "n": len(m), "seed": seed, "targets": m["target"].value_counts().to_dict(),
            "memorisation_pass": int((m["memorisation"] == "pass").sum()),
            "memorisation_fail": int((m["memorisation"] == "fail").sum()),
            "seconds": time.perf_counter() - t0, "complete": bool(summary["complete"])}


def extractor(run: Path, data: str, work: Path) -> Path:
    """The 64 px real-data resnet18 (cached by dkim_fidelity's key)."""
    import dkim_fidelity as D

    args = argparse.Namespace(classifier=None, clf_epochs=3, data=data, model=run, work=work,
                              n_boot=200)
    ds, images, split = D.load_real(data, D.splits_file(run, work), 64)
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


def official_test_images(data: str, size: int) -> np.ndarray:
    """The official test split, centre-cropped square at ``size`` px (``uint8 [N, size, size]``)."""
    from cxraug.data.adapters import load_dataset, resolve_data
    from cxraug.data.transforms import load_grayscale, resize_square

    ds = load_dataset(resolve_data(data))
    test = ds.select(ds.table["split"].to_numpy() == "test")  # the official test split
    return np.stack([resize_square(load_grayscale(p), size, mode="crop") for p in test.paths])


def stats_only(args, work: Path, res: dict) -> Path:
    """Image statistics of the cohort and the VAE reconstructions against the official test images."""
    from cxraug.experiments.quality.image_stats import STATS_SIZE, stats_section
    from cxraug.experiments.quality.inputs import load_synth

    real = official_test_images(args.data, STATS_SIZE)
    res["real"] = {"split": "test", "n": len(real)}
    res["image_stats"] = {}
    for name, folder in (("vae_recon", work / "vae-recon"), ("generator", work / "cohort")):
        _, _, crops = load_synth(folder, STATS_SIZE, None, 0, stats_size=STATS_SIZE)
        res["image_stats"][name] = stats_section(real, crops, seed=0)
    return HERE / "results" / f"quality_{res['model']}_stats.json"


def recon_card(args, work: Path, res: dict, clf: Path) -> dict:
    """The eval card of the VAE reconstructions, by the real-data judge ``clf``."""
    from cxraug.experiments.quality import evaluate

    keys = ("counts", "metrics", "two_sample_auc", "floor", "synthetic_matched")
    recon = evaluate(args.data, work / "vae-recon", "classifier", clf, image_size=64, max_images=5000,
                     seed=0)
    res["vae_recon"] = {k: recon.get(k) for k in keys}
    return recon


def vae_only(args, work: Path, res: dict) -> Path:
    """The eval card and image statistics of the VAE reconstructions alone (no cohort)."""
    clf = extractor(args.model, args.data, args.work / "judges")
    res["image_stats"] = {"vae_recon": recon_card(args, work, res, clf)["image_stats"]}
    return HERE / "results" / f"quality_{res['model']}_vae.json"


def full_card(args, work: Path, res: dict) -> Path:
    """The judge, the eval card of the cohort and of the VAE reconstructions, label fidelity, grid."""
    clf = extractor(args.model, args.data, args.work / "judges")
    from cxraug.experiments.quality import evaluate

    keys = ("counts", "metrics", "two_sample_auc", "floor", "synthetic_matched", "diversity", "per_label")
    card = evaluate(args.data, work / "cohort", "classifier", clf, image_size=64, max_images=5000,
                    seed=0)
    res["eval"] = {k: card.get(k) for k in keys}
    res["eval"]["extractor"] = {k: v for k, v in card["extractor"].items() if k != "path"}
    recon = recon_card(args, work, res, clf)
    res["image_stats"] = {"vae_recon": recon["image_stats"], "generator": card["image_stats"]}  # real: all of --data
    if not args.skip_fidelity:
        out = work / "fidelity.json"
        subprocess.run([sys.executable, str(HERE / "dkim_fidelity.py"), "--model", str(args.model),
                        "--data", args.data, "--labels", "pneumonia", "--n", "32", "--steps", "20",
                        "--classifier", str(clf),
                        "--work", str(args.work / "judges"), "--out", str(out)], check=True)
        fid = json.loads(out.read_text())
        res["label_fidelity"] = {"pneumonia": fid["labels"]["Pneumonia"],
                                 "judge_real_test_auc": fid["classifier"]["real_test"]["per_label"]}
    res["grid"] = rel(grid(str(args.model), args.data, HERE / "results" / f"quality_{res['model']}_grid.png"))
    return HERE / "results" / f"quality_{res['model']}.json"


def recon_line(r: dict) -> str:
    """FID and two-sample AUC of the VAE reconstructions, at equal n too, beside the floors."""
    eq = (r.get("synthetic_matched") or {}).get("equal_n") or {}
    f = r.get("floor") or {}
    feq = f.get("equal_n") or {}
    nan = float("nan")
    return (f"VAE reconstructions ({r['counts']['synthetic']} test images): FID {r['metrics']['fid']:.1f} "
            f"(floor {f.get('fid') or nan:.1f}), two-sample AUC {r['two_sample_auc']:.3f} (floor "
            f"{f.get('two_sample_auc') or nan:.3f}; at equal n {eq.get('two_sample_auc') or nan:.3f}, "
            f"floor {feq.get('two_sample_auc') or nan:.3f})")


def print_card(res: dict) -> None:
    name = res["model"]
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
    print(recon_line(res["vae_recon"]))
    if "label_fidelity" in res:
        lf = res["label_fidelity"]["pneumonia"]
        print(f"label fidelity (pneumonia AUC): stage 1 {lf['stage1']['auc']:.3f}, + adapter "
              f"{lf['stage1+adapter']['auc']:.3f}")


STATS_NOTE = ("Ratio = synthetic / real mean (for the power bands: the share of real images' power in that "
              "band, in cycles per image); AUC = how well that statistic alone separates the images from real "
              "ones (ROC AUC folded, 0.5 = not at all). Read each beside its real-vs-real floor: two disjoint "
              "sets of real images, the compared one as large as the synthetic set.")


def markdown(res: dict) -> str:
    """The run's header (command, machine, date), the headline metrics when there is an eval
    card, and the image-statistics tables of the reconstructions and the cohort."""
    from cxraug.experiments.quality.image_stats import stats_markdown

    mach, coh = res["machine"], res.get("cohort")
    lines = [f"# Quality card: {res['model']}", "", f"- command: `{res['command']}`",
             f"- machine: {mach['model']}, {mach['cores']} cores, {mach['torch_threads']} torch threads",
             f"- date: {res['date']}"]
    if coh:
        lines.append(f"- cohort: {coh['n']} images {coh['targets']}, memorisation gate rejected "
                     f"{coh['memorisation_fail']}")
    lines.append("")
    if "eval" in res:
        m, f = res["eval"]["metrics"], res["eval"]["floor"]
        lines += [(f"Eval card (real-data judge): FID {m['fid']:.1f} (floor {f['fid']:.1f}), two-sample AUC "
                   f"{res['eval']['two_sample_auc']:.3f} (floor {f['two_sample_auc']:.3f})."), ""]
    if "vae_recon" in res:
        lines += [recon_line(res["vae_recon"]) + ".", ""]
    sections = {"VAE reconstructions of real test images": res["image_stats"]["vae_recon"]}
    if "generator" in res["image_stats"]:
        sections["generator cohort"] = res["image_stats"]["generator"]
    lines += ["## Image statistics", "", STATS_NOTE, "", stats_markdown(sections)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="run folder (with splits.csv)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--name", help="model name for the output files (default: the run folder's)")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--cohort-seed", type=int, default=0,
                    help="the cohort's seed (cxraug synth --seed); another seed draws a new cohort for a "
                         "confirmation card")
    ap.add_argument("--vae-n", type=int, default=300, help="official test images to reconstruct")
    ap.add_argument("--work", type=Path, default=Path("runs/quality"))
    ap.add_argument("--skip-fidelity", action="store_true")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--stats-only", action="store_true",
                      help="image statistics only (no judge, eval card, label fidelity or grid)")
    mode.add_argument("--vae-only", action="store_true",
                      help="the VAE reconstructions only: eval card and image statistics, no cohort")
    ap.add_argument("--vae", type=Path, help="latent space folder to reconstruct with (default: the run's vae/)")
    args = ap.parse_args()
    from guidance_sweep import vae_reconstructions  # a sibling script

    from cxraug.core.precision import cpu_info

    name = args.name or args.model.name
    work = args.work / name
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"model": name, "run": rel(args.model) if args.model.exists() else str(args.model),
                 "data": rel(args.data),
                 "command": shlex.join(["benchmarks/quality_card.py", *sys.argv[1:]]),
                 "machine": cpu_info() | {"torch_threads": torch_threads()},
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    t0 = time.perf_counter()

    if not args.vae_only:
        res["cohort"] = cohort(str(args.model), args.n, work / "cohort", args.cohort_seed)
    vae_reconstructions(str(args.model), args.data, args.vae_n, work / "vae-recon", args.vae)
    res["vae_recon_images"] = {"folder": rel(work / "vae-recon"), "n": args.vae_n, "split": "test",
                               "vae": rel(args.vae) if args.vae else "the run's vae/"}
    out = (stats_only if args.stats_only else vae_only if args.vae_only else full_card)(args, work, res)
    res["seconds"] = time.perf_counter() - t0
    out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(res) + "\n")
    if "eval" in res:
        print_card(res)
    elif "vae_recon" in res:
        print(recon_line(res["vae_recon"]))
    print(markdown(res).split("## Image statistics", 1)[1])
    print(f"-> {rel(out)}, {rel(out.with_suffix('.md'))}")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
