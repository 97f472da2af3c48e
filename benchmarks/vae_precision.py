"""fp32 vs bf16 (torch.autocast) for training the single-channel VAE, on this machine's CPU.

    python benchmarks/vae_precision.py --data ../shared/data/kermany \
        [--recipe recipes/diffcxr-cpu128-v3.yaml] [--steps 200] [--set vae.KEY=VALUE ...] \
        [--out benchmarks/results/vae_precision.json] [--tiny]

Both precisions run the real training loop (:func:`cxraug.models.vae_train.train_vae`, with the
recipe's ``vae.*`` settings, the perceptual term included when the recipe has it) for ``--steps``
steps on the generator's training split, from the same seed: the same batches, crops and
initial weights. Reported per precision: steps/s (the whole call after an untimed 2-step
warm-up, so oneDNN's kernels are chosen before the clock starts), the training loss of the last
up to 50 steps, and the L1 (and perceptual) distance of reconstructions of ``--n-eval`` held-out
val images, computed in fp32 for both. The JSON holds ``cxraug.core.precision.cpu_info()``
(model, speed flags, cores) beside the ratios: bf16 is fast only on CPUs with bf16 matrix units
(AVX512-BF16, AMX); an AVX2 EPYC took 150x longer for a bf16 matmul. ``suggest`` is bf16 when it
is at least 15 % faster and its held-out L1 within 2 % of fp32's; set ``vae.precision`` to it.

``--tiny`` (tests) shrinks the VAE to the tiny config of the test suite and 32 px images. Time
it only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from cxraug.core import config as C
from cxraug.core.precision import cpu_info, resolve_precision
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.data.splits import splits_for
from cxraug.data.transforms import uint8_to_model
from cxraug.diffusion.config import TINY, DiffCXRConfig
from cxraug.models.autoencoder import META_NAME
from cxraug.models.vae_train import perceptual_term, train_vae

REPO = Path(__file__).resolve().parents[1]
#: The tiny VAE of the tests, and no crops (its images are 32 px).
TINY_SETS = [s for s in TINY if s.startswith(("vae.", "data."))] + ["vae.crop_size=0", "decoder.crop_size=0",
                                                                     "vae.perceptual_weight=0"]


def portable(arg: str) -> str:
    """A command-line word with an absolute path made relative (results hold no local paths)."""
    key, sep, value = arg.rpartition("=")
    return key + sep + os.path.relpath(value) if os.path.isabs(value) else arg


def split_images(data: str, size: int, split_seed: int, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` uint8 images of the generator's patient-level splits (as a run makes them)."""
    ds = splits_for(load_dataset(resolve_data(data)), work / "splits.csv", seed=split_seed)
    train, _, _ = cached_images(ds.where_split("train"), size, progress=False)
    val, _, _ = cached_images(ds.where_split("val"), size, progress=False)
    return np.asarray(train), np.asarray(val)


@torch.no_grad()
def held_out(space, images: np.ndarray, perceptual, batch: int = 16) -> dict:
    """Mean L1 (generator range [-1, 1]) and perceptual distance of posterior-mean
    reconstructions, in fp32."""
    l1, pd, n = 0.0, 0.0, 0
    for i in range(0, len(images), batch):
        x = uint8_to_model(images[i:i + batch])
        rec = space.decode(space.mode(space.encode_moments(x)))
        l1 += float((rec - x).abs().mean()) * len(x)
        if perceptual is not None:
            pd += float(perceptual(rec, x)) * len(x)
        n += len(x)
    out = {"l1": l1 / n, "n": n}
    if perceptual is not None:
        out["perceptual"] = pd / n
    return out


