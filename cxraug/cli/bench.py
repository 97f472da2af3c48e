"""``cxraug bench``: the limited-data experiment (real / real+dup / real+synth / synth->real /
shuffled-synth->real / gen-data->real / synth) at equal compute, optionally scored on external
test sets too (``--test-data``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from cxraug.cli.common import (
    DataOpt,
    DryRunOpt,
    KindOpt,
    RecipeOpt,
    SetOpt,
    console,
    table,
    writable_out,
)


def _job_slice(job: Optional[str]) -> tuple[int, int]:
    from cxraug.core.config import parse_slice

    return parse_slice(job, "--job")


def _real_fracs(text: str) -> str:
    """Check ``--real-frac`` (comma-separated fractions in (0, 1]); return it normalised."""
    from cxraug.core.errors import CxraugError

    how = "give one or more fractions in (0, 1], comma-separated, e.g. 0.01,0.1,1.0"
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise CxraugError(f"--real-frac {text!r}: empty; {how}")
    values = []
    for p in parts:
        try:
            f = float(p)
        except ValueError:
            raise CxraugError(f"--real-frac {text!r}: {p!r} is not a number; {how}") from None
        if not 0 < f <= 1:  # NaN fails too
            raise CxraugError(f"--real-frac {p}: must be in (0, 1], e.g. 0.01 for 1%")
        values.append(p)
    return ",".join(values)


def bench(data: Optional[str] = DataOpt, kind: str = KindOpt,
          real_frac: str = typer.Option("0.01,1.0", "--real-frac", help="Real fractions, e.g. 0.01,0.05,0.1,0.25,1.0"),
          arms: str = typer.Option("real,real+dup,real+synth", "--arms",
                                   help="Any of real, real+dup, real+synth, synth->real, shuffled-synth->real (the cohort with permuted labels), gen-data->real (pre-trained on the generator's own real training images; needs --model), synth."),
          labels: Optional[str] = typer.Option(None, "--labels", help="Observations to evaluate (default: all with enough positives)."),
          synth: Optional[Path] = typer.Option(None, "--synth", help="Cohort folder from cxraug synth."),
          model: Optional[str] = typer.Option(None, "--model", help="Generator (shipped name, run folder or hub id) to synthesise the cohort on the fly; default kermany-128 when the arms need synthetic data and no --synth is given."),
          n_synth: int = typer.Option(0, "--n-synth", help="Cohort size generated with --model (default: as many as the training split)."),
          synth_ratio: Optional[float] = typer.Option(None, "--synth-ratio", help="Synthetic:real count in real+synth (default 1)."),
          seeds: Optional[int] = typer.Option(None, "--seeds", help="Training seeds per subset draw (default 1)."),
          subsets: Optional[int] = typer.Option(None, "--subsets", help="Independent patient-level draws of each real fraction (default 1)."),
          steps: Optional[int] = typer.Option(None, "--steps", help="Optimiser steps every arm trains, pre-training included (default 200)."),
          primary: Optional[str] = typer.Option(None, "--primary", help="The comparison against real+dup declared before the run, FRAC:ARM (default: the smallest fraction's first synthetic arm)."),
          arch: Optional[str] = typer.Option(None, "--arch", help="timm model name (default resnet18)."),
          image_size: Optional[int] = typer.Option(None, "--image-size"),
          strict: bool = typer.Option(False, "--strict", help="Per real fraction, train a generator like --model RUN on that real subset only and synthesise from it."),
          generator_set: Optional[list[str]] = typer.Option(None, "--generator-set", help="KEY=VALUE override for the --strict generators, e.g. train.steps=600 (repeatable)."),
          test_data: Optional[list[str]] = typer.Option(None, "--test-data", help="Another dataset (any layout cxraug reads, or sample:NAME) to score every classifier on too (repeatable); labels it lacks are skipped and listed. Added later, it is scored from the saved classifiers."),
          pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Classifier init: a local .safetensors/.pth/.bin file or model folder, or a timm pretrained name (e.g. resnet18.a1_in1k) or hub id, downloaded because you name it (default: random init)."),
          job: Optional[str] = typer.Option(None, "--job", help="Run only job share i/N (any scheduler)."),
          out: Path = typer.Option(Path("runs/bench"), "--out", "-o"),
          recipe: Optional[Path] = RecipeOpt, overrides: Optional[list[str]] = SetOpt,
          dry_run: bool = DryRunOpt) -> None:
    """Train timm classifiers on real subsets with and without synthetic data; report test mAUC
    with patient-bootstrap CIs and paired differences against the real-only arm."""
    writable_out(out)
    from cxraug.core import config as C
    from cxraug.core.errors import CxraugError
    from cxraug.experiments import bench as B

    for flag, val, low in (("--n-synth", n_synth, 0), ("--seeds", seeds, 1), ("--subsets", subsets, 1),
                           ("--steps", steps, 2)):
        if val is not None and val < low:
            raise typer.BadParameter(f"{val}: must be >= {low}", param_hint=f"'{flag}'")
    if synth_ratio is not None and not (math.isfinite(synth_ratio) and synth_ratio > 0):
        raise typer.BadParameter(f"{synth_ratio}: must be a finite number > 0", param_hint="'--synth-ratio'")
    sets = list(overrides or [])
    sets.append(f"real_fracs=[{_real_fracs(real_frac)}]")
    sets.append(f"arms=[{arms}]")
    for key, val in (("data", data), ("dataset", kind if kind != "auto" else None),
                     ("synth_ratio", synth_ratio), ("seeds", seeds), ("subsets", subsets),
                     ("steps", steps), ("primary", primary), ("classifier.arch", arch),
                     ("image_size", image_size)):
        if val is not None:
            sets.append(f"{key}={val}")
    if labels:
        sets.append(f"labels=[{labels}]")
    cfg = C.load(B.BenchConfig, recipe, sets)
    if pretrained:
        cfg.classifier.pretrained = pretrained
    if arch:
        from cxraug.classify.model import check_arch

        check_arch(arch)
    if synth is not None and model is not None:
        raise CxraugError("pass either --synth DIR or --model RUN, not both")
    if strict and model is None:
        raise CxraugError("--strict trains a generator per real fraction: pass --model RUN, not --synth")
    if B.GEN_DATA in cfg.arms and synth is not None:
        raise CxraugError("arm gen-data->real pre-trains on the generator's own training images: "
                          "pass --model RUN, not --synth (a cohort does not say which images they were)")
    needs_generator = any(a in B.GEN_ARMS for a in cfg.arms)
    if needs_generator and synth is None and model is None:
        from cxraug.models.zoo import DEFAULT_MODEL

        model = DEFAULT_MODEL
        console.print(f"synthetic arms: generator is the shipped model {model} (--model / --synth to change)")
    if synth is not None and not (synth / "manifest.csv").is_file():
        raise CxraugError(f"{synth}: no manifest.csv; pass a cohort folder written by cxraug synth")
    shares = _job_slice(job)  # a bad --job fails before anything, --dry-run included
    if dry_run:
        console.print(C.dump(cfg))
        console.print(f"{len(B.jobs(cfg))} jobs")
        return
    report = B.run_bench(cfg, out, synth=synth, model=model, n_synth=n_synth, job=shares,
                         strict=strict, generator_overrides=list(generator_set or []),
                         test_data=list(test_data or []))
    if report is None:
        console.print("some jobs are still missing; rerun without --job (or run the other shares) to finish")
        return
    print_report(report, out)


def _est(stat: dict | None, sign: str = "") -> str:
    if not stat:
        return "-"
    lo, hi = stat["ci"]
    return f"{stat['estimate']:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"


def print_report(report: dict, out: Path) -> None:
    tests = report.get("test_sets", {})
    st = report.get("statistics", {})
    rows = [[f"{c['frac']:g}", c["arm"], f"{c['draws']}x{c['seeds']}", ",".join(map(str, c["optimizer_steps"])),
             _est(c), _est(c.get("vs_real"), "+"), _est(c.get("vs_dup"), "+"),
             *(_est(c["external"][t]) for t in tests)]
            for c in report["cells"]]
    console.print(table(f"test mAUC ({report['test']['n_images']} images, labels: {', '.join(report['labels'])}); "
                        f"95% hierarchical bootstrap (draws, seeds, patients)",
                        ["real frac", "arm", "draws x seeds", "steps", "mAUC", "vs real", "vs real+dup",
                         *(f"{t} mAUC" for t in tests)], rows))
    p = report.get("primary")
    if p:
        verdict = ("synthetic data helped" if p["ci"][0] > 0 else
                   "synthetic data hurt" if p["ci"][1] < 0 else "no difference shown")
        console.print(f"primary comparison (declared before the run): real frac {p['frac']:g}, {p['arm']} - "
                      f"real+dup = {_est(p, '+')}, p = {p['p_value']:.3f}: {verdict}", highlight=False)
    for c in report.get("family", []):
        console.print(f"  also: real frac {c['frac']:g}, {c['arm']} - real+dup = {_est(c, '+')}, "
                      f"Holm-adjusted p = {c['p_holm']:.3f}", highlight=False)
    for t in report.get("transfer_efficiency", []):
        text = (f"{t['value']:.2f} [{t['ci'][0]:.2f}, {t['ci'][1]:.2f}]" if t["value"] is not None
                else f"undefined ({t['reason']})")
        console.print(f"transfer efficiency (synth->real - real) / (gen-data->real - real), real frac "
                      f"{t['frac']:g}: {text}", highlight=False)
    for name, t in tests.items():
        skipped = "; ".join(f"{k} ({v})" for k, v in t["skipped"].items())
        console.print(f"test set {name}: {t['data']}, {t['n_images']} images, labels "
                      f"{', '.join(t['labels'])}" + (f"; skipped: {skipped}" if skipped else ""),
                      highlight=False)
    console.print(f"every arm: {st.get('steps')} optimiser steps ({st.get('pretrain_steps')} of them "
                  f"pre-training where an arm pre-trains), selection: {st.get('selection')}; "
                  f"classifier init: {report.get('init', 'random')}", highlight=False)
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning[/]: {w}", highlight=False)
    console.print(f"results: {out / 'results.json'}, plot: {out / 'mauc.png'}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
