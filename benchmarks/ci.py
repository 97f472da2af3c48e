"""The CI benchmark job: the quick start (the bench protocol sized down, on the embedded real
sample, cohort from the shipped generator kermany-128) plus the speed ratios, from a clean work
folder every run; it fails when a number crosses its declared threshold.

    python benchmarks/ci.py [--work DIR] [--out FILE]

Writes ``benchmarks/results/ci.json`` (every number, its threshold and whether it passed) and
prints a summary. The thresholds (:data:`THRESHOLDS`) are floors and ceilings a working install
clears with room to spare on a 2-core CPU; crossing one means something broke (a classifier that
no longer learns, a generator that copies its training images, a data pipeline or sampler that
lost its speed), not that a number moved within its noise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cxraug.core.paths import relative_paths

HERE = Path(__file__).parent

#: name -> (how to read it from the summary, comparison, threshold, why)
THRESHOLDS = {
    "quickstart_real_100_mauc": (">=", 0.70, "real arm at 100 % of the sample: the classifier learns "
                                 "(chance is 0.5)"),
    "quickstart_synth_real_mauc": (">=", 0.60, "real+synth at 100 %: the synthetic images are not "
                                   "poison"),
    "cohort_memorisation_rejected": ("<=", 0.05, "share of the cohort the memorisation gate rejects "
                                     "(the shipped model's card: 2 of 400)"),
    "equal_steps": ("==", 1, "every bench arm trained the same optimiser steps"),
    "classifier_pipeline_over_in_memory": (">=", 0.5, "the uint8 batch pipeline keeps up with "
                                           "in-memory training"),
    "denoiser_fraction_of_peak": (">=", 0.1, "the denoiser step uses the CPU's matmul units"),
    "quickstart_s": ("<=", 600, "wall time of the quick start (target 360 s on an idle 2-core "
                     "machine; the ceiling leaves room for a busy CI host)"),
}


def run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def measured(bench: dict, speed: dict, cohort: Path, timings: dict) -> dict:
    """The numbers the thresholds judge, from the job's outputs."""
    cells = {(c["frac"], c["arm"]): c for c in bench["cells"]}
    counts = json.loads((cohort / "cohort.json").read_text())["counts"]
    steps = {j["optimizer_steps"] for j in bench["jobs"]}
    return {"quickstart_real_100_mauc": cells[(1.0, "real")]["estimate"],
            "quickstart_synth_real_mauc": cells[(1.0, "real+synth")]["estimate"],
            "cohort_memorisation_rejected": counts["rejected"] / max(1, counts["generated"]),
            "equal_steps": int(len(steps) == 1),
            "classifier_pipeline_over_in_memory": speed["classifier"]["pipeline_over_in_memory"],
            "denoiser_fraction_of_peak": speed["denoiser"]["fraction_of_peak"],
            "quickstart_s": timings["quickstart_s"]}


def judge(values: dict) -> dict:
    ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b}
    return {k: {"value": values[k], "op": op, "threshold": t, "ok": bool(ops[op](values[k], t)), "why": why}
            for k, (op, t, why) in THRESHOLDS.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path(".cache/ci-bench"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ci.json")
    args = ap.parse_args(argv)
    if args.work.exists():  # a stale folder would be resumed, not measured
        shutil.rmtree(args.work)
    cxraug = str(Path(sys.executable).with_name("cxraug"))
    timings = {"quickstart_s": run([cxraug, "quickstart", "--out", str(args.work / "quickstart")])}
    timings["speed_s"] = run([sys.executable, str(HERE / "speed.py"), "--quick", "--model",
                              "kermany-128", "--out", str(args.work / "speed.json")])
    bench = json.loads((args.work / "quickstart" / "bench" / "results.json").read_text())
    speed = json.loads((args.work / "speed.json").read_text())
    checks = judge(measured(bench, speed, args.work / "quickstart" / "cohort", timings))
    summary = {"timings": timings, "labels": bench["labels"], "test": bench["test"],
               "checks": checks, "cells": bench["cells"], "speed": speed, "versions": bench["versions"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(relative_paths(summary, args.out.parent), indent=2))

    print(f"\nCI benchmark (embedded sample, test n={bench['test']['n_images']}, "
          f"labels {', '.join(bench['labels'])})")
    for name, c in checks.items():
        print(f"{'ok  ' if c['ok'] else 'FAIL'} {name}: {c['value']:.3f} {c['op']} {c['threshold']}  ({c['why']})")
    bad = [n for n, c in checks.items() if not c["ok"]]
    if bad:
        print(f"CI benchmark failed: {', '.join(bad)} crossed its threshold", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
