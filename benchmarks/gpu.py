"""The GPU path of Diff-CXR, measured: one prepared script for one CUDA GPU, at most 8 minutes.

    python benchmarks/gpu.py [--out benchmarks/results/gpu.json]     # a CUDA machine, paper sizes
    python benchmarks/gpu.py --tiny [--out gpu.json]                 # anywhere: tiny, CPU, seconds

What it measures, in this order (one function per measurement; a part whose estimate does not fit
in what is left of the time budget is skipped and listed under ``skipped``):

1. ``peak_matmul``: the device's dense matrix-product rate (bf16 8192^3 on CUDA, CUDA events,
   after warm-up). Every utilisation figure below is against this measured peak.
2. ``train``: one training step of the paper-preset U-ViT (stage 1) and of the DKIM adapter on the
   frozen U-ViT (stage 2), as ``cxraug.diffusion.denoiser_training`` does it: the loop's own loss
   object (``cxraug.diffusion.loss.DiffusionLoss``: timestep, noise and condition-dropout draws,
   noising, fp32 MSE) under bf16 autocast, backward, grad-norm clip, fused AdamW, EMA update; clean
   latents and conditions pre-drawn on the device; at the largest batch that fits up to 256.
   Eager without and with gradient checkpointing, then ``torch.compile`` (last: optional). FLOPs
   of one forward+backward are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the
   eager model without checkpointing at the same batch (recomputation is not useful work):
   MFU = FLOPs/step / step time / peak.
3. ``sample``: 256 px images through ``DiffCXRPipeline`` (DPM-Solver++ 50 steps, guidance as one
   doubled batch, the adapter, VAE decode; the denoiser under bf16 autocast as ``cxraug synth``
   runs it) at batch 64: images/s against the FLOP ceiling (measured peak / FLOPs per image,
   counted over one whole pipeline call), and a plain two-pass diffusers-style loop on the same
   models (conditional and unconditional forward as two calls per step,
   DPMSolverMultistepScheduler) as the baseline.
4. ``cli``: the user's path in subprocesses: ``cxraug train --stage 2 --recipe
   recipes/diffcxr-paper.yaml`` for a few dozen steps per stage on the embedded Kermany sample
   (upsampled to 256 px by the loader), with an SD-VAE-shaped autoencoder and a BiomedCLIP-shaped
   report encoder built from their configs with random weights in the work folder; the same
   command with more steps (resume); ``cxraug synth`` for a few images. Wall time and success
   per step, and the samples/s that the training loop itself logged.

Writes one JSON (``--out``, default ``benchmarks/results/gpu.json``; no absolute paths; rewritten
after every part, so a run killed from outside still leaves what it measured) and prints a short
table. ``--tiny`` runs the same functions with tiny configs on the CPU (tiny U-ViT preset, 64 px,
tiny VAE and text towers, ``torch.compile`` with the ``eager`` backend: the capture runs, no C++
build; the paper's fixed prompt templates instead of the mined bank) and writes its JSON to a new
temporary folder unless ``--out`` is given: a CPU run is never a result of the checkout.
``tests/benchmarks/test_gpu_bench.py`` runs it.

The parts live beside this script: ``gpu_common.py`` (sizes, budget, timing), ``gpu_components.py``
(the SD-VAE- and BiomedCLIP-shaped folders), ``gpu_train.py`` (1 and 2), ``gpu_sample.py`` (3) and
``gpu_cli.py`` (4); this file runs them in order and writes the results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):  # cxraug from a checkout without installing it; the gpu_* parts
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

T_IMPORT = time.perf_counter()  # the budget counts from here, imports included

import torch
from gpu_cli import measure_cli
from gpu_common import _SCRUB, GPU, REPO, TINY, Budget, Sizes, first_line, reset_memory, scrub
from gpu_components import build_components
from gpu_sample import measure_sampling
from gpu_train import measure_peak_matmul, measure_train


def cpu_name() -> str:
    from cxraug.core.precision import cpu_info

    info = cpu_info()
    return f"{info['model']} ({', '.join(info['flags']) or 'no AVX2'})"


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    import diffusers
    import transformers

    import cxraug

    env = {"device": {"type": device.type, "name": cpu_name(), "cpu_threads": torch.get_num_threads()},
           "cpu": cpu_name(),
           "versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                        "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                        "cxraug": cxraug.__version__},
           "matmul_dtype": str(dtype).replace("torch.", ""),
           "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                    "cudnn": torch.backends.cudnn.allow_tf32}}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env["device"].update(name=p.name, capability=f"{p.major}.{p.minor}",
                             memory_gib=round(p.total_memory / 2**30, 1),
                             multiprocessors=p.multi_processor_count)
    with contextlib.suppress(ImportError):
        import open_clip

        env["versions"]["open_clip"] = open_clip.__version__
    return env


def print_table(res: dict) -> None:
    def f(v, spec=".1f"):
        return "-" if v is None else format(v, spec)

    env = res["environment"]
    print(f"\n{env['device']['name']} ({res['mode']}), torch {env['versions']['torch']}, "
          f"wall {res['wall_s']:.0f} s of {res['budget_s']:.0f} s")
    pm = res.get("peak_matmul") or {}
    print(f"peak matmul {pm.get('n')}^3 {pm.get('dtype')}: {f(pm.get('tflops'))} TFLOP/s")
    print(f"{'train step':28s} {'batch':>5s} {'samples/s':>10s} {'MFU':>6s} {'mem GiB':>8s}")
    for v in (res.get("train") or {}).get("variants", []):
        name = (f"stage {v['stage']} {'compiled' if v['compile'] else 'eager'}"
                f"{' +ckpt' if v['checkpointing'] else ''}")
        if v["status"] != "ok":
            print(f"{name:28s} {v['status']}: {v.get('error', '')[:70]}")
            continue
        print(f"{name:28s} {v['batch']:5d} {v['samples_per_s']:10.1f} {v['mfu']:6.1%} "
              f"{f(v['peak_memory_gib']):>8s}")
    s = res.get("sample") or {}
    if s.get("pipeline"):
        p = s["pipeline"]
        print(f"sampling {s['image_size']} px x{s['batch']}, {s['steps']} steps: pipeline "
              f"{p['images_per_s']:.2f} img/s ({p['fraction_of_flop_ceiling']:.1%} of the "
              f"{s['ceiling_images_per_s']:.1f} img/s FLOP ceiling); two-pass "
              f"{s['two_pass_baseline']['images_per_s']:.2f} img/s; ratio {s['speedup_vs_two_pass']:.2f}")
    for st in (res.get("cli") or {}).get("steps", []):
        msg = "" if st["ok"] else "  " + (st.get("error_tail") or [st.get("skipped", "")])[-1][:90]
        print(f"cli {st['step']:7s} {'ok' if st['ok'] else 'FAILED'} {f(st.get('wall_s'))} s{msg}")
    for e in res.get("errors", []):
        print(f"error in {e['part']}: {e['error'][:100]}")
    for sk in res.get("skipped", []):
        print(f"skipped {sk['part']}: {sk['reason']}")


def guarded(res: dict, part: str, fn, *args):
    """Run one part; a failure is recorded (first line) instead of ending the script."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        res.setdefault("errors", []).append({"part": part, "error": first_line(e)})
        return None


