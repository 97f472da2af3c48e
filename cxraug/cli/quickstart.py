"""``cxraug quickstart``: the whole loop on the embedded real sample, sized for a 2-core CPU.

1. data: the embedded Kermany sample (410 real images), patient-level splits, nested subsets;
2. generator: the shipped 128 px model ``kermany-128`` (trained on the Kermany training split,
   never on the sample's test images); with ``--train``, a small Diff-CXR trained here instead;
3. cohort: label-balanced synthetic pneumonia / negative images with the memorisation gate;
4. bench: real, real+dup, real+synth and synth->real classifiers at 1% and 100% of the real
   training patients, each trained the same 40 optimiser steps (the bench protocol, sized
   down), test mAUC with bootstrap intervals, table and plot.

The ``--train`` generator is a few minutes of CPU training at 64 px: a smoke test of the training
pipeline whose images are blobs, not a usable generator (``recipes/diffcxr-cpu128.yaml`` on a full
dataset makes one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxraug.cli.common import MAX_SEED, DataOpt, check_number, console, writable_out

#: The quick-start generator: recipe overrides on top of the defaults (see diffcxr-cpu.yaml).
GENERATOR = [
    "data.image_size=64", "vae.image_size=64", "vae.block_out_channels=[16, 32, 64]",
    "vae.steps=150", "vae.batch_size=16", "vae.lr=1e-3", "vae.scale_samples=128",
    "text.max_tokens=48", "text.epochs=1", "text.batch_size=32", "text.image_model=resnet10t",
    "text.lr=1e-4", "denoiser.preset=cpu-192", "train.steps=300", "train.batch_size=16",
    "train.lr=5e-4", "train.warmup_steps=30", "train.checkpoint_every=100", "train.sample_every=0",
    "train.ema_decay=0.99", "adapter.steps=60", "adapter.batch_size=16", "adapter.warmup_steps=10",
    "adapter.checkpoint_every=60", "adapter.sample_every=0", "adapter.ema_decay=0.9",
    "sample.steps=15", "sample.grid_per_prompt=6",
]
BENCH = ["arms=[real, real+dup, real+synth, synth->real]", "real_fracs=[0.01, 1.0]", "image_size=64",
         "classifier.arch=resnet18", "steps=40", "n_boot=500"]


def quickstart(data: Optional[str] = DataOpt,
               out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Run folder."),
               n_synth: int = typer.Option(300, "--n-synth", help="Synthetic images to generate."),
               seed: int = typer.Option(0, help="Seed for training, the cohort and the classifiers."),
               model: str = typer.Option("kermany-128", "--model", "-m", help="Generator: shipped model name, run folder or hub id."),
               train_generator: bool = typer.Option(False, "--train", help="Train a small 64 px generator on the sample first (a pipeline smoke test; its images are blobs) and use it instead of --model.")) -> None:
    """Synthesise a cohort with the shipped generator, and bench real, real+dup, real+synth and
    synth->real classifiers at 1% and 100% real data on the embedded sample (under 10 minutes on
    2 cores). Rerunning resumes; every step's output stays in the run folder."""
    writable_out(out)
    check_number("--seed", seed, 0, MAX_SEED)
    from cxraug.cli.bench import print_report
    from cxraug.cohorts.config import SynthConfig
    from cxraug.cohorts.generate import MAX_IMAGES, synthesize

    check_number("--n-synth", n_synth, 1, MAX_IMAGES)  # before step 1 trains or loads anything
    from cxraug.core import config as C
    from cxraug.diffusion.config import DiffCXRConfig
    from cxraug.diffusion.pipeline import DiffCXRPipeline, write_grid
    from cxraug.diffusion.prompts import validation_prompts
    from cxraug.diffusion.stages import train_run
    from cxraug.experiments import bench as B

    data = data or "sample:kermany"
    bcfg = C.load(B.BenchConfig, None, [f"data={data}", *BENCH, f"classifier.seed={seed}"])
    console.rule("1/3 generator")
    if train_generator:  # each stage is skipped when already trained: rerunning resumes
        cfg = C.load(DiffCXRConfig, None, [f"data.data={data}", f"train.seed={seed}", *GENERATOR])
        model = str(train_run(cfg, out / "generator", ["vae", "text", "1", "2"]).root)
    pipe = DiffCXRPipeline.from_pretrained(model)
    splits = Path(model) / "splits.csv" if (Path(model) / "splits.csv").is_file() else out / "bench" / "splits.csv"
    splits.parent.mkdir(parents=True, exist_ok=True)
    grid = write_grid(pipe, validation_prompts(B.load_real_splits(bcfg, splits, bcfg.image_size, bcfg.split_seed).train, "mined"),
                      out / "generator_samples.png", pipe.sample_cfg)
    console.print(f"generator: {model}; sample grid: {grid}")
    # 3. Cohort.
    console.rule("2/3 synthetic cohort")
    scfg = SynthConfig(labels=["pneumonia"], n=n_synth, seed=seed, gates=["memorisation"])
    synthesize(scfg, model, out / "cohort")
    # 4. Bench, on the generator's own splits (its training images never reach the test split).
    console.rule("3/3 bench")
    report = B.run_bench(bcfg, out / "bench", synth=out / "cohort", model=model)
    print_report(report, out / "bench")


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
