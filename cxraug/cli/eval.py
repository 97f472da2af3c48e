"""``cxraug eval``: FID / KID / precision-recall / density-coverage / SSIM diversity / two-sample AUC
of a cohort, and its image statistics (power spectrum per band, detail, contrast, percentiles),
each next to its real-vs-real floor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cxraug.cli.common import (
    MAX_IMAGE_SIZE,
    MAX_SEED,
    KindOpt,
    check_number,
    classifier_folder,
    console,
    table,
    writable_out,
)


def eval_cmd(real: str = typer.Option(..., "--real", help="Real images: any dataset cxraug loads, "
                                      "an image folder, or sample:kermany."),
             synth: Path = typer.Option(..., "--synth", help="Cohort folder from cxraug synth, or an image folder."),
             real_ref: Optional[str] = typer.Option(
                 None, "--real-ref", help="A second real set, disjoint from --real (e.g. the test split vs "
                 "the train split), for the real-vs-real floor; default: two disjoint random parts of --real."),
             out: Path = typer.Option(Path("eval.json"), "--out", "-o", help="Eval card (JSON)."),
             extractor: str = typer.Option(
                 "classifier", "--extractor", help="classifier, inception, xrv or pixels. pixels needs no "
                 "weights (16x16 standardised thumbnails) but is a weak extractor: smoke tests and relative "
                 "comparisons only."),
             classifier: Optional[Path] = typer.Option(None, "--classifier", help="Classifier folder (feature extractor): a cxraug train classifier run folder or RUN/model."),
             inception_weights: Optional[Path] = typer.Option(
                 None, "--inception-weights", help="Local torch-fidelity weights-inception-2015-12-05-6726825d.pth."),
             xrv_weights: Optional[Path] = typer.Option(
                 None, "--xrv-weights", help="torchxrayvision DenseNet state dict (.safetensors) for --extractor xrv."),
             image_size: int = typer.Option(64, "--image-size", help="Both sides are padded/resized to this square."),
             max_images: Optional[int] = typer.Option(5000, "--max-images", help="Random cap per side."),
             seed: int = typer.Option(0, "--seed"),
             labels: Optional[str] = typer.Option(None, "--labels", help="Per-label metrics only for these targets."),
             min_count: int = typer.Option(10, "--min-count", help="Minimum images per side for per-label metrics."),
             stats_size: int = typer.Option(128, "--stats-size", help="Image statistics (power spectrum, "
                                            "detail, contrast, percentiles) on images centre-cropped to this square."),
             kind: str = KindOpt) -> None:
    """Compare a synthetic cohort with real images in a feature space; write an eval card."""
    writable_out(out, folder=False)
    from cxraug.core.errors import CxraugError, writing

    if not synth.is_dir():  # before the extractor's own checks: the first thing a user gives
        raise CxraugError(f"--synth {synth}: folder not found; pass a cohort folder from cxraug "
                          "synth or a folder of images")
    check_number("--seed", seed, 0, MAX_SEED)
    for option, size in (("--image-size", image_size), ("--stats-size", stats_size)):
        check_number(option, size, 8, MAX_IMAGE_SIZE)
    from cxraug.experiments.quality.card import SUMMARY_COLUMNS, evaluate, summary_rows
    from cxraug.experiments.quality.image_stats import STATS_COLUMNS, stats_rows

    if image_size < 8 or stats_size < 8 or (max_images is not None and max_images < 2) or min_count < 1:
        raise CxraugError("--image-size and --stats-size must be >= 8, --max-images >= 2 and --min-count >= 1")
    card = evaluate(real, synth, extractor, classifier_folder(classifier), inception_weights,
                    image_size, max_images, seed, labels, min_count, kind=kind,
                    xrv_weights=xrv_weights, real_ref=real_ref, stats_size=stats_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out):
        out.write_text(json.dumps(card, indent=2))
    console.print(table(f"{card['extractor']['name']} features, {card['resize']}", SUMMARY_COLUMNS,
                        summary_rows(card)))
    _print_floor(card)
    st = card["image_stats"]
    console.print(table(f"image statistics, {st['resize']} (ratio = synthetic / real; AUC: that statistic "
                        "alone, 0.5 = none)", STATS_COLUMNS, stats_rows(st)))
    div = card["diversity"]["mean_pairwise_ssim"]
    console.print(f"within-target SSIM (lower = more diverse): {'-' if div is None else f'{div:.3f}'}")
    for t, why in card["per_label_skipped"].items():
        console.print(f"skipped {t}: {why}")
    console.print(f"eval card: {out}")


def _print_floor(card: dict) -> None:
    """One line on where the floor comes from and the two-sample AUCs side by side."""
    floor = card["floor"]
    if floor["skipped"]:
        console.print(f"real-vs-real floor skipped: {floor['skipped']}")
        return
    where = ("two disjoint random parts of --real" if floor["source"] == "split"
             else f"--real vs --real-ref ({floor['overlap_dropped']} shared images dropped)")
    auc, ref = card["two_sample_auc"], floor["two_sample_auc"]
    console.print(f"real-vs-real floor: {where}, n = {floor['counts']['reference']} vs "
                  f"{floor['counts']['compared']}")
    console.print("two-sample AUC (0.5 = indistinguishable): synthetic "
                  f"{'-' if auc is None else f'{auc:.3f}'} vs real-vs-real floor {ref:.3f}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
