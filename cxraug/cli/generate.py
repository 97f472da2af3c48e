"""``cxraug generate``: chest X-rays from report text and/or target labels.

The output folder holds ``generate.json`` (the arguments, written first), ``00000.png``... (each
written under a temporary name and renamed, one batch at a time) and ``generated.csv`` (file,
seed, report; written last). Image ``i`` depends only on its report, labels and seed, so an
interrupted run resumes: the same command makes only the images that are missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from cxraug.cli.common import console

#: The most images one command makes (report texts x --n); a larger set is several commands.
MAX_IMAGES = 1_000_000
MAX_SEED = 2**63 - 1
SETTINGS = "generate.json"


def generate(model: str = typer.Option("kermany-128", "--model", "-m", help="Shipped model name (kermany-128), run folder from cxraug train, or Hugging Face Hub id."),
             report: Optional[list[str]] = typer.Option(None, "--report", help="Report text (repeatable)."),
             labels: Optional[str] = typer.Option(None, "--labels", help="Target observations, e.g. pneumonia,effusion."),
             n: int = typer.Option(8, "--n", help="Images per report."),
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: generated/<labels or report>-<n>); rerunning the same command resumes it."),
             seed: int = typer.Option(0, help="First seed; image i uses seed + i."),
             steps: Optional[int] = typer.Option(None, help="Sampler steps (default: the run's)."),
             guidance: Optional[float] = typer.Option(None, help="Guidance weight (1 = none)."),
             sampler: Optional[str] = typer.Option(None, help="dpm++ or ddim."),
             overwrite: bool = typer.Option(False, "--overwrite")) -> None:
    """Generate chest X-rays from report text and/or target labels."""
    from cxraug.cli.common import check_model_labels, default_folder_name, run_lock, writable_out
    from cxraug.cohorts.store import write_atomic
    from cxraug.core.errors import CxraugError
    from cxraug.data import labels as L

    # 1. Every argument, before any model is loaded or file written.
    _check_numbers(n, seed, steps, guidance, sampler)
    texts = list(report or [])
    if not texts and not labels:
        raise CxraugError("give --report TEXT and/or --labels NAMES")
    if n * len(texts) > MAX_IMAGES:
        raise CxraugError(f"--n {n} x {len(texts)} reports: at most {MAX_IMAGES:,} images per command")
    if seed + n * max(1, len(texts)) - 1 > MAX_SEED:
        raise CxraugError(f"--seed {seed}: image seeds seed + i must stay below 2**63; pass a "
                          "smaller --seed")
    positive = L.parse_label_list(labels) if labels else []
    vec = L.vector(positive=positive) if labels else None
    if not texts:
        from cxraug.data.templates import PromptBuilder

        texts = [PromptBuilder("mined").build(vec, seed=seed)]
    if out is None:
        out = Path("generated") / default_folder_name(labels or "report", n * len(texts))
        console.print(f"output folder: {out}")
    writable_out(out)
    settings = {"model": model, "reports": texts, "labels": positive, "n": n, "seed": seed,
                "steps": steps, "guidance": guidance, "sampler": sampler}
    _check_folder(out, settings, overwrite)

    # 2. The model; the images one batch at a time (those on disk are kept); the list.
    from cxraug.core.precision import default_device
    from cxraug.diffusion.pipeline import DiffCXRPipeline

    pipe = DiffCXRPipeline.from_pretrained(model, device=default_device())
    if vec is not None:
        check_model_labels(pipe, model, vec)
    with run_lock(out, "output"):
        _check_folder(out, settings, overwrite)  # again: another process may have started it
        if overwrite and (out / SETTINGS).is_file():  # a folder cxraug generate made: afresh
            for p in out.glob("[0-9]*.png"):
                p.unlink()
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / SETTINGS, json.dumps(settings, indent=2) + "\n")
        reports = [t for t in texts for _ in range(n)]
        seeds = [seed + i for i in range(len(reports))]
        made = _make_images(pipe, out, reports, seeds, vec, steps, guidance, sampler)
        lines = ["file,seed,report"] + [f"{i:05d}.png,{s},\"{r.replace(chr(34), chr(39))}\""
                                        for i, (s, r) in enumerate(zip(seeds, reports))]
        write_atomic(out / "generated.csv", "\n".join(lines) + "\n")
    adapter = "with DKIM adapter" if pipe.has_adapter else "stage 1 only"
    kept = f", {len(reports) - made} kept from before" if made < len(reports) else ""
    console.print(f"[bold green]{len(reports)} images[/] -> {out} ({adapter}{kept})")


def _check_numbers(n: int, seed: int, steps: int | None, guidance: float | None,
                   sampler: str | None) -> None:
    from cxraug.core.errors import CxraugError

    if n <= 0:
        raise CxraugError(f"--n {n}: must be a positive number of images")
    if n > MAX_IMAGES:
        raise CxraugError(f"--n {n}: at most {MAX_IMAGES:,} images per command")
    if not 0 <= seed <= MAX_SEED:
        raise CxraugError(f"--seed {seed}: must be between 0 and {MAX_SEED}")
    if steps is not None and not 1 <= steps <= 1000:
        raise CxraugError(f"--steps {steps}: must be between 1 and 1000")
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise CxraugError(f"--guidance {guidance}: must be a finite number >= 0 (1 = no guidance)")
    if sampler is not None and sampler not in ("dpm++", "ddim"):
        raise CxraugError(f"--sampler {sampler}: choose dpm++ or ddim")


def _check_folder(out: Path, settings: dict, overwrite: bool) -> None:
    """A new or empty folder; or one this very command started (resume); or ``--overwrite``."""
    from cxraug.cli.common import out_dir_ok
    from cxraug.core.errors import CxraugError

    saved = out / SETTINGS
    if not saved.is_file() or overwrite:
        out_dir_ok(out, overwrite)
        return
    try:
        old = json.loads(saved.read_text())
    except ValueError:
        old = {}
    diff = [k for k in settings if old.get(k) != settings[k]]
    if diff:
        raise CxraugError(f"{out}: holds images made with other arguments ({diff[0]}: "
                          f"{old.get(diff[0])!r} now {settings[diff[0]]!r}); rerun the original "
                          "command to resume, or pass --overwrite, or another --out")


def _make_images(pipe, out: Path, reports: list[str], seeds: list[int], vec, steps, guidance,
                 sampler) -> int:
    """The images not on disk yet, batch by batch, each written atomically; how many were made."""
    import io

    import numpy as np
    from PIL import Image

    from cxraug.cohorts.store import write_atomic
    from cxraug.core.progress import job_progress

    todo = [i for i in range(len(reports)) if not (out / f"{i:05d}.png").is_file()]
    bs = pipe.sample_cfg.batch_size
    with job_progress("generate") as bar:
        task = bar.add_task("generate", total=len(reports), completed=len(reports) - len(todo))
        for start in range(0, len(todo), bs):
            batch = todo[start:start + bs]
            lab = None if vec is None else np.stack([vec] * len(batch))
            images = pipe([reports[i] for i in batch], seeds=[seeds[i] for i in batch],
                          labels=lab, steps=steps, guidance=guidance, sampler=sampler)
            for i, img in zip(batch, images):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG")
                write_atomic(out / f"{i:05d}.png", buf.getvalue())
            bar.update(task, advance=len(batch))
    return len(todo)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
