"""`cxraug synth` against a plain diffusers-style sampling loop, on the same trained run.

    python benchmarks/synth_speed.py --model runs/kermany-cpu [--classifier DIR] [--n 32]

Both sides get the same prompts, DKIM hints, label vectors and per-image seeds (the cohort plan)
and write PNGs. The baseline is how a diffusers pipeline would be run without care for speed:
DDIM, 50 steps, float32, the conditional and unconditional guidance passes as two separate
forward calls, under ``torch.no_grad`` (not ``inference_mode``). `cxraug synth` runs with its
defaults except ``--steps`` (DPM-Solver++ 2M, one doubled batch for guidance, inference mode,
bf16 matrix products where the CPU has them, streamed writes); its time is the generation loop
(sampling, gates if any, writing) after the models are loaded, like the baseline's.

Reported, measured in one run: images/s of both and their ratio (and of synth forced to fp32,
to separate the solver/batching gain from the bf16 one); how far synth's images are from the
baseline's (same seeds, same probability-flow ODE, so a good fast solver lands close);
label fidelity of both if ``--classifier`` is given (share passing the fidelity gate fitted on
the run's real val split, mean target score); and the peak resident memory of a whole
``cxraug synth`` process at ``n`` and ``10 n`` images (with ``--memory-steps`` sampler steps, as
memory does not depend on them). Results go to benchmarks/results/synth_speed.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxraug.cohorts.config import SynthConfig
from cxraug.cohorts.generate import OBS, preview, synthesize
from cxraug.core import config as C
from cxraug.core.precision import cpu_info, resolve_precision
from cxraug.data.transforms import load_grayscale, model_to_uint8
from cxraug.diffusion.pipeline import DiffCXRPipeline

OUT = Path(__file__).parent / "results" / "synth_speed.json"


@torch.no_grad()
def baseline(pipe: DiffCXRPipeline, plan, batch_size: int, out: Path, steps: int = 50,
             guidance: float = 2.0) -> float:
    """Plain loop: DDIM, fp32, two guidance passes per step, no_grad. Returns seconds."""
    from diffusers import DDIMScheduler

    from cxraug.data.templates import paper_hint
    from cxraug.diffusion.sampling import initial_noise

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for start in range(0, len(plan), batch_size):
        rows = plan.iloc[start:start + batch_size]
        b = len(rows)
        scheduler = DDIMScheduler.from_config(pipe.train_scheduler.config, clip_sample=False,
                                              set_alpha_to_one=False)
        scheduler.set_timesteps(steps)
        ctx = pipe.encoder.encode(rows["prompt"].tolist())[1].float()
        null = pipe.null.expand(b, *pipe.null.shape)
        hint = (pipe.encoder.encode([paper_hint(v) for v in rows[OBS].to_numpy(np.float32)])[1].float()
                if pipe.has_adapter else None)
        x = initial_noise(rows["seed"].tolist(), pipe.space.latent_shape) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            tt = t.expand(b)
            if hint is None:
                eps_c, eps_u = pipe.model(x, tt, ctx), pipe.model(x, tt, null)
            else:
                eps_c, eps_u = pipe.model(x, tt, ctx, hint), pipe.model(x, tt, null, null)
            x = scheduler.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
        for idx, img in zip(rows["index"], model_to_uint8(pipe.space.decode(x))):
            Image.fromarray(img).save(out / f"{idx:06d}.png")
    return time.perf_counter() - t0


def fidelity(gate, folder: Path, files: list[str], targets: list[str]) -> dict:
    images = np.stack([load_grayscale(folder / f) for f in files])
    recs = gate.check(images, targets)
    pos = [r["fidelity_score"] for r, t in zip(recs, targets) if t != "negative"]
    return {"pass_rate": float(np.mean([r["fidelity"] == "pass" for r in recs])),
            "mean_target_score": float(np.mean(pos)) if pos else None}


def peak_memory(model: str, labels: str, n: int, steps: int, batch_size: int, out: Path) -> dict:
    """Peak RSS of a whole `cxraug synth` process (its own getrusage at exit)."""
    code = ("import resource, sys; from cxraug.cli.main import main; rc = main(sys.argv[1:]); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    cmd = [sys.executable, "-c", code, "synth", "--model", model, "--labels", labels, "--n", str(n),
           "--out", str(out), "--steps", str(steps), "--batch-size", str(batch_size),
           "--gates", "memorisation"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    kb = int(next(ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("MAXRSS")))
    return {"n": n, "peak_rss_mb": round(kb / 1024, 1), "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="generator: shipped name (kermany-128), run folder or hub id")
    ap.add_argument("--labels", default="pneumonia")
    ap.add_argument("--n", type=int, default=32, help="images per side for the speed comparison")
    ap.add_argument("--steps", type=int, default=20, help="synth's DPM-Solver++ steps")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--classifier", default=None, help="real-data classifier for label fidelity")
    ap.add_argument("--memory-n", type=int, default=None, help="n of the memory test (default --n)")
    ap.add_argument("--memory-steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--note", default="", help="free text stored with the results")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    cfg = C.from_dict(SynthConfig, {"labels": a.labels.split(","), "n": a.n, "steps": a.steps,
                                    "batch_size": a.batch_size, "gates": []})
    plan = preview(cfg, a.model)
    pipe = DiffCXRPipeline.from_pretrained(a.model)
    guidance = pipe.sample_cfg.guidance
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. Speed, same plan on both sides (baseline first, then synth, in this process).
        t_base = baseline(pipe, plan, a.batch_size, tmp / "baseline", guidance=guidance)
        s = synthesize(cfg, a.model, tmp / "synth", progress=False)
        ips_base, ips_synth = len(plan) / t_base, len(plan) / s["seconds"]
        # the same, all in fp32: how much of the gain is the solver and batching alone
        cfg32 = C.from_dict(SynthConfig, C.to_dict(cfg) | {"precision": "fp32"})
        s32 = synthesize(cfg32, a.model, tmp / "synth32", progress=False)
        files = [f"{i:06d}.png" for i in plan["index"]]

        def diff(x: Path, y: Path) -> dict:
            d = np.stack([np.abs(load_grayscale(x / f).astype(int) - load_grayscale(y / f).astype(int))
                          for f in files])
            return {"mean_abs_gray_levels": round(float(d.mean()), 3),
                    "p99_abs_gray_levels": float(np.percentile(d, 99))}

        result = {
            "model": str(Path(a.model).resolve()), "note": a.note, "n": len(plan),
            "batch_size": a.batch_size,
            "threads": torch.get_num_threads(), "machine": cpu_info(),
            "baseline": {"sampler": "ddim", "steps": 50, "precision": "fp32", "guidance": guidance,
                         "guidance_passes": "two separate", "grad_mode": "no_grad",
                         "seconds": round(t_base, 2), "images_per_s": round(ips_base, 4)},
            "synth": {"sampler": cfg.sampler, "steps": a.steps, "precision": resolve_precision("auto"),
                      "guidance": guidance, "guidance_passes": "one doubled batch",
                      "grad_mode": "inference_mode", "seconds": round(s["seconds"], 2),
                      "images_per_s": round(ips_synth, 4)},
            "speedup": round(ips_synth / ips_base, 2),
            "synth_fp32": {"seconds": round(s32["seconds"], 2),
                           "images_per_s": round(len(plan) / s32["seconds"], 4),
                           "speedup": round(t_base / s32["seconds"], 2)},
            "pixels": {"synth_vs_baseline": diff(tmp / "synth" / "images", tmp / "baseline"),
                       "synth_fp32_vs_baseline": diff(tmp / "synth32" / "images", tmp / "baseline"),
                       "synth_bf16_vs_fp32": diff(tmp / "synth" / "images", tmp / "synth32" / "images")},
        }
        # 2. Label fidelity of both, with the gate fitted on the run's real val split.
        if a.classifier:
            from cxraug.cohorts.gates import build_gates
            from cxraug.cohorts.generator import LoadedGenerator

            fcfg = C.from_dict(SynthConfig, {"labels": a.labels.split(","), "n": a.n,
                                             "classifier": a.classifier, "gates": ["fidelity"]})
            gen = LoadedGenerator.open(a.model)
            gates, info = build_gates(fcfg.gates, fcfg.gate, fcfg.labels, fcfg.classifier, gen, None,
                                      gen.training_set())
            targets = plan["target"].tolist()
            result["fidelity"] = {
                "thresholds": info["fidelity"]["thresholds"],
                "baseline": fidelity(gates.fidelity, tmp / "baseline", files, targets),
                "synth": fidelity(gates.fidelity, tmp / "synth" / "images", files, targets),
                "synth_fp32": fidelity(gates.fidelity, tmp / "synth32" / "images", files, targets)}
        # 3. Peak memory of whole synth processes at n and 10 n (flat = streamed writes).
        mn = a.memory_n or a.n
        result["memory"] = [peak_memory(a.model, a.labels, k, a.memory_steps, a.batch_size,
                                        tmp / f"mem{k}") for k in (mn, 10 * mn)]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
