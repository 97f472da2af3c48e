"""The CI benchmark job: the quick start (a reduced limited-data sweep on the embedded real
sample, cohort from the shipped generator kermany-128) plus the speed ratios, in well under 30
minutes on 2 cores.

    python benchmarks/ci.py [--work DIR]

Writes benchmarks/results/ci.json and prints a summary table. It fails only on errors (a crash,
a missing output); the numbers themselves are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path(".cache/ci-bench"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ci.json")
    args = ap.parse_args()
    cxraug = str(Path(sys.executable).with_name("cxraug"))
    timings = {"quickstart_s": run([cxraug, "quickstart", "--out", str(args.work / "quickstart")])}
    timings["speed_s"] = run([sys.executable, str(HERE / "speed.py"), "--quick", "--model",
                              "kermany-128",
                              "--out", str(args.work / "speed.json")])
    bench = json.loads((args.work / "quickstart" / "bench" / "results.json").read_text())
    speed = json.loads((args.work / "speed.json").read_text())
    summary = {"timings": timings, "labels": bench["labels"], "test": bench["test"],
               "cells": bench["cells"], "speed": speed, "versions": bench["versions"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))

    print(f"\nCI benchmark (embedded sample, test n={bench['test']['n_images']}, "
          f"labels {', '.join(bench['labels'])})")
    print(f"{'real frac':>9} {'arm':>12} {'mAUC':>6} {'95% CI':>16} {'vs real':>8}")
    for c in bench["cells"]:
        diff = f"{c['diff_vs_real_mean']:+.3f}" if "diff_vs_real_mean" in c else "-"
        print(f"{c['frac']:>9g} {c['arm']:>12} {c['mauc_mean']:6.3f} "
              f"[{c['ci_mean'][0]:.3f}, {c['ci_mean'][1]:.3f}] {diff:>8}")
    d, cl = speed["denoiser"], speed["classifier"]
    print(f"denoiser step at {d['fraction_of_peak']:.1%} of measured matmul peak; classifier data "
          f"pipeline at {cl['pipeline_over_in_memory']:.2f}x of in-memory speed")
    if "synth" in speed:
        s = speed["synth"]
        mem = ", ".join(f"n={m['n']}: {m['peak_rss_mb']:.0f} MB" for m in s.get("memory", []))
        print(f"synth vs plain loop: {s.get('speedup')}x images/s; peak RSS {mem}")
    print(f"quick start {timings['quickstart_s']:.0f} s, speed ratios {timings['speed_s']:.0f} s")


if __name__ == "__main__":
    main()
