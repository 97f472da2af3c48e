"""The limited-data sweep of record (issue #16): does a generator add anything over the real images
it was trained from, at 1%-100% of the real training patients, on its own test split and on
external test sets?

    python benchmarks/limited_data.py --data ../shared/data/kermany --model kermany-128 \
        --test-data ../shared/data/nih14 [--fracs 0.01,0.05,0.1,0.25,1.0] \
        [--strict-fracs 0.01,0.05,0.1,0.25] [--seeds 3] [--n-synth 2000] \
        [--work runs/limited-v2] [--name limited_data_v2]

1. Paper protocol: ``cxraug bench`` (the library call behind it) with the arms real, real+dup,
   real+synth, synth->real and gen-data->real over ``--fracs`` into ``WORK/paper``; one cohort
   from ``--model`` (trained on the whole training split) serves every fraction.
2. Strict protocol at ``--strict-fracs`` into ``WORK/strict``: per fraction a generator trained
   with ``--model``'s own recipe (full strength unless ``--strict-generator-set`` shortens it;
   the overrides are recorded) on that fraction's real subset only, and a cohort from it. The
   ``real`` and ``real+dup`` jobs do not involve a generator and are the paper run's (same splits,
   subsets and seeds): they are copied, not retrained.
3. The report: ``benchmarks/limited_data_report.py`` writes ``benchmarks/results/NAME.{png,md,json}``
   (figure, README table, every cell and transfer efficiency); this script adds the machine
   (``lscpu`` model and flags) and its own command to the JSON.

``--report-only`` trains nothing: it recomputes each protocol's statistics from the finished jobs
under ``--work`` with this version of cxraug (e.g. the ``real+dup`` comparison added after a sweep
was started) and rewrites the report; the sweep's own command stays the one recorded, and
``--data`` / ``--model`` are not needed.

Everything resumes: rerun the same command after an interruption (each job, generator stage and
cohort keeps its state under ``--work``; a bench folder refuses other settings). Classifier
settings are sized for a 2-core CPU (resnet18 at 64 px, <= 8 epochs / 200 steps, early stopping
on real validation mAUC); ``--set classifier.KEY=VALUE`` changes them for both protocols.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from cxraug.core import config as C
from cxraug.core.errors import CxraugError
from cxraug.core.precision import cpu_info
from cxraug.experiments.bench import (
    BenchConfig,
    job_dir,
    jobs,
    load_real_splits,
    load_test_sets,
    run_bench,
)
from cxraug.experiments.bench.report import summarise

HERE = Path(__file__).resolve().parent
ARMS = ["real", "real+dup", "real+synth", "synth->real", "gen-data->real"]
NO_GENERATOR = ("real", "real+dup")  # identical under both protocols
CLASSIFIER = ["image_size=64", "classifier.arch=resnet18", "classifier.max_epochs=8",
              "classifier.max_steps=200", "classifier.patience=3", "classifier.batch_size=64"]


def fractions(text: str, flag: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"{flag} {text!r}: expected comma-separated fractions in (0, 1], e.g. 0.01,0.1,1.0")
    if any(not 0 < f <= 1 for f in out):
        sys.exit(f"{flag} {text!r}: every fraction must be in (0, 1]")
    return out


def bench_config(args, fracs: list[float]) -> BenchConfig:
    sets = [f"data={args.data}", f"real_fracs=[{','.join(f'{f:g}' for f in fracs)}]",
            f"arms=[{','.join(ARMS)}]", f"seeds={args.seeds}", *CLASSIFIER, *args.set]
    return C.load(BenchConfig, None, sets)


def reuse_generator_free_jobs(paper: Path, strict: Path, cfg: BenchConfig) -> int:
    """Copy the paper run's real / real+dup jobs (and its splits) into the strict run."""
    strict.mkdir(parents=True, exist_ok=True)
    if (paper / "splits.csv").is_file() and not (strict / "splits.csv").is_file():
        shutil.copyfile(paper / "splits.csv", strict / "splits.csv")
    n = 0
    for f in cfg.real_fracs:
        for s in range(cfg.seeds):
            for arm in NO_GENERATOR:
                a, b = job_dir(paper, f, arm, s), job_dir(strict, f, arm, s)
                if (a / "result.json").is_file() and not (b / "result.json").is_file():
                    shutil.copytree(a, b, dirs_exist_ok=True)
                    n += 1
    return n


def resummarise(folder: Path, test_data: list[str]) -> None:
    """Recompute the statistics of the finished bench in ``folder`` (every job must have run) with
    this version's :func:`summarise`; generators, cohorts and jobs are only read."""
    path = folder / "results.json"
    if not path.is_file():
        sys.exit(f"{path}: no such file; --report-only needs a finished sweep (run without it first)")
    cfg = C.load(BenchConfig, folder / "config.yaml")
    missing = [j for j in jobs(cfg) if not (job_dir(folder, *j) / "result.json").is_file()]
    if missing:
        sys.exit(f"{folder}: {len(missing)} jobs have not run (e.g. {job_dir(folder, *missing[0]).name}); "
                 "run without --report-only to finish them")
    report = json.loads(path.read_text())
    real = load_real_splits(cfg, folder / "splits.csv", cfg.image_size, cfg.split_seed)
    results = [json.loads((job_dir(folder, *j) / "result.json").read_text()) for j in jobs(cfg)]
    report.update(summarise(cfg, real, results, folder, load_test_sets(test_data, cfg, real.labels)))
    path.write_text(json.dumps(report, indent=2, default=str))


