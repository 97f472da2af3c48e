"""The bench's report: bootstrap statistics per job, paired differences against ``real``, the
transfer efficiency, the external test sets' mAUC, the generator card, versions and the plot."""

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
from cxraug.experiments.bench.config import (
    DUP,
    GEN_ARMS,
    GEN_DATA,
    SYNTH_ARMS,
    BenchConfig,
    job_dir,
)
from cxraug.experiments.bench.inputs import TestSet
from cxraug.metrics.bootstrap import bootstrap_auc, paired_difference, paired_ratio


def _external_stats(cfg: BenchConfig, r: dict, out: Path, tests: list[TestSet]) -> dict:
    """mAUC with a patient-bootstrap CI per external test set, for one job."""
    folder, stats = job_dir(out, r["frac"], r["arm"], r["seed"]), {}
    for t in tests:
        s = saved_external_scores(folder, t)
        if s is None:
            raise CxraugError(f"{folder}: no scores on test set {t.name}; rerun the bench to add them")
        b = bootstrap_auc(t.data.targets, s, t.data.patient_ids, cfg.n_boot, seed=r["seed"],
                          label_names=t.columns)
        stats[t.name] = {"mauc": b["mauc"], "ci": list(b["ci"]),
                         "per_label": {k: (v["auc"] if v else None) for k, v in b["per_label"].items()}}
    return stats


def _transfer(cfg: BenchConfig, real: RealData, out: Path, fracs: list[float],
              results: list[dict]) -> list[dict]:
    """Per real fraction: ``(synth->real - real) / (gen-data->real - real)`` per seed on the
    paired differences' resamples, and the cell value from the seeds' mean differences."""
    have = {(r["frac"], r["arm"], r["seed"]) for r in results}
    test, cells = real.test, []
    for frac in fracs:
        seeds = sorted({r["seed"] for r in results if r["frac"] == frac})
        both = [s for s in seeds if {(frac, "synth->real", s), (frac, GEN_DATA, s)} <= have]
        cell: dict[str, Any] = {"frac": frac, "value": None, "ci": None, "per_seed": []}
        if not both or len(both) < len(seeds):
            cell["reason"] = "needs arms synth->real and gen-data->real (--arms)"
            cells.append(cell)
            continue
        for seed in both:
            s = {a: np.load(job_dir(out, frac, a, seed) / "test_scores.npy")
                 for a in ("synth->real", GEN_DATA, "real")}
            q = paired_ratio(test.targets, s["synth->real"], s[GEN_DATA], s["real"],
                             test.patient_ids, cfg.n_boot, seed=seed, label_names=real.labels)
            cell["per_seed"].append({"seed": seed, "value": q["ratio"],
                                     "ci": list(q["ci"]) if q["ci"] else None,
                                     "numerator": q["numerator"], "numerator_ci": list(q["numerator_ci"]),
                                     "denominator": q["denominator"],
                                     "denominator_ci": list(q["denominator_ci"]), "reason": q["reason"]})
        bad = next((p for p in cell["per_seed"] if p["value"] is None), None)
        if bad is not None:
            cell["reason"] = f"seed {bad['seed']}: gen-data->real - real: {bad['reason']}"
        else:
            ps = cell["per_seed"]
            cell["value"] = float(np.mean([p["numerator"] for p in ps]) / np.mean([p["denominator"] for p in ps]))
            cell["ci"] = [float(np.mean([p["ci"][0] for p in ps])), float(np.mean([p["ci"][1] for p in ps]))]
            cell["reason"] = None
        cells.append(cell)
    return cells