def train_variant(res: dict, stage: int, checkpointing: bool, compiled: bool, sizes: Sizes,
                  device: torch.device, dtype: torch.dtype, budget: Budget, skip: set[str],
                  cache: dict) -> None:
    """One row of ``train.variants`` (or of ``skipped``). ``cache`` holds FLOP counts per
    (stage, batch) and, per (stage, checkpointing), the eager batch the compiled run reuses."""
    name = f"train.stage{stage}{'.compiled' if compiled else ''}{'.ckpt' if checkpointing else ''}"
    if "train" in skip or (compiled and "compile" in skip):
        budget.skipped.append({"part": name, "reason": "--skip"})
        return
    if not budget.allows(name, (15 if sizes.tiny else 120) if compiled else (5 if sizes.tiny else 25)):
        return
    try:
        v = measure_train(stage, checkpointing, compiled, sizes, device, dtype,
                          res["peak_matmul"]["tflops"], cache.setdefault("flops", {}),
                          batch=cache.get((stage, checkpointing)) if compiled else None)
        cache.setdefault((stage, checkpointing), v["batch"])
    except Exception as e:  # noqa: BLE001
        v = {"stage": stage, "compile": sizes.compile_backend if compiled else False,
             "checkpointing": checkpointing, "status": "failed", "error": first_line(e)}
        reset_memory(device)
    res["train"]["variants"].append(v)


