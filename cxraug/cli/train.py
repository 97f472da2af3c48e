"""``cxraug train`` and ``cxraug generate``: Diff-CXR training and sampling, and ``cxraug train
classifier`` (a real-data classifier for the fidelity gate and ``cxraug eval``)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from cxraug.cli.common import DryRunOpt, RecipeOpt, SetOpt, console


class Component(str, Enum):
    vae = "vae"
    decoder = "decoder"
    text = "text"
    denoiser = "denoiser"
    all = "all"
    classifier = "classifier"


CLF = "train classifier"  # help panel of the classifier-only options


def train(component: Component = typer.Argument(
              Component.all, help="vae, decoder (sharpen the VAE's decoder; decoder.steps), text, "
              "denoiser (stage 1 or 2) or all: Diff-CXR; classifier: "
              "a timm classifier on real data, for cxraug eval / synth --classifier."),
          stage: Optional[int] = typer.Option(None, "--stage", help="Denoiser stage: 1 (U-ViT) or 2 (DKIM adapter)."),
          recipe: Optional[Path] = RecipeOpt, overrides: Optional[list[str]] = SetOpt,
          data: Optional[str] = typer.Option(None, "--data", "-d", help="Dataset (sets data.data; classifier: data)."),
          out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/diffcxr; classifier: runs/classifier)."),
          from_run: Optional[Path] = typer.Option(None, "--from", help="Stage-1 run to add stage 2 to (same as --out)."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
          dry_run: bool = DryRunOpt,
          labels: Optional[str] = typer.Option(None, "--labels", rich_help_panel=CLF, help="Observations to predict, e.g. pneumonia,effusion (default: all with >= 10 positives in train and test)."),
          arch: Optional[str] = typer.Option(None, "--arch", rich_help_panel=CLF, help="timm model name (default resnet18)."),
          image_size: Optional[int] = typer.Option(None, "--image-size", rich_help_panel=CLF, help="Square input side (default 64)."),
          epochs: Optional[int] = typer.Option(None, "--epochs", rich_help_panel=CLF, help="Maximum epochs (default 20; early stopping on val mAUC)."),
          seed: Optional[int] = typer.Option(None, "--seed", rich_help_panel=CLF, help="Classifier seed (default 0)."),
          splits: Optional[Path] = typer.Option(None, "--splits", rich_help_panel=CLF, help="Reuse a run's splits.csv (e.g. a generator run's, so the classifier is tested on images the generator never saw; default: made with split_seed).")) -> None:
    """Train Diff-CXR (vae, decoder, text, denoiser, all) or a real-data classifier (classifier).

    Diff-CXR: missing prerequisites (VAE, report encoder, stage 1) are trained first; rerunning
    the same command resumes from the last checkpoint.

    Classifier: cxraug train classifier --data DATA --out runs/clf trains on the train split
    (patient-level splits, as cxraug bench), selects on val and writes runs/clf/model (pass it,
    or runs/clf, to cxraug eval / synth --classifier) and runs/clf/metrics.json (val and test
    AUC). --set keys: labels, min_positive, policy, split_seed, classifier.lr, classifier.batch_size...
    """
    from cxraug.cli.common import writable_out
    from cxraug.core import config as C
    from cxraug.core.errors import CxraugError

    clf_only = {"--labels": labels, "--arch": arch, "--image-size": image_size, "--epochs": epochs,
                "--seed": seed, "--splits": splits}
    if component is Component.classifier:
        if stage is not None or from_run is not None:
            raise CxraugError("--stage and --from are Diff-CXR options; cxraug train classifier "
                              "takes neither")
        return _train_classifier(recipe, list(overrides or []), data, out, overwrite, dry_run,
                                 labels=labels, arch=arch, image_size=image_size, epochs=epochs,
                                 seed=seed, splits=splits)
    given = [k for k, v in clf_only.items() if v is not None]
    if given:
        raise CxraugError(f"{', '.join(given)}: only for cxraug train classifier")
    out = out or Path("runs/diffcxr")
    sets = list(overrides or []) + ([f"data.data={data}"] if data else [])
    if from_run is not None:
        saved = from_run / "config.yaml"
        if not saved.is_file():
            raise CxraugError(f"{from_run}: not a cxraug run folder (no config.yaml)")
        recipe, out = recipe or saved, from_run
    if not dry_run:
        writable_out(out)  # before torch and diffusers are imported
    from cxraug.diffusion.config import DiffCXRConfig

    cfg = C.load(DiffCXRConfig, recipe, sets)
    stages = {"vae": ["vae"], "decoder": ["decoder"], "text": ["text"],
              "all": ["vae", "decoder", "text", "1", "2"]}.get(component.value)
    if component is Component.decoder and cfg.decoder.steps <= 0:
        raise CxraugError("cxraug train decoder: decoder.steps is 0; pass e.g. --set decoder.steps=3000")
    if component is Component.denoiser or stage is not None:
        if stage is None:
            raise CxraugError("cxraug train denoiser needs --stage 1 (U-ViT) or --stage 2 (DKIM adapter)")
        if stage not in (1, 2):
            raise CxraugError(f"--stage {stage}: must be 1 (U-ViT) or 2 (DKIM adapter)")
        stages = [str(stage)]
    if dry_run:
        console.print(C.dump(cfg))
        return
    from cxraug.diffusion.stages import train_run

    run = train_run(cfg, out, stages, overwrite)
    console.print(f"[bold green]done[/]: {run.root} (model card: {run.root / 'README.md'})")


def _train_classifier(recipe: Path | None, overrides: list[str], data: str | None,
                      out: Path | None, overwrite: bool, dry_run: bool, **options) -> None:
    """cxraug train classifier: a timm classifier on a dataset's train split (val for selection);
    ``options``: labels, arch, image_size, epochs, seed, splits (None: the config's)."""
    import filecmp

    from cxraug.cli.common import out_dir_ok, writable_out
    from cxraug.core import config as C
    from cxraug.core.errors import CxraugError

    splits = options["splits"]
    if splits is not None and not Path(splits).is_file():
        raise CxraugError(f"--splits {splits}: no such file; pass the splits.csv of a run folder "
                          "(e.g. runs/diffcxr/splits.csv)")
    if not dry_run:  # before torch is imported or any data read
        out = writable_out(out or Path("runs/classifier"))
        out_dir_ok(out, overwrite, "classifier run")
    from cxraug.classify.dataset import DatasetClassifierConfig, train_on_dataset

    sets = list(overrides)  # the options win over --set, as in cxraug bench
    for key, val in (("data", data), ("classifier.arch", options["arch"]),
                     ("classifier.image_size", options["image_size"]),
                     ("classifier.max_epochs", options["epochs"]), ("classifier.seed", options["seed"])):
        if val is not None:
            sets.append(f"{key}={val}")
    if options["labels"]:
        from cxraug.data.labels import parse_label_list

        sets.append(f"labels=[{', '.join(parse_label_list(options['labels']))}]")
    cfg = C.load(DatasetClassifierConfig, recipe, sets)
    if dry_run:
        console.print(C.dump(cfg))
        return
    if overwrite:
        (out / "splits.csv").unlink(missing_ok=True)  # remade for this --data
    if splits is not None and (out / "splits.csv").is_file() \
            and not filecmp.cmp(out / "splits.csv", splits, shallow=False):
        raise CxraugError(f"--splits {splits}: {out} already has other splits (its splits.csv); "
                          "pass --overwrite or a new --out")
    m = train_on_dataset(cfg, out, splits=splits)

    def auc(x) -> str:
        return "-" if x is None else f"{x:.3f}"

    console.print(f"labels: {', '.join(m['labels'])}; mAUC val {auc(m['val']['mauc'])} "
                  f"({m['val']['n_images']} images), test {auc(m['test']['mauc'])} "
                  f"({m['test']['n_images']} images)")
    console.print(f"[bold green]done[/]: {out / 'model'} (use --classifier {out}; metrics: "
                  f"{out / 'metrics.json'})")


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

    from cxraug.cli.common import check_model_labels, default_folder_name, out_dir_ok, writable_out
    from cxraug.core.errors import CxraugError
    from cxraug.data import labels as L

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
    writable_out(out)
    out_dir_ok(out, overwrite)
    from cxraug.core.precision import default_device
    from cxraug.diffusion.pipeline import DiffCXRPipeline

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
