"""The limited-data reproduction: does Diff-CXR's synthetic data help a classifier trained on 1%-100%
of the real training patients?

    python benchmarks/limited_data.py \
        --data kermany=../shared/data/kermany --model kermany=runs/kermany-c \
        --data nih14=../shared/data/nih14 --model nih14=runs/nih14-c \
        [--fracs 0.01,0.05,0.1,0.25,1.0] [--seeds 3] [--strict-fracs 0.01] [--work runs/limited]

For every dataset: ``cxraug bench`` (the library call behind it) with arms real / real+dup /
real+synth / synth->real over the real fractions and seeds, first with the paper's protocol (one
generator trained on the whole training split, its cohort shared by every fraction) and then with
the strict protocol at ``--strict-fracs`` (a generator trained like the given one, but only on that
fraction's real subset; ``--strict-generator-set`` shortens its training). The ``real`` and
``real+dup`` jobs are identical under both protocols and are reused, not retrained.

Everything is resumable (each job keeps its scores under ``--work``). Writes
``benchmarks/results/limited_data.json`` (every cell, per-seed jobs, the gap each arm closes),
``limited_data.png`` and ``limited_data.md`` (the README table), and prints the table.
The gap closed at fraction F is ``(mAUC(arm, F) - mAUC(real, F)) / (mAUC(real, 100%) - mAUC(real, F))``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ARMS = ["real", "real+dup", "real+synth", "synth->real"]

# Chosen so that the whole sweep (two datasets, 5 fractions x 4 arms x 3 seeds, plus the strict
# protocol at 1%) fits in about two hours on a 2-core CPU: resnet18 at 64 px trains at ~300 img/s.
CLASSIFIER = ["classifier.arch=resnet18", "classifier.max_epochs=8", "classifier.max_steps=200",
              "classifier.patience=3", "classifier.batch_size=64"]


def pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            sys.exit(f"{flag} {item!r}: expected NAME=VALUE, e.g. {flag} kermany=../shared/data/kermany")
        out[name] = value
    return out


def bench_config(data: str, fracs: list[float], seeds: int, args) -> object:
    from cxraug.core import config as C
    from cxraug.experiments.bench import BenchConfig

    sets = [f"data={data}", f"real_fracs=[{','.join(f'{f:g}' for f in fracs)}]",
            f"arms=[{','.join(ARMS)}]", f"seeds={seeds}", f"image_size={args.image_size}",
            f"synth_ratio={args.synth_ratio}", f"n_boot={args.n_boot}", *CLASSIFIER, *args.set]
    return C.load(BenchConfig, None, sets)


def gap_closed(cells: list[dict]) -> dict:
    """Per arm and fraction < 1: the share of the real(F) -> real(100%) gap the arm closes."""
    m = {(c["frac"], c["arm"]): c["mauc_mean"] for c in cells}
    full = m.get((1.0, "real"))
    out = {}
    for (frac, arm), v in m.items():
        base = m.get((frac, "real"))
        if arm == "real" or frac >= 1.0 or full is None or base is None or full - base <= 0:
            continue
        out[f"{frac:g}|{arm}"] = (v - base) / (full - base)
    return out


def reuse_real_jobs(src: Path, dst: Path, fracs: list[float], seeds: int) -> None:
    """The strict protocol's real / real+dup jobs are the paper protocol's: copy their scores."""
    from cxraug.experiments.bench import job_dir

    for f in fracs:
        for s in range(seeds):
            for arm in ("real", "real+dup"):
                a, b = job_dir(src, f, arm, s), job_dir(dst, f, arm, s)
                if (a / "result.json").is_file() and not (b / "result.json").is_file():
                    shutil.copytree(a, b, dirs_exist_ok=True)


def run_dataset(name: str, data: str, model: Path, args) -> dict:
    from cxraug.experiments.bench import run_bench

    fracs = [float(x) for x in args.fracs.split(",")]
    out = {"data": data, "model": str(model)}
    t0 = time.perf_counter()
    cfg = bench_config(data, fracs, args.seeds, args)
    paper = run_bench(cfg, args.work / name / "paper", model=model, n_synth=args.n_synth[name],
                      progress=sys.stdout.isatty())
    out["paper"] = paper | {"gap_closed": gap_closed(paper["cells"]),
                            "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{name}: paper protocol done in {out['paper']['seconds']:.0f} s", flush=True)
    strict_fracs = [float(x) for x in args.strict_fracs.split(",") if x]
    if args.strict_datasets and name not in args.strict_datasets.split(","):
        strict_fracs = []
    if strict_fracs:
        t0 = time.perf_counter()
        cfg = bench_config(data, strict_fracs, args.seeds, args)
        dst = args.work / name / "strict"
        reuse_real_jobs(args.work / name / "paper", dst, strict_fracs, args.seeds)
        strict = run_bench(cfg, dst, model=model, n_synth=args.strict_n_synth or args.n_synth[name], strict=True,
                           generator_overrides=args.strict_generator_set, progress=sys.stdout.isatty())
        cells = strict["cells"] + [c for c in paper["cells"] if c["frac"] == 1.0 and c["arm"] == "real"]
        out["strict"] = strict | {"gap_closed": gap_closed(cells),
                                  "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{name}: strict protocol done in {out['strict']['seconds']:.0f} s", flush=True)
    return out


def markdown(results: dict) -> str:
    lines = []
    for name, r in results["datasets"].items():
        p = r["paper"]
        lines += [f"**{name}** ({', '.join(p['labels'])}; test {p['test']['n_images']} images / "
                  f"{p['test']['n_patients']} patients). mAUC mean ± sd over {p['config']['seeds']} seeds "
                  "[mean per-seed 95% patient-bootstrap CI]; Δ = paired difference vs `real`.", "",
                  "| real | protocol | " + " | ".join(ARMS) + " | gap closed by real+synth |",
                  "|---|---|" + "---|" * len(ARMS) + "---|"]
        for proto in ("paper", "strict"):
            if proto not in r:
                continue
            cells = {(c["frac"], c["arm"]): c for c in r[proto]["cells"]}
            for frac in sorted({c["frac"] for c in r[proto]["cells"]}):
                row = [f"{frac:.0%}", proto]
                for arm in ARMS:
                    c = cells.get((frac, arm))
                    if c is None:
                        row.append("-")
                        continue
                    txt = f"{c['mauc_mean']:.3f} ± {c['mauc_sd']:.3f} [{c['ci_mean'][0]:.2f}, {c['ci_mean'][1]:.2f}]"
                    if "diff_vs_real_mean" in c:
                        txt += f" Δ {c['diff_vs_real_mean']:+.3f}"
                    row.append(txt)
                g = r[proto]["gap_closed"].get(f"{frac:g}|real+synth")
                row.append(f"{g:+.0%}" if g is not None else "-")
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        r = results["datasets"][name]
        for i, arm in enumerate(ARMS):
            cs = sorted((c for c in r["paper"]["cells"] if c["arm"] == arm), key=lambda c: c["frac"])
            x = [c["frac"] for c in cs]
            line, = ax.plot(x, [c["mauc_mean"] for c in cs], marker="o", label=arm, color=f"C{i}")
            ax.fill_between(x, [c["ci_mean"][0] for c in cs], [c["ci_mean"][1] for c in cs],
                            color=line.get_color(), alpha=0.12)
            if "strict" in r and arm in ("real+synth", "synth->real"):
                ss = [c for c in r["strict"]["cells"] if c["arm"] == arm]
                ax.scatter([c["frac"] for c in ss], [c["mauc_mean"] for c in ss], marker="x", s=60,
                           color=line.get_color(), label=f"{arm} (strict)")
        ax.set_xscale("log")
        ax.set_xlabel("fraction of real training patients")
        ax.set_ylabel("test mAUC")
        ax.set_title(f"{name}: {', '.join(r['paper']['labels'])}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", default=[], help="NAME=DATA (repeatable)")
    ap.add_argument("--model", action="append", default=[], help="NAME=RUN: the generator for NAME")
    ap.add_argument("--fracs", default="0.01,0.05,0.1,0.25,1.0")
    ap.add_argument("--strict-fracs", default="0.01", help="fractions for the strict protocol ('' for none)")
    ap.add_argument("--strict-generator-set", action="append",
                    default=None, help="overrides for the strict generators (default: train.steps=800, adapter.steps=150)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--synth-ratio", type=float, default=1.0)
    ap.add_argument("--n-synth", action="append", default=[],
                    help="cohort size per generator: N, or NAME=N per dataset (default 2000)")
    ap.add_argument("--strict-datasets", default="", help="comma list of dataset names for the strict "
                    "protocol (default: all)")
    ap.add_argument("--strict-n-synth", type=int, default=0,
                    help="cohort size of each strict generator (default: as --n-synth)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--set", action="append", default=[], help="extra BenchConfig override KEY=VALUE")
    ap.add_argument("--work", type=Path, default=Path("runs/limited"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "limited_data.json")
    args = ap.parse_args()
    if args.strict_generator_set is None:
        args.strict_generator_set = ["train.steps=800", "adapter.steps=150"]
    data, models = pairs(args.data, "--data"), pairs(args.model, "--model")
    plain = [x for x in args.n_synth if "=" not in x]
    sizes = pairs([x for x in args.n_synth if "=" in x], "--n-synth")
    args.n_synth = {n: int(sizes.get(n, plain[-1] if plain else 2000)) for n in data}
    if not data:
        sys.exit("pass at least one --data NAME=DATA with its --model NAME=RUN")
    missing = [n for n in data if n not in models]
    if missing:
        sys.exit(f"--model {missing[0]}=RUN missing: every dataset needs its generator run")
    for n, m in models.items():
        if not (Path(m) / "denoiser" / "config.json").is_file():
            sys.exit(f"--model {n}={m}: no trained denoiser there; train it with cxraug train first")

    import torch

    from cxraug.experiments.bench import versions

    t0 = time.perf_counter()
    results = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
               "machine": {"cpu": platform.processor() or platform.machine(),
                           "threads": torch.get_num_threads()},
               "versions": versions(), "classifier_settings": CLASSIFIER,
               "n_synth": args.n_synth, "synth_ratio": args.synth_ratio,
               "strict_generator_overrides": args.strict_generator_set,
               "strict_n_synth": args.strict_n_synth or None, "datasets": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name, root in data.items():
        results["datasets"][name] = run_dataset(name, root, Path(models[name]), args)
        results["seconds"] = round(time.perf_counter() - t0, 1)
        args.out.write_text(json.dumps(results, indent=2, default=str))
    plot(results, args.out.with_suffix(".png"))
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"total {results['seconds'] / 60:.1f} min; {args.out}, {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