def run(vae_cfg, precision: str, train: np.ndarray, val: np.ndarray, steps: int, work: Path) -> dict:
    """Warm up 2 steps, then time ``steps`` steps of ``train_vae`` at ``precision``."""
    cfg = replace(vae_cfg, precision=precision, scale_samples=vae_cfg.batch_size)
    train_vae(train, replace(cfg, steps=2), progress=False)
    t0 = time.perf_counter()
    space = train_vae(train, replace(cfg, steps=steps), work / precision, progress=False)
    seconds = time.perf_counter() - t0
    record = json.loads((work / precision / META_NAME).read_text())["train"]
    out = {"seconds": seconds, "steps_per_s": steps / seconds,
           "train_recon_loss_last50": record["final_recon_loss"],
           "held_out": held_out(space, val, perceptual_term(cfg))}
    if "final_perceptual" in record:
        out["train_perceptual_last50"] = record["final_perceptual"]
        out["perceptual"] = record["perceptual"]  # the net's name, arch and weights digest
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder (its training split trains the VAE)")
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes" / "diffcxr-cpu128-v3.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe override, e.g. vae.batch_size=8")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--n-eval", type=int, default=64, help="held-out val images for the reconstruction loss")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--tiny", action="store_true", help="tiny VAE on 32 px images (tests)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "vae_precision.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = C.load(DiffCXRConfig, args.recipe, (TINY_SETS if args.tiny else []) + args.sets)
    vae_cfg = cfg.vae
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, val = split_images(args.data, vae_cfg.image_size, cfg.data.split_seed, work)
        val = val[np.sort(np.random.default_rng(0).permutation(len(val))[:args.n_eval])]
        results = {p: run(vae_cfg, p, train, val, args.steps, work) for p in ("fp32", "bf16")}
    fp32, bf16 = results["fp32"], results["bf16"]
    net = fp32.pop("perceptual", None)  # the same net for both
    bf16.pop("perceptual", None)
    speed = bf16["steps_per_s"] / fp32["steps_per_s"]
    loss = bf16["held_out"]["l1"] / fp32["held_out"]["l1"]
    words = [portable(a) for a in (sys.argv[1:] if argv is None else argv)]
    res = {"command": shlex.join(["benchmarks/vae_precision.py", *words]),
           "cpu": cpu_info(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "auto_precision": resolve_precision("auto", "cpu"),
           "bf16_over_fp32_steps_per_s": speed, "bf16_over_fp32_held_out_l1": loss,
           "suggest": "bf16" if speed >= 1.15 and loss <= 1.02 else "fp32",
           "recipe": args.recipe.name, "tiny": args.tiny, "steps": args.steps,
           "train_images": len(train), "perceptual": net,
           "vae": {k: v for k, v in asdict(vae_cfg).items()  # the net as recorded: no local paths
                   if k not in ("perceptual_net", "pretrained", "subfolder", "precision")},
           "fp32": fp32, "bf16": bf16}
    print(f"CPU: {res['cpu']['model']} ({', '.join(res['cpu']['flags'])}), {res['threads']} threads; "
          f"{args.steps} steps of the {res['recipe']} VAE on {len(train)} training images")
    for p, r in results.items():
        print(f"  {p}: {r['steps_per_s']:.3f} steps/s, train loss {r['train_recon_loss_last50']:.4f}, "
              f"held-out L1 {r['held_out']['l1']:.4f} ({r['held_out']['n']} val images)")
    print(f"bf16 / fp32: {speed:.2f}x steps/s, {loss:.3f}x held-out L1 -> suggest vae.precision={res['suggest']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res, args.out.name))
    print(f"-> {args.out} and {args.out.with_suffix('.md').name}")
    return res


def markdown(res: dict, json_name: str) -> str:
    """The results page: the command, the CPU, one row per precision, the ratios."""
    cpu = res["cpu"]
    lines = ["# VAE training: fp32 vs bf16 on this CPU", "",
             f"Written by `benchmarks/vae_precision.py`; every number is in [`{json_name}`]({json_name}).", "",
             f"Command: `{res['command']}`  ",
             f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}), {res['threads']} torch threads, torch {res['torch']}.", "",
             f"{res['steps']} steps of the `{res['recipe']}` VAE on {res['train_images']} training images, "
             "both precisions from the same seed (the same batches and initial weights); held-out "
             "losses are computed in fp32.", "",
             "| precision | steps/s | train loss (last 50 steps) | held-out L1 | held-out perceptual |",
             "|---|---|---|---|---|"]
    for p in ("fp32", "bf16"):
        r = res[p]
        per = r["held_out"].get("perceptual")
        lines.append(f"| {p} | {r['steps_per_s']:.3f} | {r['train_recon_loss_last50']:.4f} | "
                     f"{r['held_out']['l1']:.4f} | {'-' if per is None else f'{per:.4f}'} |")
    lines += ["", f"bf16 / fp32: **{res['bf16_over_fp32_steps_per_s']:.2f}x** steps/s, "
              f"{res['bf16_over_fp32_held_out_l1']:.3f}x held-out L1. Suggested `vae.precision`: "
              f"**{res['suggest']}** (bf16 when at least 15 % faster with held-out L1 within 2 %). "
              "Measured on one CPU: another CPU (AVX2 only, or AMX) changes the ratio, so rerun it on "
              "the training machine."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from cxraug.core.errors import CxraugError

    try:
        main()
    except CxraugError as e:  # a wrong --data, --recipe or --set: one line, no traceback
        sys.exit(f"error: {e}")
