"""Part 4 of the GPU benchmark: the user's path in subprocesses, ``cxraug train --stage 2 --recipe
recipes/diffcxr-paper.yaml`` on the embedded Kermany sample, the same command with more steps (a
resume), and ``cxraug synth``: wall time and success per step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from gpu_common import RECIPE, REPO, Budget, Sizes, scrub
from gpu_components import Components


def cli_overrides(comp: Components, sizes: Sizes, real_frac: float, steps: tuple[int, int]) -> list[str]:
    """``--set`` pairs: the recipe's own values except steps, data size and the local folders."""
    sets = {"data.real_frac": real_frac, "vae.pretrained": comp.vae,
            "text.max_steps": 1 if sizes.tiny else 2, "text.batch_size": 4 if sizes.tiny else 8,
            "train.steps": steps[0], "adapter.steps": steps[1]}
    if comp.text_encoder == "biomedclip":
        sets["text.encoder_path"] = comp.text_path
    else:
        sets["text.encoder"] = comp.text_encoder
    if sizes.prompts != "mined":
        sets["data.prompts"] = sizes.prompts
    if sizes.tiny:
        sets.update({"data.image_size": sizes.image_size, "vae.image_size": sizes.image_size,
                     "text.max_tokens": sizes.max_tokens, "text.cond_tokens": sizes.cond_tokens,
                     "denoiser.preset": sizes.preset, "sample.steps": 5,
                     "sample.grid_per_prompt": 1})
    if sizes.cli_batch:
        sets.update({"train.batch_size": sizes.cli_batch, "adapter.batch_size": sizes.cli_batch})
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def run_cli(name: str, args: list[str], work: Path, timeout: float) -> dict:
    """One ``cxraug`` command in a subprocess (cwd: the work folder): wall time, success."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [sys.executable, "-m", "cxraug.cli.main", *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              timeout=max(1.0, timeout), check=False)
        rc, tail = proc.returncode, (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
    except subprocess.TimeoutExpired:
        rc, tail = None, [f"timed out after {timeout:.0f} s"]
    rec = {"step": name, "command": scrub("cxraug " + " ".join(args)), "ok": rc == 0,
           "returncode": rc, "wall_s": time.perf_counter() - t0}
    if rc != 0:
        rec["error_tail"] = [scrub(line)[:300] for line in tail]
    return rec


def train_loop_speed(run: Path) -> dict:
    """The samples/s that ``cxraug.diffusion.denoiser_training`` itself logged (last line per stage; the
    window includes the first steps' warm-up)."""
    out = {}
    for stage, name in ((1, "metrics.jsonl"), (2, "metrics_stage2.jsonl")):
        p = run / name
        if p.is_file() and p.read_text().strip():
            last = json.loads(p.read_text().strip().splitlines()[-1])
            out[f"stage{stage}"] = {"step": last["step"], "samples_per_s": last["samples_per_s"]}
    return out


def cli_real_frac(data: str, target: int) -> float:
    """The real fraction that leaves about ``target`` training images (train split ~ 80%)."""
    from cxraug.data.adapters import load_dataset, resolve_data

    n = len(load_dataset(resolve_data(data), "auto"))
    return float(min(1.0, round(target / max(1.0, 0.8 * n), 4)))


def measure_cli(work: Path, comp: Components, sizes: Sizes, data: str, budget: Budget) -> dict:
    """train (vae, text, stage 1, stage 2) -> the same with more steps (resume) -> synth."""
    real_frac = cli_real_frac(data, sizes.cli_images)
    out = {"recipe": "recipes/diffcxr-paper.yaml", "data": scrub(data), "real_frac": real_frac,
           "image_size": sizes.image_size, "prompts": sizes.prompts, "vae": comp.vae_desc,
           "text_encoder": comp.text_encoder, "text_encoder_desc": comp.text_desc, "steps": []}
    train = ["train", "--stage", "2", "--recipe", str(RECIPE), "--data", data, "--out", "run"]
    synth = ["synth", "--model", "./run", "--labels", "pneumonia", "--n", str(sizes.synth_n),
             "--out", "cohort", "--gates", "none", "--batch-size", str(sizes.synth_n),
             "--prompts", sizes.prompts] + (["--steps", "5"] if sizes.tiny else [])
    plan = [("train", train + cli_overrides(comp, sizes, real_frac, sizes.cli_steps)),
            ("resume", train + cli_overrides(comp, sizes, real_frac, sizes.cli_resume_steps)),
            ("synth", synth)]
    for (name, args), cap in zip(plan, sizes.cli_caps_s):
        if not budget.allows(f"cli.{name}", 15):
            out["steps"].append({"step": name, "ok": False, "skipped": "time budget"})
            continue
        rec = run_cli(name, args, work, min(cap, budget.left() - 5))
        if name != "synth":
            rec["train_loop_speed"] = train_loop_speed(work / "run")
        elif rec["ok"]:
            rec["images"] = len(list((work / "cohort" / "images").glob("*.png")))
        out["steps"].append(rec)
    out["all_ok"] = all(s["ok"] for s in out["steps"])
    return out
