"""The bench's report: every arm's mAUC and paired differences with hierarchical bootstrap
intervals, the declared primary comparison, the Holm-adjusted family, the transfer efficiency,
the headroom, the external test sets, the generator card, versions and the plot."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxraug.classify.real import RealData
from cxraug.core.errors import CxraugError
from cxraug.core.precision import cpu_info
from cxraug.experiments.bench.arms import saved_external_scores
from cxraug.experiments.bench.config import ARMS, DUP, GEN_ARMS, GEN_DATA, BenchConfig, job_dir
from cxraug.experiments.bench.inputs import TestSet
from cxraug.metrics import hierarchical as H


def _scores(out: Path, r: dict, test: TestSet | None) -> np.ndarray:
    folder = job_dir(out, r["frac"], r["draw"], r["arm"], r["seed"])
    if test is None:
        return np.load(folder / "test_scores.npy")
    s = saved_external_scores(folder, test)
    if s is None:
        raise CxraugError(f"{folder}: no scores on test set {test.name}; rerun the bench to add them")
    return s


def _grid(results: list[dict], frac: float) -> tuple[dict[str, list[dict]], int, int]:
    """The jobs of ``frac`` by arm, each as a draws x seeds list (row-major), and D, S."""
    mine = [r for r in results if r["frac"] == frac]
    draws = sorted({r["draw"] for r in mine})
    seeds = sorted({r["seed"] for r in mine})
    by_arm: dict[str, list[dict]] = {}
    index = {(r["arm"], r["draw"], r["seed"]): r for r in mine}
    for arm in sorted({r["arm"] for r in mine}, key=ARMS.index):
        grid = [index.get((arm, d, s)) for d in draws for s in seeds]
        if any(g is None for g in grid):
            raise CxraugError(f"real fraction {frac:g}, arm {arm}: not every draw x seed job ran")
        by_arm[arm] = grid
    return by_arm, len(draws), len(seeds)


def arm_stats(cfg: BenchConfig, out: Path, results: list[dict], frac: float,
              y: np.ndarray, patient_ids: np.ndarray, test: TestSet | None) -> dict:
    """Per arm of one fraction on one test set: (point [D, S], boot [D, S, B]) of the mAUC. The
    patient resamples depend only on the test set and the bootstrap seed, and the draw / seed
    resamples only on the shape, so the stats of two benches on the same draws, seeds and test set
    are paired at every level (:func:`paired_diff` of them is a paired difference)."""
    by_arm, n_d, n_s = _grid(results, frac)
    flat = [(arm, r) for arm, grid in by_arm.items() for r in grid]
    point, boot = H.job_resamples(y, [_scores(out, r, test) for _, r in flat], patient_ids,
                                  cfg.n_boot, seed=0)
    stats, k = {}, 0
    for arm, grid in by_arm.items():
        n = len(grid)
        stats[arm] = (point[k:k + n].reshape(n_d, n_s), boot[k:k + n].reshape(n_d, n_s, -1))
        k += n
    return stats


def paired_diff(a: tuple, b: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``a - b`` of two :func:`arm_stats` entries, job by job and replicate by replicate."""
    return a[0] - b[0], a[1] - b[1]


def _comparisons(cfg: BenchConfig, stats: dict[float, dict]) -> tuple[dict | None, list[dict]]:
    """The declared primary comparison and the Holm-adjusted family (every other synthetic or
    generator arm against ``real+dup``, at every fraction)."""
    primary_key = cfg.primary_comparison()
    primary, family = None, []
    for frac, arms in stats.items():
        if DUP not in arms:
            continue
        for arm in arms:
            if arm not in GEN_ARMS:
                continue
            rec = {"frac": frac, "arm": arm, "reference": DUP,
                   **H.summarise(*paired_diff(arms[arm], arms[DUP]))}
            if primary_key == (frac, arm):
                primary = rec | {"declared": cfg.primary or "default: smallest fraction, first synthetic arm"}
            else:
                family.append(rec)
    for rec, adj in zip(family, H.holm([r["p_value"] for r in family])):
        rec["p_holm"] = adj
    return primary, family


