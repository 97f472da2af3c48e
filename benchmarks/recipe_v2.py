"""The cheap wins of the CPU recipe v2, measured on this machine in one run (ratios within it).

    python benchmarks/recipe_v2.py [--steps 8] [--out benchmarks/results/recipe_v2_speed.json]

1. VAE training step: today's f4 VAE at 64 px vs the f8 VAE at 128 px (both give 16x16x4
   latents, so the denoiser costs the same).
2. U-ViT (cpu-192) training step with 77 vs 32 vs 16 report tokens (the sequence is 64 latent
   patches + 1 time token + the report tokens).
3. bf16 vs fp32: one 1024x1024 matmul, and what ``auto`` precision picks on this CPU (the CPU
   model and its bf16 flags are recorded).

Reconstruction quality of the two VAEs is measured by ``benchmarks/vae_recon.py`` on trained
VAEs (it needs their run folders).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def cpu_name() -> dict:
    from cxraug.core.precision import cpu_info

    info = cpu_info()
    return {"model": info["model"], "cores": torch.get_num_threads(), "flags": info["flags"],
            "bf16_flags": [f for f in info["flags"] if "bf16" in f or f.startswith("amx")],
            "avx512": "avx512f" in info["flags"]}


def timed(fn, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def vae_step(block_out_channels: list[int], size: int, batch: int):
    import torch.nn.functional as F

    from cxraug.models.vae_train import VAEConfig, build_vae

    vae = build_vae(VAEConfig(image_size=size, block_out_channels=block_out_channels)).vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, size, size) * 2 - 1

    def step():
        post = vae.encode(x).latent_dist
        loss = F.l1_loss(vae.decode(post.sample()).sample, x) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step, sum(p.numel() for p in vae.parameters())


def uvit_step(tokens: int, batch: int):
    from cxraug.models.uvit import PRESETS, UViT

    args = dict(PRESETS["cpu-192"], num_context_tokens=tokens)
    model = UViT(**args).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, t = torch.randn(batch, 4, 16, 16), torch.randint(0, 1000, (batch,))
    ctx = torch.randn(batch, tokens, args["context_dim"])

    def step():
        loss = (model(x, t, ctx) - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    from cxraug.core.precision import resolve_precision

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--skip-bf16", action="store_true", help="skip the bf16 matmul (seconds to minutes on AVX2-only CPUs)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/recipe_v2_speed.json"))
    args = ap.parse_args()
    res: dict = {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "auto_precision": resolve_precision("auto")}

    f4, n4 = vae_step([32, 64, 128], 64, 16)
    f8, n8 = vae_step([32, 64, 128, 128], 128, 16)
    f8c, _ = vae_step([32, 64, 128, 128], 64, 16)  # the same VAE on 64 px crops (vae.crop_size)
    res["vae_step_s"] = {"f4_64px": timed(f4, args.steps), "f8_128px": timed(f8, args.steps),
                         "f8_128px_on_64px_crops": timed(f8c, args.steps)}
    res["vae_params"] = {"f4_64px": n4, "f8_128px": n8}
    res["vae_f8_128_over_f4_64"] = res["vae_step_s"]["f8_128px"] / res["vae_step_s"]["f4_64px"]
    res["vae_f8_crops_over_f4_64"] = (res["vae_step_s"]["f8_128px_on_64px_crops"]
                                      / res["vae_step_s"]["f4_64px"])
    v = res["vae_step_s"]
    print(f"VAE step (batch 16): f4@64 {v['f4_64px']:.3f}s, f8@128 {v['f8_128px']:.3f}s "
          f"({res['vae_f8_128_over_f4_64']:.2f}x), f8 on 64 px crops {v['f8_128px_on_64px_crops']:.3f}s "
          f"({res['vae_f8_crops_over_f4_64']:.2f}x)")

    res["uvit_step_s"] = {str(k): timed(uvit_step(k, 32), args.steps) for k in (77, 32, 16)}
    base = res["uvit_step_s"]["77"]
    res["uvit_speedup_vs_77"] = {k: base / v for k, v in res["uvit_step_s"].items()}
    for k, v in res["uvit_step_s"].items():
        print(f"U-ViT cpu-192 step (batch 32), {k:>2} report tokens: {v:.3f}s ({base / v:.2f}x vs 77)")

    a = torch.randn(1024, 1024)
    res["matmul_1024_s"] = {"fp32": timed(lambda: a @ a, 5)}
    if not args.skip_bf16:
        b = a.bfloat16()
        res["matmul_1024_s"]["bf16"] = timed(lambda: b @ b, 1, warmup=1)
        res["bf16_over_fp32_matmul"] = res["matmul_1024_s"]["bf16"] / res["matmul_1024_s"]["fp32"]
        print(f"1024^2 matmul: fp32 {res['matmul_1024_s']['fp32']*1e3:.1f} ms, bf16 "
              f"{res['matmul_1024_s']['bf16']*1e3:.1f} ms ({res['bf16_over_fp32_matmul']:.1f}x the fp32 time)")
    print(f"CPU: {res['cpu']['model']} bf16 flags {res['cpu']['bf16_flags'] or 'none'} -> auto = "
          f"{res['auto_precision']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
