"""How hard does each decoder-tuning term pull? Gradient norms at the decoder's output layer.

    python benchmarks/decoder_loss_balance.py --model runs/kermany-128-v3 \
        --vae runs/kermany-128-v3.vae-untuned [--batches 4] [--out decoder_loss_balance]

On ``--batches`` batches of the run's training images, cropped and batched as its recipe's
``decoder.*`` says, decoded through a posterior sample of the (frozen) encoder: the value of L1, of
the perceptual term at ``decoder.perceptual_weight`` (when the recipe has one) and of the
spectral term at weight 1, and the norm of each one's gradient at the decoder's last convolution
(the layer LDM's adaptive GAN weight is measured at). ``spectral_weight_matching_perceptual``: the
spectral weight whose gradient there equals the weighted perceptual term's, the rule that set
``decoder.spectral_weight`` in ``recipes/diffcxr-cpu128-v4.yaml``. Nothing is trained.
Writes ``benchmarks/results/OUT.json`` (command, machine, date, no machine paths) and prints it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from cxraug.core import config as C
from cxraug.core.paths import relative_paths
from cxraug.core.precision import cpu_info
from cxraug.core.runs import RunDir
from cxraug.diffusion.config import DiffCXRConfig
from cxraug.diffusion.stages import train_images
from cxraug.models.autoencoder import LatentSpace, first_output
from cxraug.models.perceptual import PerceptualLoss
from cxraug.models.spectral import SpectralLoss
from cxraug.models.vae_train import as_dataset, random_crop

HERE = Path(__file__).resolve().parent


def balance(space: LatentSpace, images, dcfg, batches: int = 4, seed: int = 0) -> dict:
    """Mean value and gradient norm at ``decoder.conv_out.weight`` of each term, over ``batches``."""
    space.freeze()
    last = space.vae.decoder.conv_out.weight
    last.requires_grad_(True)
    terms = {"l1": lambda r, x: F.l1_loss(r, x), "spectral": SpectralLoss()}
    if dcfg.perceptual_weight:
        perceptual = PerceptualLoss.from_classifier(dcfg.perceptual_net, "decoder.perceptual_net")
        terms["perceptual_weighted"] = lambda r, x: dcfg.perceptual_weight * perceptual(r, x)
    data, gen = as_dataset(images), torch.Generator().manual_seed(seed)
    sums = {k: {"value": 0.0, "grad_norm": 0.0} for k in terms}
    for _ in range(batches):
        rows = torch.randint(0, len(data), (dcfg.batch_size,), generator=gen).tolist()
        x = random_crop(torch.stack([first_output(data[i]) for i in rows]), dcfg.crop_size, gen)
        with torch.no_grad():
            z = space.vae.encode(x).latent_dist.sample(gen)
        recon = space.vae.decode(z).sample
        for name, term in terms.items():
            value = term(recon, x)
            grad = torch.autograd.grad(value, last, retain_graph=True)[0]
            sums[name]["value"] += value.item() / batches
            sums[name]["grad_norm"] += grad.norm().item() / batches
    out = {"terms": sums}
    if "perceptual_weighted" in sums:
        out["spectral_weight_matching_perceptual"] = (sums["perceptual_weighted"]["grad_norm"]
                                                      / sums["spectral"]["grad_norm"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="run folder: its config.yaml and training images")
    ap.add_argument("--vae", type=Path, help="latent space folder (default: the run's vae/)")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="decoder_loss_balance", help="file stem under --out-dir")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    command = shlex.join(["benchmarks/decoder_loss_balance.py", *(sys.argv[1:] if argv is None else argv)])
    run = RunDir(args.model)
    cfg = C.load(DiffCXRConfig, run.root / "config.yaml")
    images, _ = train_images(cfg, run, progress=False)
    space = LatentSpace.load(args.vae or run.vae)
    rec = {"date": dt.date.today().isoformat(), "command": command,
           "machine": cpu_info() | {"torch_threads": torch.get_num_threads()},
           "model": args.model.name, "vae": (args.vae or run.vae).name, "batches": args.batches,
           "batch_size": cfg.decoder.batch_size, "crop_size": cfg.decoder.crop_size,
           "perceptual_weight": cfg.decoder.perceptual_weight,
           **balance(space, images, cfg.decoder, args.batches, args.seed)}
    rec = relative_paths(rec, args.out_dir)  # no machine paths in a committed result
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.out}.json").write_text(json.dumps(rec, indent=2) + "\n")
    print(json.dumps(rec["terms"], indent=1), rec.get("spectral_weight_matching_perceptual"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