def summarise(cfg: BenchConfig, real: RealData, results: list[dict], out: Path,
              tests: list[TestSet] | None = None) -> dict:
    """Every arm's mAUC and every paired difference with hierarchical bootstrap intervals
    (subset draws, seeds, test patients: :mod:`cxraug.metrics.hierarchical`), the primary
    comparison, the Holm-adjusted family, the transfer efficiency and the headroom."""
    tests = tests or []
    fracs = sorted({r["frac"] for r in results})
    sets = [("test", real.test.targets, real.test.patient_ids, None)]
    sets += [(t.name, t.data.targets, t.data.patient_ids, t) for t in tests]
    stats = {name: {f: arm_stats(cfg, out, results, f, y, pids, t) for f in fracs}
             for name, y, pids, t in sets}
    cells = []
    for frac in fracs:
        for arm, (point, boot) in stats["test"][frac].items():
            jobs_here = [r for r in results if r["frac"] == frac and r["arm"] == arm]
            cell = {"frac": frac, "arm": arm, **H.summarise(point, boot),
                    "optimizer_steps": sorted({r["optimizer_steps"] for r in jobs_here}),
                    "n_real_images": [r["n_real"] for r in jobs_here if r["seed"] == jobs_here[0]["seed"]]}
            refs = stats["test"][frac]
            for key, ref in (("vs_real", "real"), ("vs_dup", DUP)):
                if arm != ref and ref in refs and (key == "vs_real" or arm in GEN_ARMS):
                    cell[key] = H.summarise(*paired_diff((point, boot), refs[ref]))
            if tests:
                cell["external"] = {t.name: H.summarise(*stats[t.name][frac][arm]) for t in tests}
            cells.append(cell)
    primary, family = _comparisons(cfg, stats["test"])
    transfer = []
    for frac in fracs:
        arms = stats["test"][frac]
        if {"synth->real", GEN_DATA, "real"} <= set(arms):
            q = H.ratio(paired_diff(arms["synth->real"], arms["real"]), paired_diff(arms[GEN_DATA], arms["real"]))
            transfer.append({"frac": frac, **q})
    headroom = []
    if 1.0 in fracs:
        top = stats["test"][1.0]["real"][0].mean()
        headroom = [{"frac": f, "real_100": float(top), "real": float(stats["test"][f]["real"][0].mean()),
                     "headroom": float(top - stats["test"][f]["real"][0].mean())} for f in fracs if f < 1]
    return {"jobs": results, "cells": cells, "primary": primary, "family": family,
            "transfer_efficiency": transfer, "headroom": headroom,
            "statistics": {"method": "hierarchical paired bootstrap: subset draws, then seeds, then "
                           "test patients (draw and seed spread widened by sqrt(n/(n-1)))",
                           "level": H.LEVEL, "n_boot": cfg.n_boot, "family_correction": "holm",
                           "selection": "final weights of a fixed schedule (no validation data)",
                           "steps": cfg.steps, "pretrain_steps": cfg.split_steps()[0]}}


def test_summary(real: RealData) -> dict:
    y = real.test.targets
    return {"n_images": len(y), "n_patients": int(len(set(real.test.patient_ids))),
            "positives": {o: int(np.nansum(y[:, j] == 1)) for j, o in enumerate(real.labels)},
            "negatives": {o: int(np.nansum(y[:, j] == 0)) for j, o in enumerate(real.labels)}}


def versions() -> dict:
    import timm
    import torch

    import cxraug

    return {"cxraug": cxraug.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "cpus": __import__("os").cpu_count(), "cpu": cpu_info(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def plot(summary: dict, path: Path, title: str) -> Path:
    """mAUC vs real fraction per arm, with the hierarchical 95% interval as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = pd.DataFrame(summary["cells"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, grp in cells.groupby("arm", sort=False):
        grp = grp.sort_values("frac")
        ax.plot(grp["frac"], grp["estimate"], marker="o", label=arm)
        ax.fill_between(grp["frac"], [c[0] for c in grp["ci"]], [c[1] for c in grp["ci"]], alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of real training patients")
    ax.set_ylabel("test mAUC (95% hierarchical bootstrap)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def generator_card(results: list[dict], strict: bool, model_ref: Any) -> dict:
    """Protocol and, per generator (one per fraction and draw under ``strict``), its real fraction
    and image count, from the jobs that used one (``gen-data->real``'s count first: it is exact)."""
    fractions: dict[str, dict] = {}
    for r in sorted(results, key=lambda r: r["arm"] != GEN_DATA):
        if r["arm"] not in GEN_ARMS:
            continue
        rec = fractions.setdefault(f"{r['frac']:g}_draw{r.get('draw', 0)}" if strict else "all",
                                   {"real_frac": None, "images": None})
        for k, v in (("real_frac", r.get("generator_real_frac")), ("images", r.get("generator_real_images"))):
            rec[k] = rec[k] if rec[k] is not None else v
    return {"protocol": "strict" if strict else "paper",
            "model": str(model_ref) if model_ref is not None else None, "generators": fractions}