def run_parts(res: dict, sizes: Sizes, device: torch.device, dtype: torch.dtype, budget: Budget,
              work: Path, data: str, skip: set[str], save) -> None:
    """The measurements in order of importance; compiled training variants come last."""
    @contextlib.contextmanager
    def part(name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            res["part_wall_s"][name] = round(time.perf_counter() - t0, 2)
            save()

    res["part_wall_s"] = {}
    # 1. The device's peak: the yardstick of every utilisation figure.
    with part("peak_matmul"):
        res["peak_matmul"] = measure_peak_matmul(device, dtype, sizes)
    peak = res["peak_matmul"]["tflops"]
    # 2. Training steps, eager, without and with gradient checkpointing.
    res["train"] = {
        "preset": sizes.preset,
        "step": "cxraug.diffusion.loss.DiffusionLoss (timestep, noise and condition-dropout "
                "draws from a CPU generator, noising, forward under bf16 autocast (fp32 on the "
                "CPU), fp32 MSE on epsilon), backward, clip_grad_norm 1.0, AdamW (fused on CUDA; "
                "lr 2e-4, wd 0.03, betas 0.9/0.9), EMA update (cxraug.core.training.ema_model); "
                "clean latents and conditions pre-drawn on the device",
        "flops": "FlopCounterMode over one eager forward+backward without checkpointing at the "
                 "measured batch (model FLOPs); mfu = flops_per_step / step time / peak_matmul",
        "variants": []}
    cache: dict = {}
    with part("train_eager"):
        for stage, ckpt in ((1, False), (2, False), (1, True), (2, True)):
            train_variant(res, stage, ckpt, False, sizes, device, dtype, budget, skip, cache)
    # 3. + 4. Sampling and the CLI path need the SD-VAE- and BiomedCLIP-shaped folders.
    comps = None
    if not {"sample", "cli"} <= skip:
        with part("components"):
            comps = guarded(res, "components", build_components, work, sizes)
            res["components"] = asdict(comps) if comps else None
    if comps and "sample" not in skip and budget.allows("sample", 10 if sizes.tiny else 60):
        with part("sample"):
            res["sample"] = guarded(res, "sample", measure_sampling, work, comps, sizes, device,
                                    dtype, peak)
    if comps and "cli" not in skip and budget.allows("cli", 20 if sizes.tiny else 150):
        with part("cli"):
            res["cli"] = guarded(res, "cli", measure_cli, work, comps, sizes, data, budget)
    # 2b. torch.compile (optional: each compilation costs about a minute on a GPU).
    with part("train_compiled"):
        for stage, ckpt in sizes.compiled:
            train_variant(res, stage, ckpt, True, sizes, device, dtype, budget, skip, cache)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny configs on the CPU, in seconds")
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON (default benchmarks/results/gpu.json; --tiny: gpu.json in a new "
                         "temporary folder)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run (default 480; --tiny 600)")
    ap.add_argument("--data", default="sample:kermany",
                    help="data of the CLI run (default: the embedded Kermany sample)")
    ap.add_argument("--prompts", choices=("mined", "paper"), default=None,
                    help="prompt text of the CLI run (default: the recipe's mined bank, built from "
                         "torchxrayvision's IU reports; --tiny: the paper's fixed templates)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="folder for the built components and the CLI run (default: temporary)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--skip", default="", help="parts to skip, comma-separated: train, compile, "
                                               "sample, cli")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.tiny:
        print("benchmarks/gpu.py needs a CUDA GPU; without one, run it with --tiny "
              "(the same code paths, tiny configs on the CPU)", file=sys.stderr)
        return 2

    sizes = TINY if args.tiny else GPU
    if args.out is None:  # a tiny CPU run never overwrites the checkout's GPU result
        args.out = (Path(tempfile.mkdtemp(prefix="cxraug-gpu-tiny-")) / "gpu.json" if args.tiny
                    else REPO / "benchmarks" / "results" / "gpu.json")
    if args.prompts:
        sizes = replace(sizes, prompts=args.prompts)
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    budget = Budget(args.budget or sizes.budget_s, T_IMPORT if __name__ == "__main__" else None)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cxraug-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    _SCRUB[:] = [(str(work.resolve()), "<work>"), (str(work), "<work>"), (str(REPO), "<repo>"),
                 (str(Path.home()), "~")]
    res: dict = {"schema": 1, "mode": "tiny (CPU)" if sizes.tiny else "cuda",
                 "budget_s": budget.total, "sizes": asdict(sizes),
                 "environment": environment(device, dtype)}

    def save() -> None:
        res["skipped"] = budget.skipped
        res["wall_s"] = time.perf_counter() - budget.t0
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")

    try:
        run_parts(res, sizes, device, dtype, budget, work, args.data, skip, save)
    finally:
        save()
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(res)
    print(f"\nwrote {scrub(str(args.out.resolve()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
