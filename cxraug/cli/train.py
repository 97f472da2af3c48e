"""``cxraug train``: Diff-CXR training, and ``cxraug train classifier`` (a real-data classifier for
the fidelity gate and ``cxraug eval``). Sampling is ``cxraug generate`` (:mod:`cxraug.cli.generate`)."""

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
    from cxraug.cli.common import run_lock
    from cxraug.diffusion.stages import train_run

    with run_lock(out):
        run = train_run(cfg, out, stages, overwrite)
    console.print(f"[bold green]done[/]: {run.root} (model card: {run.root / 'README.md'})")


def _train_classifier(recipe: Path | None, overrides: list[str], data: str | None,
                      out: Path | None, overwrite: bool, dry_run: bool, **options) -> None:
    """cxraug train classifier: a timm classifier on a dataset's train split (val for selection);
    ``options``: labels, arch, image_size, epochs, seed, splits (None: the config's)."""
    import filecmp

    from cxraug.cli.common import (
        MAX_IMAGE_SIZE,
        MAX_SEED,
        check_number,
        out_dir_ok,
        run_lock,
        writable_out,
    )
    from cxraug.core import config as C
    from cxraug.core.errors import CxraugError
    from cxraug.core.runs import CHECKPOINTS

    check_number("--seed", options["seed"], 0, MAX_SEED)
    check_number("--image-size", options["image_size"], 8, MAX_IMAGE_SIZE)
    check_number("--epochs", options["epochs"], 1)
    splits = options["splits"]
    if splits is not None and not Path(splits).is_file():
        raise CxraugError(f"--splits {splits}: no such file; pass the splits.csv of a run folder "
                          "(e.g. runs/diffcxr/splits.csv)")
    resuming = False
    if not dry_run:  # before torch is imported or any data read
        out = writable_out(out or Path("runs/classifier"))
        # an interrupted run (its config, no metrics yet) resumes, from its newest checkpoint if
        # it reached one; a finished one is refused
        resuming = not overwrite and (out / "config.yaml").is_file() and not (out / "metrics.json").is_file()
        if not resuming:
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
    with run_lock(out, "classifier run"):
        if resuming and _saved_classifier_config(out) != cfg:
            raise CxraugError(f"{out}: an interrupted classifier run with other settings (its "
                              "config.yaml); rerun it with the same options to resume, or pass "
                              "--overwrite or another --out")
        if overwrite:
            import shutil

            (out / "splits.csv").unlink(missing_ok=True)  # remade for this --data
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
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


def _saved_classifier_config(out: Path):
    """The settings an interrupted ``cxraug train classifier`` run in ``out`` was started with."""
    from cxraug.classify.dataset import DatasetClassifierConfig
    from cxraug.core import config as C
    from cxraug.core.errors import CxraugError

    try:
        return C.load(DatasetClassifierConfig, out / "config.yaml")
    except C.ConfigError:
        raise CxraugError(f"{out}: holds a config.yaml that is not a classifier run's; pass another "
                          "--out") from None


def register(app: typer.Typer) -> None:
    app.command("train")(train)
