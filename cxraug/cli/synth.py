"""``cxraug synth``: a label-balanced synthetic cohort with quality gates and provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxraug.cli.common import (
    SetOpt,
    check_number,
    classifier_folder,
    console,
    default_folder_name,
    table,
    writable_out,
)


def synth(model: str = typer.Option("kermany-128", "--model", "-m", help="Shipped model name (kermany-128, the default), run folder from cxraug train, or Hugging Face Hub id."),
          labels: str = typer.Option(..., "--labels", help="Observations to balance, comma-separated, case-insensitive (e.g. pneumonia,effusion)."),
          n: int = typer.Option(..., "--n", help="Images in total, over all shards."),
          out: Optional[Path] = typer.Option(None, "--out", "-o", help="Cohort folder (default: cohorts/<labels>-<n>); rerunning the same command resumes it."),
          negatives: float = typer.Option(0.2, help="Share of explicit negatives (none of the labels); default 0.2."),
          cooccurrence: str = typer.Option("empirical", help="empirical: other findings as often as in the generator's training data; none: the target only."),
          prompts: str = typer.Option("mined", help="Prompt text: mined report sentences or the paper's templates."),
          seed: int = typer.Option(0, help="Cohort seed; every image's seed derives from it and its index."),
          steps: Optional[int] = typer.Option(None, help="Sampler steps (default: the run's sample.steps)."),
          guidance: Optional[float] = typer.Option(None, help="Guidance weight (default: the run's; 1 = none)."),
          sampler: str = typer.Option("dpm++", help="dpm++ or ddim."),
          batch_size: int = typer.Option(16, "--batch-size", help="Images per sampling batch (speed only)."),
          shard: Optional[str] = typer.Option(None, "--shard", help="i/N: this process makes the images with index % N == i."),
          classifier: Optional[Path] = typer.Option(None, "--classifier", help="Classifier trained on real data (fidelity gate): a cxraug train classifier run folder or RUN/model."),
          gates: str = typer.Option("fidelity,memorisation", "--gates", help="fidelity,memorisation or none."),
          until_accepted: bool = typer.Option(False, "--until-accepted", help="Top up rejected targets until n pass (one process; budget max_attempts * n)."),
          fmt: str = typer.Option("png", "--format", help="png or dicom (marked synthetic)."),
          overrides: Optional[list[str]] = SetOpt,
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing cohort folder."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and exit.")) -> None:
    """Generate a label-balanced synthetic cohort: plan.csv, images, manifest.csv, dataset card.

    More settings with --set KEY=VALUE: gate.recall (0.8), gate.negative_keep (0.95), gate.alpha
    (0.01), gate.top_k (5), gate.thresholds ({pneumonia: 0.6}), max_attempts (3), precision
    (auto, fp32, bf16).
    """
    if out is not None:  # check the output before any model or data is loaded (--dry-run too)
        writable_out(out)
    check_number("--negatives", negatives, 0, 1)  # NaN / inf named as typed; [0, 1) below
    check_number("--guidance", guidance, 0)
    from cxraug.cohorts.config import SynthConfig, parse_shard
    from cxraug.cohorts.gates import parse_gates
    from cxraug.cohorts.generate import check_config, preview, synthesize
    from cxraug.cohorts.plan import plan_summary
    from cxraug.core import config as C
    from cxraug.data.labels import parse_label_list

    data = {"labels": parse_label_list(labels), "n": n, "negatives": negatives,
            "cooccurrence": cooccurrence, "prompts": prompts, "seed": seed, "steps": steps,
            "guidance": guidance, "sampler": sampler, "batch_size": batch_size,
            "classifier": str(classifier_folder(classifier)) if classifier else None,
            "gates": list(parse_gates(gates)),
            "until_accepted": until_accepted, "format": fmt}
    cfg = C.from_dict(SynthConfig, C.apply_overrides(C.to_dict(SynthConfig()) | data, list(overrides or [])))
    where = parse_shard(shard)
    check_config(cfg)

    def show(plan) -> None:
        rows = plan_summary(plan).values.tolist()
        console.print(table(f"plan: {len(plan)} images", ["target", "labels", "images"], rows))

    if dry_run:
        show(preview(cfg, model))
        return
    if out is None:
        out = writable_out(Path("cohorts") / default_folder_name(labels, n))
        console.print(f"cohort folder: {out}")
    s = synthesize(cfg, model, out, where, overwrite, on_plan=show)
    if s["complete"]:
        console.print(f"[bold green]done[/]: {s['generated']} generated, {s['accepted']} accepted, "
                      f"{s['rejected']} rejected -> {out / 'manifest.csv'} (card: {out / 'README.md'})")
    else:
        console.print(f"shard {s['shard']} done ({s['generated_now']} new images); manifest.csv is "
                      "assembled when every shard has finished")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
