"""The ``cxraug eval`` quality card: every generative metric of a synthetic cohort against real
images in one extractor's feature space (:mod:`.extractors`), as a JSON-ready dict.

Every card also carries a real-vs-real floor (the same metrics between two disjoint real sets
sized like the synthetic comparison) and a classifier two-sample test (C2ST: cross-validated AUC
of telling the two sets apart; 0.5 = indistinguishable), so a score reads against what real data
scores against itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxraug.data import labels as L
from cxraug.experiments.quality.extractors import make_extractor
from cxraug.experiments.quality.image_stats import STATS_SIZE, stats_section
from cxraug.experiments.quality.inputs import (
    NEGATIVE,
    canonical_target,
    check_real_ref,
    floor_split,
    load_real_images,
    load_real_ref,
    load_synth,
    real_mask,
    wanted_labels,
)
from cxraug.metrics.generative import (
    C2ST_FOLDS,
    METRIC_KEYS,
    feature_metrics,
    ssim_diversity,
    subsample_rows,
    two_sample_auc,
)


def scores(real: np.ndarray, other: np.ndarray, k: int = 3, seed: int = 0) -> dict:
    """Feature metrics plus the two-sample AUC of one (real, other) pair of feature sets; the
    AUC is None when a side has fewer than ``C2ST_FOLDS`` rows."""
    c2st = two_sample_auc(real, other, seed=seed) if min(len(real), len(other)) >= C2ST_FOLDS else None
    return {**feature_metrics(real, other, k, seed), "two_sample_auc": None if c2st is None else c2st["auc"],
            "two_sample": c2st}


def real_floor(fr: np.ndarray, fs: np.ndarray, fref: np.ndarray | None, k: int = 3,
               seed: int = 0) -> tuple[dict, dict | None]:
    """The real-vs-real floor and its like-for-like synthetic counterpart.

    The floor scores a real ``reference`` set against a disjoint real ``compared`` set: the two
    parts of :func:`floor_split` of ``fr``, or, with second real features ``fref``, all of ``fr``
    against ``fref`` subsampled to the synthetic count. The counterpart scores the synthetic
    features, subsampled to the compared set's n, against the same reference set, so the two differ
    only in what is compared (identical to the overall scores when no subsampling was needed).
    Returns ``(floor, counterpart)``; the floor says ``skipped`` (metrics None) when a side is
    too small for the metrics.
    """
    if fref is None:
        ref_idx, cmp_idx = floor_split(len(fr), len(fs), seed)
        reference, compared = fr[ref_idx], fr[cmp_idx]
    else:
        reference, compared = fr, fref[subsample_rows(len(fref), len(fs), np.random.default_rng([seed, 5]))]
    counts = {"reference": len(reference), "compared": len(compared)}
    need = max(k + 1, C2ST_FOLDS)
    if min(counts.values()) < need:
        return {"counts": counts, **dict.fromkeys((*METRIC_KEYS, "two_sample_auc", "two_sample")),
                "skipped": f"{counts['reference']} reference / {counts['compared']} compared real images "
                           f"< {need} per side"}, None
    synth = fs[subsample_rows(len(fs), len(compared), np.random.default_rng([seed, 6]))]
    floor = {"counts": counts, **scores(reference, compared, k, seed), "skipped": None}
    counterpart = {"counts": {"real": len(reference), "synthetic": len(synth)},
                   **scores(reference, synth, k, seed)}
    # equal n: the k-NN metrics (coverage above all) depend on the two sides' sizes; with the
    # reference cut to the compared set's n, a perfect generator scores what the floor scores
    ref_n = reference[subsample_rows(len(reference), len(compared), np.random.default_rng([seed, 7]))]
    floor["equal_n"] = {"n": len(compared), **scores(ref_n, compared, k, seed)}
    counterpart["equal_n"] = {"n": len(synth), **scores(ref_n, synth, k, seed)}
    return floor, counterpart


def evaluate(real: str | Path, synth: Path, extractor: str = "classifier", classifier: Path | None = None,
             inception_weights: Path | None = None, image_size: int = 64, max_images: int | None = 5000,
             seed: int = 0, labels: str | list[str] | None = None, min_count: int = 10, k: int = 3,
             ssim_pairs: int = 50, kind: str = "auto", xrv_weights: Path | None = None,
             real_ref: str | Path | None = None, stats_size: int | None = STATS_SIZE) -> dict:
    """Compute every metric of a synthetic cohort against real images; returns the eval card.

    Next to the synthetic scores, ``card["floor"]`` holds the same metrics between two disjoint
    real sets (two parts of ``real``, or ``real`` vs ``real_ref``) and ``card["synthetic_matched"]``
    the synthetic scores against the floor's reference set at the floor's n: read a synthetic
    score against its floor, not against zero. ``card["image_stats"]`` holds the extractor-free
    image statistics (power spectrum per band, Laplacian variance, gradient, contrast,
    percentiles; :mod:`.image_stats`) on the images centre-cropped at ``stats_size`` px, beside
    their own real-vs-real floor (None when ``stats_size`` is None)."""
    # 1. extractor first: a missing weights file should fail before any image is read
    embed, info = make_extractor(extractor, classifier, inception_weights, xrv_weights=xrv_weights)
    check_real_ref(real_ref)
    # 2. images at one size, aspect-preserving pad (and centre-cropped at stats_size)
    real_img, real_raw, real_crop = load_real_images(real, image_size, max_images, seed, kind, stats_size)
    syn_img, targets, syn_crop = load_synth(Path(synth), image_size, max_images, seed, stats_size)
    targets = np.array([canonical_target(t) for t in targets])  # manifests keep "pneumonia"
    ref_img, dropped, ref_crop = (None, 0, None) if real_ref is None else load_real_ref(
        real_ref, real_img, image_size, max_images, seed, kind, stats_size)
    # 3. features and metrics on everything
    fr, fs = embed(real_img), embed(syn_img)
    overall = scores(fr, fs, k, seed)
    floor, matched = real_floor(fr, fs, None if ref_img is None else embed(ref_img), k, seed)
    source = ({"source": "split", "real_ref": None} if real_ref is None else
              {"source": "real-ref", "real_ref": str(real_ref), "overlap_dropped": dropped})
    card = {
        "extractor": info, "real": str(real), "synth": str(synth),
        "counts": {"real": len(real_img), "synthetic": len(syn_img)},
        "resize": f"aspect-preserving pad to {image_size} px", "image_size": image_size,
        "seed": seed, "max_images": max_images, "k": k, "min_count": min_count,
        "metrics": {x: overall[x] for x in METRIC_KEYS},
        "diversity": ssim_diversity(syn_img, targets, ssim_pairs, seed),
        "two_sample_auc": overall["two_sample_auc"], "two_sample": overall["two_sample"],
        "floor": {**source, **floor}, "synthetic_matched": matched,
        "image_stats": None if stats_size is None else stats_section(real_crop, syn_crop, ref_crop, seed),
    }
    # 4. per label: a cohort target vs real images positive for it, when both sides are big enough
    wanted = wanted_labels(labels)
    per_label, skipped = {}, {}
    for t in sorted(set(targets.tolist()) - {"all"}):
        if t.lower() != NEGATIVE:
            try:
                t = L.canonical(t)
            except L.UnknownLabelError:
                skipped[t] = "not an observation"
                continue
        if wanted is not None and t not in wanted:
            continue
        ms, mr = targets == t, real_mask(real_raw, t)
        if min(ms.sum(), mr.sum()) < max(min_count, k + 1):
            skipped[t] = f"{int(mr.sum())} real / {int(ms.sum())} synthetic < {max(min_count, k + 1)}"
            continue
        per_label[t] = {"real": int(mr.sum()), "synthetic": int(ms.sum()),
                        **feature_metrics(fr[mr], fs[ms], k, seed)}
    card["per_label"], card["per_label_skipped"] = per_label, skipped
    return card


SUMMARY_COLUMNS = ["scope", "real", "synth", "FID", "KID", "prec", "rec", "dens", "cov", "C2ST AUC"]


def summary_rows(card: dict) -> list[list[object]]:
    """Table rows ``[scope, n real, n synth, FID, KID, P, R, D, C, C2ST AUC]`` for the CLI: the
    whole cohort, the same at the floor's n when that differs, the real-vs-real floor (its two
    real sets' sizes in the n columns), both again with equal n on each side (where the k-NN
    metrics of a perfect generator match the floor's), then each label; ``-`` where a value was
    not computed."""
    def num(v, fmt=".3f"):
        return "-" if v is None else format(v, fmt)

    def row(name, n_r, n_s, m, auc=None):
        kid_ = "-" if m["kid_mean"] is None else f"{m['kid_mean']:.4f}±{m['kid_std']:.4f}"
        return [name, n_r, n_s, num(m["fid"]), kid_,
                *(num(m[x]) for x in ("precision", "recall", "density", "coverage")), num(auc)]

    rows = [row("all", card["counts"]["real"], card["counts"]["synthetic"], card["metrics"],
                card.get("two_sample_auc"))]
    matched, floor = card.get("synthetic_matched"), card.get("floor")
    if matched is not None and matched["counts"] != card["counts"]:
        rows.append(row("all @ floor n", matched["counts"]["real"], matched["counts"]["synthetic"],
                        matched, matched["two_sample_auc"]))
    if floor is not None:
        rows.append(row("real-vs-real floor", floor["counts"]["reference"], floor["counts"]["compared"],
                        floor, floor["two_sample_auc"]))
    if matched is not None and "equal_n" in matched and matched["equal_n"]["n"] != matched["counts"]["real"]:
        for name, m in (("all @ equal n", matched["equal_n"]), ("real-vs-real @ equal n", floor["equal_n"])):
            rows.append(row(name, m["n"], m["n"], m, m["two_sample_auc"]))
    rows += [row(t, m["real"], m["synthetic"], m) for t, m in card["per_label"].items()]
    return rows
