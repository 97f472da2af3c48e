"""Training samples/s and sampling images/s of a Diff-CXR run's denoiser, measured in one process.

    python benchmarks/diffusion_speed.py --model runs/kermany-cpu [--steps 20] [--n 32]

Training: the run's U-ViT (fresh weights of the same config) on random latents and real condition
shapes at the recipe's batch size, AdamW step included. Sampling: the run's pipeline (stage 1 +
adapter if present) at the recipe's sampler settings, decode included. Writes
benchmarks/results/diffusion_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--n", type=int, default=32, help="images sampled")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "diffusion_speed.json")
    args = ap.parse_args()

    from cxraug.core import config as C
    from cxraug.diffusion.config import DiffCXRConfig
    from cxraug.diffusion.pipeline import DiffCXRPipeline
    from cxraug.models.uvit import UViT

    cfg = C.load(DiffCXRConfig, args.model / "config.yaml")
    pipe = DiffCXRPipeline.from_pretrained(args.model)
    den = UViT(**pipe.denoiser.args)
    b = cfg.train.batch_size
    c, h, w = pipe.space.latent_shape
    ctx = torch.randn(b, pipe.encoder.cond_tokens, pipe.encoder.width)
    opt = torch.optim.AdamW(den.parameters(), lr=1e-4)

    def step() -> None:
        x = torch.randn(b, c, h, w)
        t = torch.randint(0, 1000, (b,))
        loss = F.mse_loss(den(x, t, ctx), x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    train_s = time.perf_counter() - t0

    reports = ["There is pneumonia."] * args.n
    pipe(reports[:4], seeds=list(range(4)))  # warm-up
    t0 = time.perf_counter()
    pipe(reports, seeds=list(range(args.n)))
    sample_s = time.perf_counter() - t0
    res = {"model": str(args.model), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "batch_size": b, "train_steps_per_s": args.steps / train_s,
           "train_samples_per_s": args.steps * b / train_s,
           "sampler": cfg.sample.sampler, "sampler_steps": cfg.sample.steps,
           "guidance": cfg.sample.guidance, "adapter": pipe.has_adapter,
           "sampling_images_per_s": args.n / sample_s}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    for k, v in res.items():
        print(f"{k:>24}: {v:.3f}" if isinstance(v, float) else f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
