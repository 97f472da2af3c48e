"""Speed ratios, each measured within one run of this script (the machines are noisy):

1. synth vs plain loop  -- images/s of `cxraug synth` against a plain diffusers-style loop on the
                            same model (benchmarks/synth_speed.py does the measuring);
2. denoiser efficiency  -- achieved FLOP/s of a U-ViT training step (2 FLOPs per MAC, forward +
                            backward = 3x forward, MACs counted as in benchmarks/macs.py) as a
                            fraction of this device's measured fp32 matrix-multiply peak;
3. classifier pipeline  -- training images/s with the real data pipeline (uint8 memmap ->
                            augment -> model) vs the same tensors already in memory;
4. synth memory         -- peak RSS of synth at n and 10n (from synth_speed.py).

    python benchmarks/speed.py [--model RUN] [--quick]

Writes benchmarks/results/speed.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def matmul_peak(n: int = 1024, reps: int = 10) -> float:
    """Measured fp32 GEMM FLOP/s on this device (best of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def denoiser_efficiency(preset: str = "cpu-192", batch: int = 32, steps: int = 8) -> dict:
    import thop
    from macs import attention_macs

    from cxraug.models.uvit import PRESETS, UViT

    args = dict(PRESETS[preset])
    model = UViT(**args)
    x = torch.randn(1, args["in_channels"], args["latent_size"], args["latent_size"])
    ctx = torch.randn(1, args["num_context_tokens"], args["context_dim"])
    t = torch.tensor([500])
    macs, _ = thop.profile(UViT(**args), inputs=(x, t, ctx), verbose=False)
    macs += attention_macs(UViT(**args), (x, t, ctx))
    flops_step = 3 * 2 * macs * batch  # forward + backward (~2x forward)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xb, cb = x.repeat(batch, 1, 1, 1), ctx.repeat(batch, 1, 1)
    tb = torch.randint(0, 1000, (batch,))

    def step():
        loss = F.mse_loss(model(xb, tb, cb), xb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    peak = matmul_peak()
    return {"preset": preset, "batch": batch, "gmacs_forward_per_image": macs / 1e9,
            "step_s": dt, "achieved_gflops": flops_step / dt / 1e9, "matmul_peak_gflops": peak / 1e9,
            "fraction_of_peak": flops_step / dt / peak}


def classifier_pipeline(n: int = 768, size: int = 64, steps: int = 12) -> dict:
    import tempfile

    from cxraug.classify.data import ArraySet
    from cxraug.classify.train import ClassifierConfig, train_classifier

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        mm = np.lib.format.open_memmap(Path(tmp) / "x.npy", "w+", np.uint8, (n, size, size))
        mm[:] = rng.integers(0, 255, (n, size, size), dtype=np.uint8)
        mm.flush()
        images = np.load(Path(tmp) / "x.npy", mmap_mode="r")
        y = (rng.random((n, 1)) < 0.5).astype(np.float32)
        pids = np.arange(n).astype(str)
        train, val = ArraySet(images, y, pids), ArraySet(np.asarray(images[:64]), y[:64], pids[:64])
        out = {}
        for mode in (False, True):
            cfg = ClassifierConfig(arch="resnet18", image_size=size, max_steps=steps, max_epochs=100,
                                   eval_every=10 ** 6, patience=0, in_memory=mode)
            _, hist = train_classifier(train, val, cfg, None, False, label_names=["Pneumonia"])
            out["in_memory" if mode else "pipeline"] = hist["train_images_per_s"]
    return {"pipeline_images_per_s": out["pipeline"], "in_memory_images_per_s": out["in_memory"],
            "pipeline_over_in_memory": out["pipeline"] / out["in_memory"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="generator for the synth ratios: shipped name, run folder or hub id (skipped without)")
    ap.add_argument("--quick", action="store_true", help="fewer steps (CI)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "speed.json")
    args = ap.parse_args()
    res: dict = {"threads": torch.get_num_threads()}
    res["denoiser"] = denoiser_efficiency(steps=3 if args.quick else 8)
    res["classifier"] = classifier_pipeline(steps=6 if args.quick else 12)
    if args.model is not None:
        synth_json = args.out.with_name("synth_speed.json")
        cmd = [sys.executable, str(HERE / "synth_speed.py"), "--model", str(args.model),
               "--out", str(synth_json)] + (["--n", "8", "--memory-n", "8"] if args.quick else [])
        subprocess.run(cmd, check=True)
        res["synth"] = json.loads(synth_json.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    d, c = res["denoiser"], res["classifier"]
    print(f"denoiser step: {d['achieved_gflops']:.1f} GFLOP/s = {d['fraction_of_peak']:.1%} of the "
          f"measured matmul peak ({d['matmul_peak_gflops']:.1f} GFLOP/s)")
    print(f"classifier: {c['pipeline_images_per_s']:.0f} img/s with the data pipeline vs "
          f"{c['in_memory_images_per_s']:.0f} in memory (ratio {c['pipeline_over_in_memory']:.2f})")
    if "synth" in res:
        s = res["synth"]
        print(f"synth: {s.get('speedup')}x the plain loop's images/s; memory {s.get('memory')}")


if __name__ == "__main__":
    main()
