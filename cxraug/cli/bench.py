"""``cxraug bench``: the limited-data experiment (real / real+dup / real+synth / synth->real /
gen-data->real / synth), optionally scored on external test sets too (``--test-data``)."""

from __future__ import annotations

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
                                   help="Any of real, real+dup, real+synth, synth->real, gen-data->real (pre-trained on the generator's own real training images; needs --model), synth."),
          labels: Optional[str] = typer.Option(None, "--labels", help="Observations to evaluate (default: all with enough positives)."),
          synth: Optional[Path] = typer.Option(None, "--synth", help="Cohort folder from cxraug synth."),
          model: Optional[str] = typer.Option(None, "--model", help="Generator (shipped name, run folder or hub id) to synthesise the cohort on the fly; default kermany-128 when the arms need synthetic data and no --synth is given."),
          n_synth: int = typer.Option(0, "--n-synth", help="Cohort size generated with --model (default: as many as the training split)."),
          synth_ratio: Optional[float] = typer.Option(None, "--synth-ratio", help="Synthetic:real count in real+synth (default 1)."),
          seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per cell (default 1)."),
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

    sets = list(overrides or [])
    sets.append(f"real_fracs=[{_real_fracs(real_frac)}]")
    sets.append(f"arms=[{arms}]")
    for key, val in (("data", data), ("dataset", kind if kind != "auto" else None),
                     ("synth_ratio", synth_ratio), ("seeds", seeds), ("classifier.arch", arch),
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


def _ci_text(mauc: float | None, ci: list[float]) -> str:
    return "-" if mauc is None else f"{mauc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def print_report(report: dict, out: Path) -> None:
    tests = report.get("test_sets", {})
    rows = [[f"{c['frac']:g}", c["arm"], f"{c['mauc_mean']:.3f}" + (f" ± {c['mauc_sd']:.3f}" if c["seeds"] > 1 else ""),
             f"[{c['ci_mean'][0]:.3f}, {c['ci_mean'][1]:.3f}]",
             f"{c['diff_vs_real_mean']:+.3f} [{c['diff_ci_mean'][0]:+.3f}, {c['diff_ci_mean'][1]:+.3f}]"
             if "diff_vs_real_mean" in c else "-",
             *(_ci_text(c["external"][t]["mauc_mean"], c["external"][t]["ci_mean"]) for t in tests)]
            for c in report["cells"]]
    console.print(table(f"test mAUC ({report['test']['n_images']} images, labels: {', '.join(report['labels'])})",
                        ["real frac", "arm", "mAUC", "95% CI", "vs real (paired)",
                         *(f"{t} mAUC [95% CI]" for t in tests)], rows))
    vs_dup = [c for c in report["cells"] if "diff_vs_dup_mean" in c]
    if vs_dup:
        console.print("vs real+dup (paired patient bootstrap; above 0 = the synthetic images add more "
                      "than the same number of duplicated real ones):", highlight=False)
        for c in vs_dup:
            lo, hi = c["diff_vs_dup_ci_mean"]
            console.print(f"  real frac {c['frac']:g} {c['arm']}: {c['diff_vs_dup_mean']:+.3f} "
                          f"[{lo:+.3f}, {hi:+.3f}]", highlight=False)
    print_transfer(report.get("transfer_efficiency", []), report.get("config", {}).get("arms", []))
    for name, t in tests.items():
        skipped = "; ".join(f"{k} ({v})" for k, v in t["skipped"].items())
        console.print(f"test set {name}: {t['data']}, {t['n_images']} images, labels "
                      f"{', '.join(t['labels'])}" + (f"; skipped: {skipped}" if skipped else ""),
                      highlight=False)
    console.print(f"classifier init: {report.get('init', 'random')}", highlight=False)
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning[/]: {w}", highlight=False)
    console.print(f"results: {out / 'results.json'}, plot: {out / 'mauc.png'}")


def print_transfer(cells: list[dict], arms: list[str]) -> None:
    """Transfer efficiency per real fraction, under the table, when both of its arms ran; a hint
    when only ``synth->real`` did."""
    both = {"synth->real", "gen-data->real"}
    if not cells or not both & set(arms):
        return
    if not both <= set(arms):
        console.print("transfer efficiency: needs both synth->real and gen-data->real (add them to "
                      "--arms; gen-data->real needs --model)", highlight=False)
        return
    console.print("transfer efficiency (synth->real - real) / (gen-data->real - real), "
                  "paired patient bootstrap:", highlight=False)
    for c in cells:
        text = (f"{c['value']:.2f} [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]" if c["value"] is not None
                else f"undefined ({c['reason']})")
        console.print(f"  real frac {c['frac']:g}: {text}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