def report_module():
    spec = importlib.util.spec_from_file_location("limited_data_report", HERE / "limited_data_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_sweep(args, argv: list[str], fracs: list[float], strict_fracs: list[float]) -> dict:
    """Both protocols' benches (resumable); returns the seconds each took."""
    for proto in ("paper", "strict") if strict_fracs else ("paper",):  # the report names its command
        (args.work / proto).mkdir(parents=True, exist_ok=True)
        (args.work / proto / "command.txt").write_text(shlex.join(argv) + "\n")
    t0 = time.perf_counter()
    seconds = {}
    paper_cfg = bench_config(args, fracs)
    run_bench(paper_cfg, args.work / "paper", model=Path(args.model), n_synth=args.n_synth,
              test_data=args.test_data)
    seconds["paper"] = round(time.perf_counter() - t0, 1)
    print(f"paper protocol done ({seconds['paper'] / 60:.1f} min)", flush=True)
    if strict_fracs:
        t1 = time.perf_counter()
        strict_cfg = bench_config(args, strict_fracs)
        copied = reuse_generator_free_jobs(args.work / "paper", args.work / "strict", strict_cfg)
        print(f"strict protocol: {copied} real/real+dup jobs reused from the paper run", flush=True)
        run_bench(strict_cfg, args.work / "strict", model=Path(args.model), n_synth=args.n_synth,
                  strict=True, generator_overrides=args.strict_generator_set, test_data=args.test_data)
        seconds["strict"] = round(time.perf_counter() - t1, 1)
        print(f"strict protocol done ({seconds['strict'] / 60:.1f} min)", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    try:
        return sweep(argv)
    except CxraugError as e:  # a wrong setting or input: one line, like the CLI
        sys.exit(f"error: {e}")


def sweep(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="the real dataset (any layout cxraug reads); required unless --report-only")
    ap.add_argument("--model", help="the generator: shipped name or run folder (its config.yaml is the "
                    "strict generators' recipe); required unless --report-only")
    ap.add_argument("--test-data", action="append", default=[], help="external test set (repeatable)")
    ap.add_argument("--fracs", default="0.01,0.05,0.1,0.25,1.0", help="paper protocol fractions")
    ap.add_argument("--strict-fracs", default="0.01,0.05,0.1,0.25", help="strict protocol fractions ('' for none)")
    ap.add_argument("--strict-generator-set", action="append", default=[],
                    help="override for the strict generators' recipe, e.g. train.steps=800 "
                         "(default none: the full recipe)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-synth", type=int, default=2000, help="cohort size per generator")
    ap.add_argument("--set", action="append", default=[], help="BenchConfig override KEY=VALUE")
    ap.add_argument("--work", type=Path, default=Path("runs/limited-v2"))
    ap.add_argument("--name", default="limited_data_v2", help="file stem under --out-dir")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: recompute the statistics of the finished sweep under --work "
                         "with this version and rewrite the report")
    args = ap.parse_args(argv)
    if not args.report_only and not (args.data and args.model):
        ap.error("--data and --model are required (only --report-only works without them)")
    argv = ["benchmarks/limited_data.py", *(sys.argv[1:] if argv is None else argv)]
    fracs, strict_fracs = fractions(args.fracs, "--fracs"), fractions(args.strict_fracs, "--strict-fracs")
    if not fracs:
        sys.exit("--fracs is empty: the paper protocol needs at least one fraction")

    protocols = ("paper", "strict") if strict_fracs else ("paper",)
    seconds = {}
    if args.report_only:
        for proto in protocols:
            resummarise(args.work / proto, args.test_data)
    else:
        seconds = run_sweep(args, argv, fracs, strict_fracs)
    files = [x for proto in protocols for x in (f"--{proto}", str(args.work / proto / "results.json"))]
    report = report_module()
    report.main([*files, "--name", args.name, "--out-dir", str(args.out_dir)])
    out = args.out_dir / f"{args.name}.json"
    record = json.loads(out.read_text())
    if args.report_only:  # the sweep's command stays the one that ran it
        record["report_command"] = shlex.join(argv)
        ran = args.work / "paper" / "command.txt"
        argv = shlex.split(ran.read_text()) if ran.is_file() else argv
    record.update(command=shlex.join(argv), machine=cpu_info() | {"torch_threads": torch.get_num_threads()},
                  strict_generator_overrides=args.strict_generator_set, n_synth=args.n_synth,
                  seconds_this_call=seconds)
    out.write_text(json.dumps(report.clean(record), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
