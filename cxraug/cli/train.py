"""``cxraug train`` and ``cxraug generate``: Diff-CXR training and sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxraug.cli.common import DryRunOpt, RecipeOpt, SetOpt, console


def train(component: str = typer.Argument("all", help="vae, text, denoiser (stage 1 or 2), or all"),
          stage: Optional[int] = typer.Option(None, "--stage", help="Denoiser stage: 1 (U-ViT) or 2 (DKIM adapter)."),
          recipe: Optional[Path] = RecipeOpt, overrides: Optional[list[str]] = SetOpt,
          data: Optional[str] = typer.Option(None, "--data", "-d", help="Dataset (sets data.data)."),
          out: Path = typer.Option(Path("runs/diffcxr"), "--out", "-o", help="Run folder."),
          from_run: Optional[Path] = typer.Option(None, "--from", help="Stage-1 run to add stage 2 to (same as --out)."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
          dry_run: bool = DryRunOpt) -> None:
    """Train Diff-CXR. Missing prerequisites (VAE, report encoder, stage 1) are trained first;
    rerunning the same command resumes from the last checkpoint."""
    from cxraug import config as C
    from cxraug.diffusion.config import DiffCXRConfig
    from cxraug.diffusion.run import train as run_train
    from cxraug.errors import CxraugError

    sets = list(overrides or []) + ([f"data.data={data}"] if data else [])
    if from_run is not None:
        saved = from_run / "config.yaml"
        if not saved.is_file():
            raise CxraugError(f"{from_run}: not a cxraug run folder (no config.yaml)")
        recipe, out = recipe or saved, from_run
    cfg = C.load(DiffCXRConfig, recipe, sets)
    stages = {"vae": ["vae"], "text": ["text"], "all": ["vae", "text", "1", "2"]}.get(component)
    if component == "denoiser" or stage is not None:
        if stage not in (1, 2):
            raise CxraugError(f"--stage {stage}: must be 1 (U-ViT) or 2 (DKIM adapter)")
        stages = [str(stage)]
    if stages is None:
        raise CxraugError(f"unknown component {component!r}; choose vae, text, denoiser or all")
    if dry_run:
        console.print(C.dump(cfg))
        return
    run = run_train(cfg, out, stages, overwrite)
    console.print(f"[bold green]done[/]: {run.root} (model card: {run.root / 'README.md'})")


def generate(model: str = typer.Option("kermany-128", "--model", "-m", help="Shipped model name (kermany-128), run folder from cxraug train, or Hugging Face Hub id."),
             report: Optional[list[str]] = typer.Option(None, "--report", help="Report text (repeatable)."),
             labels: Optional[str] = typer.Option(None, "--labels", help="Target observations, e.g. pneumonia,effusion."),
             n: int = typer.Option(8, "--n", help="Images per report."),
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: generated/<labels or report>-<n>)."),
             seed: int = typer.Option(0, help="First seed; image i uses seed + i."),
             steps: Optional[int] = typer.Option(None, help="Sampler steps (default: the run's)."),
             guidance: Optional[float] = typer.Option(None, help="Guidance weight (1 = none)."),
             sampler: Optional[str] = typer.Option(None, help="dpm++ or ddim."),
             overwrite: bool = typer.Option(False, "--overwrite")) -> None:
    """Generate chest X-rays from report text and/or target labels."""
    import math

    import numpy as np
    from PIL import Image

    from cxraug.cli.common import check_model_labels, default_folder_name, out_dir_ok
    from cxraug.data import labels as L
    from cxraug.diffusion.pipeline import DiffCXRPipeline
    from cxraug.errors import CxraugError

    if n <= 0:
        raise CxraugError(f"--n {n}: must be a positive number of images")
    if seed < 0:
        raise CxraugError(f"--seed {seed}: must be >= 0")
    if steps is not None and not 1 <= steps <= 1000:
        raise CxraugError(f"--steps {steps}: must be between 1 and 1000")
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise CxraugError(f"--guidance {guidance}: must be a finite number >= 0 (1 = no guidance)")
    if sampler is not None and sampler not in ("dpm++", "ddim"):
        raise CxraugError(f"--sampler {sampler}: choose dpm++ or ddim")
    vec = L.vector(positive=L.parse_label_list(labels)) if labels else None
    texts = list(report or [])
    if not texts:
        if vec is None:
            raise CxraugError("give --report TEXT and/or --labels NAMES")
        from cxraug.data.templates import PromptBuilder

        texts = [PromptBuilder("mined").build(vec, seed=seed)]
    if out is None:
        out = Path("generated") / default_folder_name(labels or "report", n * len(texts))
        console.print(f"output folder: {out}")
    out_dir_ok(out, overwrite)
    from cxraug.precision import default_device

    pipe = DiffCXRPipeline.from_pretrained(model, device=default_device())
    if vec is not None:
        check_model_labels(pipe, model, vec)
    reports = [t for t in texts for _ in range(n)]
    seeds = [seed + i for i in range(len(reports))]
    lab = None if vec is None else np.stack([vec] * len(reports))
    images = pipe(reports, seeds=seeds, labels=lab, steps=steps, guidance=guidance, sampler=sampler)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["file,seed,report"]
    for i, (img, s, r) in enumerate(zip(images, seeds, reports)):
        Image.fromarray(img).save(out / f"{i:05d}.png")
        lines.append(f"{i:05d}.png,{s},\"{r.replace(chr(34), chr(39))}\"")
    (out / "generated.csv").write_text("\n".join(lines) + "\n")
    adapter = "with DKIM adapter" if pipe.has_adapter else "stage 1 only"
    console.print(f"[bold green]{len(images)} images[/] -> {out} ({adapter})")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("generate")(generate)
