"""VAE reconstruction on the real test split: PSNR and SSIM of decode(encode(x)) against x.

    python benchmarks/vae_recon.py --data ../shared/data/kermany \
        --vae f4-64=runs/kermany-64/vae --vae f8-128=runs/kermany-128/vae [--n 300] [--grid FILE.png]

Each latent space reconstructs the official test images at its own size (posterior mean, no
sampling). Scores are reported at the VAE's own size and, for comparisons across sizes, at the
smallest size of the set (larger reconstructions and their originals area-downsampled to it), so
an f8 VAE at 128 px and an f4 VAE at 64 px are compared on the same 64 px pixels as well.
Writes benchmarks/results/vae_recon.json (no absolute paths) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cxraug.core.precision import cpu_info
from cxraug.data.adapters import load_dataset, resolve_data
from cxraug.data.cache import cached_images
from cxraug.data.reference import downsample
from cxraug.data.transforms import model_to_uint8, uint8_to_model
from cxraug.models.autoencoder import LatentSpace


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(x, y, data_range=255) for x, y in zip(a, b)])


@torch.no_grad()
def reconstruct(space: LatentSpace, images: np.ndarray, batch: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        moments = space.encode_moments(uint8_to_model(np.asarray(images[i:i + batch])))
        out.append(model_to_uint8(space.decode(space.mode(moments))))
    return np.concatenate(out)


def scores(orig: np.ndarray, rec: np.ndarray) -> dict:
    p, s = psnr(orig, rec), ssim(orig, rec)
    return {"psnr_mean": float(p.mean()), "psnr_sd": float(p.std()), "ssim_mean": float(s.mean()),
            "ssim_sd": float(s.std()), "n": len(orig)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--vae", action="append", required=True, help="NAME=FOLDER (repeatable)")
    ap.add_argument("--n", type=int, default=300, help="test images (a fixed random subset)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "vae_recon.json")
    ap.add_argument("--grid", type=Path, help="also write a PNG: 6 test images (top row), then each VAE's reconstructions")
    args = ap.parse_args()
    spaces = {k: LatentSpace.load(v) for k, v in (s.split("=", 1) for s in args.vae)}
    common = min(s.image_size for s in spaces.values())
    ds = load_dataset(resolve_data(args.data))
    test = ds.select(ds.table["split"].to_numpy() == "test")  # the official test split
    pick = np.sort(np.random.default_rng(0).choice(len(test), min(args.n, len(test)), replace=False))
    test = test.select(np.isin(np.arange(len(test)), pick))
    res: dict = {"command": shlex.join(["benchmarks/vae_recon.py", *sys.argv[1:]]),
                 "machine": cpu_info() | {"torch_threads": torch.get_num_threads()},
                 "data": os.path.relpath(resolve_data(args.data)), "split": "test",
                 "common_size": common, "vaes": {}}
    rows = []
    for name, space in spaces.items():
        t0 = time.perf_counter()
        orig, _, _ = cached_images(test, space.image_size, progress=False)
        orig = np.asarray(orig)
        rec = reconstruct(space, orig)
        rows += [orig[:6]] * (not rows) + [rec[:6]]
        row = {"image_size": space.image_size, "downsample": space.downsample,
               "latent_shape": list(space.latent_shape),
               "params": int(sum(p.numel() for p in space.vae.parameters())),
               "own_size": scores(orig, rec)}
        if space.image_size != common:
            row["at_common_size"] = scores(downsample(orig, common), downsample(rec, common))
        else:
            row["at_common_size"] = row["own_size"]
        row["seconds"] = time.perf_counter() - t0
        res["vaes"][name] = row
    print(f"{'VAE':>10} {'size':>5} {'latent':>10} {'PSNR own':>9} {'SSIM own':>9} "
          f"{'PSNR@' + str(common):>9} {'SSIM@' + str(common):>9}")
    for name, r in res["vaes"].items():
        o, c = r["own_size"], r["at_common_size"]
        print(f"{name:>10} {r['image_size']:>5} {'x'.join(map(str, r['latent_shape'])):>10} "
              f"{o['psnr_mean']:9.2f} {o['ssim_mean']:9.3f} {c['psnr_mean']:9.2f} {c['ssim_mean']:9.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    if args.grid:
        from PIL import Image

        side = max(r.shape[-1] for r in rows)  # smaller VAEs' images upsampled to the largest
        big = [np.stack([np.asarray(Image.fromarray(im).resize((side, side), Image.NEAREST)) for im in r])
               for r in rows]
        Image.fromarray(np.concatenate([np.concatenate(list(r), axis=1) for r in big])).save(args.grid)
        print(f"-> {args.grid} (rows: test images, then {', '.join(spaces)})")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
