"""Where do contrast and fine detail get decided? Two denoisers on one latent space, one trajectory.

    python benchmarks/expert_handoff.py --structure runs/v3zt --model runs/kermany-128-v4 \
        --data ../shared/data/kermany --cohort runs/quality/kermany-128-v4/cohort/manifest.csv \
        --k 0,4,8,12 --n 400 --out expert_handoff

A diagnostic, not a sampler cxraug ships. The ``--structure`` model (e.g. a zero-terminal-SNR
v-prediction fine-tune: real contrast, little detail) draws the first K of the ``--model``'s
sampler steps (DPM-Solver++, each model at its own guidance); at the handoff it predicts the clean
latent and the noise at its current timestep, the sample is recomposed at the ``--model``'s
timestep with the nearest alpha_bar, and the ``--model`` (e.g. an epsilon model: detail, too little
contrast) draws the rest from there. K = 0 is the ``--model`` alone. ``--control`` also hands the
``--model`` to itself after the largest K: the handoff alone must change nothing measurable.

``--structure real``: the layout comes from real images instead of a model. The first K steps
are skipped and the sample at the model's K-th timestep is an official test image's latent noised
by the forward process (K = 0: the training signal leak of that very image at the first timestep),
each paired with a cohort row of its label; the ``--model`` draws the rest. Does the model finish
a real layout with real detail?

Both models must share the latent space (``train.init_from`` runs do); images are decoded by the
``--model``'s decoder. Prompts, DKIM hints and seeds are the first ``--n`` rows of a cohort
manifest (``cxraug synth``'s, e.g. a quality card's), without its gates. Each K's images are
compared with the official test images on the quality card's image statistics (power per band,
Laplacian variance, 1st / 99th percentiles; ``--stats-only``'s reference).
Writes ``benchmarks/results/OUT.json`` and ``.md`` (command, machine, date, no machine paths).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxraug.core.paths import relative_paths
from cxraug.core.precision import cpu_info
from cxraug.data import labels as L
from cxraug.data.transforms import model_to_uint8
from cxraug.diffusion.denoiser import Condition
from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.sampling import guidance_condition, guided_output, initial_noise, make_sampler
from cxraug.experiments.quality.image_stats import STATS_SIZE, stats_section

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from quality_card import official_test_images  # a sibling script

SHOWN = ("power_1-4", "power_4-8", "power_8-16", "power_16-32", "power_32-48", "power_48-64", "laplacian_var",
         "pixel_std")


def _clean_and_noise(pipe: DiffCXRPipeline, out: torch.Tensor, x: torch.Tensor, ab: torch.Tensor):
    """``(x0, eps)`` from a model output at ``alpha_bar`` ``ab``, whatever its prediction type."""
    kind = pipe.train_scheduler.config.prediction_type
    if kind == "epsilon":
        return (x - (1 - ab).sqrt() * out) / ab.sqrt(), out
    if kind == "v_prediction":
        return ab.sqrt() * x - (1 - ab).sqrt() * out, (1 - ab).sqrt() * x + ab.sqrt() * out
    raise ValueError(f"prediction type {kind!r} is not handled here")


@torch.inference_mode()
def handoff(first: DiffCXRPipeline | None, second: DiffCXRPipeline, k: int, prompts: list[str],
            hints: list[str], seeds: list[int], real: torch.Tensor | None = None) -> np.ndarray:
    """``uint8 [N, H, W]`` images: ``first`` draws the first ``k`` of ``second``'s sampler steps
    (at ``first``'s guidance), ``second`` the rest (at its own); ``k`` 0 is ``second`` alone.
    With ``real`` latents ``[N, C, h, w]`` instead of ``first``, they are noised to ``second``'s
    ``k``-th timestep and ``second`` draws from there."""
    cond = Condition(second.encode(prompts), second.encode(hints))
    null = Condition(second.null, second.null)
    first = first or second  # real layouts: second draws every step it draws
    g1, g2 = first.sample_cfg.guidance, second.sample_cfg.guidance
    cond1, cond2 = guidance_condition(cond, null, g1), guidance_condition(cond, null, g2)
    steps = second.sample_cfg.steps
    s1 = make_sampler(first.sample_cfg.sampler, first.train_scheduler, first.sample_cfg.karras_sigmas)
    s2 = make_sampler(second.sample_cfg.sampler, second.train_scheduler, second.sample_cfg.karras_sigmas)
    s1.set_timesteps(steps)
    s2.set_timesteps(steps)
    x = initial_noise(seeds, second.space.latent_shape)
    start = 0
    if real is not None:  # the forward process of real latents at the k-th timestep
        ab = second.train_scheduler.alphas_cumprod[int(s2.timesteps[k])]
        x, start = ab.sqrt() * real + (1 - ab).sqrt() * x, k
        s2.set_begin_index(k)
    elif k:
        x = x * s1.init_noise_sigma
        for t in s1.timesteps[:k]:
            x = s1.step(guided_output(first.denoise, s1, x, t, cond1, g1), t, x).prev_sample
        # hand off: recompose the sample at second's timestep with the nearest alpha_bar
        t = s1.timesteps[k]
        ab = first.train_scheduler.alphas_cumprod[int(t)]
        x0, eps = _clean_and_noise(first, guided_output(first.denoise, s1, x, t, cond1, g1), x, ab)
        ab2 = second.train_scheduler.alphas_cumprod[s2.timesteps.long()]
        start = int((ab2 - ab).abs().argmin())
        x = ab2[start].sqrt() * x0 + (1 - ab2[start]).sqrt() * eps
        s2.set_begin_index(start)
    else:
        x = x * s2.init_noise_sigma
    for t in s2.timesteps[start:]:
        x = s2.step(guided_output(second.denoise, s2, x, t, cond2, g2), t, x).prev_sample
    return model_to_uint8(second.space.decode(x))


def real_latents(pipe: DiffCXRPipeline, data: str, manifest: pd.DataFrame) -> torch.Tensor:
    """Official test images' latents (posterior means), one per cohort row, of the row's label
    (pneumonia or not), each image used once, in the split's order."""
    from cxraug.data.adapters import load_dataset, resolve_data
    from cxraug.data.transforms import load_grayscale, resize_square, uint8_to_model

    ds = load_dataset(resolve_data(data))
    test = ds.select(ds.table["split"].to_numpy() == "test")
    sick = test.labels[:, L.OBSERVATIONS.index("Pneumonia")] == 1
    queues = {True: list(np.flatnonzero(sick)), False: list(np.flatnonzero(~sick))}
    rows = [queues[bool(v == 1)].pop(0) for v in manifest["Pneumonia"].fillna(0)]
    size = pipe.space.image_size
    x = np.stack([resize_square(load_grayscale(test.paths[i]), size, mode="crop") for i in rows])
    with torch.inference_mode():
        return torch.cat([pipe.space.mode(pipe.space.encode_moments(uint8_to_model(x[i:i + 32])))
                          for i in range(0, len(x), 32)])


def row(name: str, k: int, real: np.ndarray, images: np.ndarray, seconds: float) -> dict:
    st = stats_section(real, images, seed=0)["synthetic"]["stats"]
    return {"name": name, "k": k, "n": len(images), "seconds": round(seconds, 1),
            "ratio": {s: st[s]["ratio"] for s in SHOWN},
            "p1": st["p1"]["compared"], "p99": st["p99"]["compared"],
            "real_p1": st["p1"]["real"], "real_p99": st["p99"]["real"]}


def markdown(rec: dict) -> str:
    head = "| images | " + " | ".join(SHOWN) + " | p1 | p99 |"
    lines = [f"# Expert handoff: {rec['structure']} then {rec['model']}", "",
             f"Written by `benchmarks/expert_handoff.py`; every number is in [`{rec['out']}.json`]({rec['out']}.json).", "",
             f"Command: `{rec['command']}`  ", (f"Machine: {rec['machine']['model']} ({', '.join(rec['machine']['flags'])}), {rec['machine']['cores']} cores; "
             f"{rec['date']}."), "",
             (f"{rec['n']} images per row (prompts, hints and seeds of `{rec['cohort']}`), {rec['steps']} "
             f"sampler steps in all; K = " + ("steps skipped: the sample at the K-th timestep is an official test image "
             "of the row's label noised by the forward process (K = 0: its signal leak at the first timestep)"
             if rec["structure"] == "real" else f"steps drawn by `{rec['structure']}` before the handoff") + ". Ratios: "
             "synthetic / real mean against the official test images (p1 / p99: the percentiles themselves; "
             f"real: {rec['rows'][0]['real_p1']:.3f} / {rec['rows'][0]['real_p99']:.3f})."), "",
             head, "|" + "---|" * (len(SHOWN) + 3)]
    for r in rec["rows"]:
        lines.append(f"| {r['name']} | " + " | ".join(f"{r['ratio'][s]:.2f}" for s in SHOWN)
                     + f" | {r['p1']:.3f} | {r['p99']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--structure", required=True, help="run folder that draws the first K steps, or 'real': "
                    "official test images' latents noised to the K-th timestep")
    ap.add_argument("--model", required=True, help="run folder that draws the rest (its decoder decodes)")
    ap.add_argument("--data", required=True, help="the real dataset (its official test split is the reference)")
    ap.add_argument("--cohort", type=Path, required=True, help="a cohort manifest.csv: prompt, hint, seed")
    ap.add_argument("--k", default="0,4,8,12", help="comma-separated K values")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--control", action="store_true", help="also hand the --model to itself at the largest K")
    ap.add_argument("--out", default="expert_handoff", help="file stem under --out-dir")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    command = shlex.join(["benchmarks/expert_handoff.py", *(sys.argv[1:] if argv is None else argv)])
    ks = [int(k) for k in args.k.split(",")]
    second = DiffCXRPipeline.from_pretrained(args.model)
    manifest = pd.read_csv(args.cohort, dtype={"id": str}).head(args.n)
    real = official_test_images(args.data, STATS_SIZE)
    layouts = None
    if args.structure == "real":
        first, layouts = None, real_latents(second, args.data, manifest)
    else:
        first = DiffCXRPipeline.from_pretrained(args.structure)
        first.space = second.space  # one latent space; the second model's decoder
    # (name, first model, K, real layouts or None)
    runs = [(f"K={k}", first if k else second, k, layouts) for k in ks]
    if layouts is not None:
        runs.insert(0, (f"{Path(args.model).name} alone", second, 0, None))
    if args.control:
        runs.append((f"control: K={max(ks)}, {Path(args.model).name} to itself", second, max(ks), None))
    rows = []
    for name, a, k, lay in runs:
        t0, images = time.perf_counter(), []
        for i in range(0, len(manifest), args.batch_size):
            part = manifest.iloc[i:i + args.batch_size]
            images.append(handoff(a, second, k, part["prompt"].tolist(), part["hint"].tolist(),
                                  [int(s) for s in part["seed"]],
                                  None if lay is None else lay[i:i + args.batch_size]))
        rows.append(row(name, k, real, np.concatenate(images), time.perf_counter() - t0))
        print(name, {s: round(v, 3) for s, v in rows[-1]["ratio"].items()}, "p1", round(rows[-1]["p1"], 4), flush=True)
    rec = {"out": args.out, "date": dt.date.today().isoformat(), "command": command,
           "machine": cpu_info() | {"torch_threads": torch.get_num_threads()},
           "structure": Path(args.structure).name, "model": Path(args.model).name,
           "cohort": "/".join(args.cohort.parts[-3:]), "n": len(manifest), "steps": second.sample_cfg.steps,
           "guidance": {"structure": first.sample_cfg.guidance if first else None,
                        "model": second.sample_cfg.guidance}, "rows": rows}
    rec = relative_paths(rec, args.out_dir)  # no machine paths in a committed result
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.out}.json").write_text(json.dumps(rec, indent=2) + "\n")
    (args.out_dir / f"{args.out}.md").write_text(markdown(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