def summarise(cfg: BenchConfig, real: RealData, results: list[dict], out: Path,
              tests: list[TestSet] | None = None) -> dict:
    """Bootstrap CIs per job, paired differences vs ``real`` (and, for the synthetic arms, vs the
    count-matched ``real+dup`` control when it ran), mean/spread across seeds, the transfer
    efficiency per fraction and the external test sets' mAUC."""
    test, tests = real.test, tests or []
    rows = []
    for r in results:
        s = np.load(job_dir(out, r["frac"], r["arm"], r["seed"]) / "test_scores.npy")
        b = bootstrap_auc(test.targets, s, test.patient_ids, cfg.n_boot, seed=r["seed"],
                          label_names=real.labels)
        rec = dict(r, mauc=b["mauc"], ci=list(b["ci"]),
                   per_label={k: (v["auc"] if v else None) for k, v in b["per_label"].items()})
        refs = {"real": r["arm"] != "real", "dup": r["arm"] in SYNTH_ARMS and DUP in cfg.arms}
        for key, arm in (("real", "real"), ("dup", DUP)):
            if refs[key]:
                ref = np.load(job_dir(out, r["frac"], arm, r["seed"]) / "test_scores.npy")
                d = paired_difference(test.targets, s, ref, test.patient_ids, cfg.n_boot,
                                      seed=r["seed"], label_names=real.labels)
                rec[f"diff_vs_{key}"] = {"diff": d["diff"], "ci": list(d["ci"]), "p_value": d["p_value"]}
        if tests:
            rec["external"] = _external_stats(cfg, r, out, tests)
        rows.append(rec)
    cells = {}
    for (frac, arm), grp in pd.DataFrame(rows).groupby(["frac", "arm"], sort=False):
        m = grp["mauc"].astype(float)
        cell = {"frac": frac, "arm": arm, "seeds": len(grp), "mauc_mean": float(m.mean()),
                "mauc_sd": float(m.std(ddof=1)) if len(m) > 1 else 0.0,
                "ci_mean": [float(np.mean([c[0] for c in grp["ci"]])), float(np.mean([c[1] for c in grp["ci"]]))]}
        if arm != "real":
            diffs = [d["diff"] for d in grp["diff_vs_real"]]
            cell["diff_vs_real_mean"] = float(np.mean(diffs))
            cell["diff_ci_mean"] = [float(np.mean([d["ci"][0] for d in grp["diff_vs_real"]])),
                                    float(np.mean([d["ci"][1] for d in grp["diff_vs_real"]]))]
        if "diff_vs_dup" in grp and grp["diff_vs_dup"].notna().all():
            dup = list(grp["diff_vs_dup"])
            cell["diff_vs_dup_mean"] = float(np.mean([d["diff"] for d in dup]))
            cell["diff_vs_dup_ci_mean"] = [float(np.mean([d["ci"][0] for d in dup])),
                                           float(np.mean([d["ci"][1] for d in dup]))]
        if tests:
            cell["external"] = {t.name: _mean_stats([e[t.name] for e in grp["external"]]) for t in tests}
        cells[f"{frac:g}|{arm}"] = cell
    return {"jobs": rows, "cells": list(cells.values()),
            "transfer_efficiency": _transfer(cfg, real, out, list(cfg.real_fracs), results)}


def _mean_stats(stats: list[dict]) -> dict:
    """Mean/spread of one test set's mAUC across seeds, and the mean per-seed CI."""
    m = np.array([s["mauc"] if s["mauc"] is not None else np.nan for s in stats], float)
    return {"mauc_mean": float(np.nanmean(m)) if np.isfinite(m).any() else None,
            "mauc_sd": float(np.nanstd(m, ddof=1)) if np.isfinite(m).sum() > 1 else 0.0,
            "ci_mean": [float(np.mean([s["ci"][0] for s in stats])), float(np.mean([s["ci"][1] for s in stats]))]}


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
    """mAUC vs real fraction per arm, with the mean per-seed 95% CI as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = pd.DataFrame(summary["cells"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, grp in cells.groupby("arm", sort=False):
        grp = grp.sort_values("frac")
        ax.plot(grp["frac"], grp["mauc_mean"], marker="o", label=arm)
        ax.fill_between(grp["frac"], [c[0] for c in grp["ci_mean"]], [c[1] for c in grp["ci_mean"]],
                        alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of real training patients")
    ax.set_ylabel("test mAUC (95% patient-bootstrap CI)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def generator_card(results: list[dict], strict: bool, model_ref: Any) -> dict:
    """Protocol and, per generator (one per fraction under ``strict``), its real fraction and
    image count, from the jobs that used one (``gen-data->real``'s count first: it is exact)."""
    fractions: dict[str, dict] = {}
    for r in sorted(results, key=lambda r: r["arm"] != GEN_DATA):
        if r["arm"] not in GEN_ARMS:
            continue
        rec = fractions.setdefault(f"{r['frac']:g}" if strict else "all",
                                   {"real_frac": None, "images": None})
        for k, v in (("real_frac", r.get("generator_real_frac")), ("images", r.get("generator_real_images"))):
            rec[k] = rec[k] if rec[k] is not None else v
    return {"protocol": "strict" if strict else "paper",
            "model": str(model_ref) if model_ref is not None else None, "generators": fractions}
