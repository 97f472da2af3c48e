"""The image-statistics section of the quality card: the power spectrum per band, Laplacian
variance, gradient, contrast and intensity percentiles of :mod:`cxraug.metrics.image_stats`, of a
synthetic set (a generator's cohort, or VAE reconstructions of real images) against real images,
each beside the same numbers between two disjoint real sets (the real-vs-real floor: what a
perfect generator would score at this n), as a JSON-ready dict, table rows and markdown.

Images are centre-cropped to a square and resized to one size (default 128 px, where the bands
are 1-4 ... 48-64 cycles per image), intensities in [0, 1].
"""

from __future__ import annotations

import numpy as np

from cxraug.experiments.quality.inputs import floor_split
from cxraug.metrics import image_stats as S
from cxraug.metrics.generative import subsample_rows

STATS_SIZE = 128
STATS_COLUMNS = ["statistic", "real", "synthetic", "ratio", "AUC", "floor ratio", "floor AUC"]


def _take(stats: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in stats.items()}


def stats_section(real: np.ndarray, synth: np.ndarray, real_ref: np.ndarray | None = None,
                  seed: int = 0) -> dict:
    """Image statistics of ``synth`` against ``real`` (both ``uint8 [N, S, S]``, centre-cropped).

    ``synthetic``: all real vs all synthetic images. ``floor``: a real ``reference`` set vs a
    disjoint real ``compared`` set of the synthetic set's size (the card's :func:`floor_split`
    of ``real`` with the same seed, so the same two parts as the feature floor; or all of ``real``
    vs ``real_ref`` subsampled to that size). ``synthetic_matched``: the synthetic images,
    subsampled to the compared set's n, against the same reference set, so it differs from the
    floor only in what is compared."""
    size = real.shape[-1]
    sr, ss = S.image_stats(real), S.image_stats(synth)
    if real_ref is None:
        ref_idx, cmp_idx = floor_split(len(real), len(synth), seed)
        reference, compared = _take(sr, ref_idx), _take(sr, cmp_idx)
    else:
        pick = subsample_rows(len(real_ref), len(synth), np.random.default_rng([seed, 5]))
        reference, compared = sr, S.image_stats(real_ref[pick])
    section = {"image_size": size, "resize": f"centre-crop to square, resize to {size} px",
               "intensity": "[0, 1]", "bands": {k: list(v) for k, v in S.bands(size).items()},
               "auc": "single-statistic ROC AUC, folded: max(a, 1 - a); 0.5 = no separation",
               "synthetic": S.compare(sr, ss)}
    n_ref, n_cmp = len(next(iter(reference.values()))), len(next(iter(compared.values())))
    if min(n_ref, n_cmp) < 2:
        section["floor"] = {"skipped": f"{n_ref} reference / {n_cmp} compared real images < 2 per side"}
        section["synthetic_matched"] = None
        return section
    section["floor"] = S.compare(reference, compared)
    matched = subsample_rows(len(synth), n_cmp, np.random.default_rng([seed, 6]))
    section["synthetic_matched"] = S.compare(reference, _take(ss, matched))
    return section


def stats_rows(section: dict) -> list[list[object]]:
    """One row per statistic, :data:`STATS_COLUMNS`: real and synthetic means, ratio synthetic /
    real and single-statistic AUC, then the real-vs-real floor's ratio and AUC (``-`` if skipped)."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    floor = section["floor"].get("stats", {})
    rows = []
    for name, s in section["synthetic"]["stats"].items():
        f = floor.get(name, {})
        rows.append([name, num(s["real"], ".4g"), num(s["compared"], ".4g"), num(s["ratio"], ".3f"),
                     num(s["auc"], ".3f"), num(f.get("ratio"), ".3f"), num(f.get("auc"), ".3f")])
    return rows


def stats_markdown(sections: dict[str, dict]) -> str:
    """Markdown: one table per named section (e.g. ``{"VAE reconstructions": ..., "generator":
    ...}``), each with its counts and its own real-vs-real floor."""
    out = []
    for name, sec in sections.items():
        c, floor = sec["synthetic"]["counts"], sec["floor"]
        where = (floor["skipped"] if "skipped" in floor else
                 f"{floor['counts']['real']} vs {floor['counts']['compared']} disjoint real images")
        out += [f"### {name}: {c['compared']} images vs {c['real']} real ({sec['resize']}; floor: {where})",
                "", "| " + " | ".join(STATS_COLUMNS) + " |", "|" + "---|" * len(STATS_COLUMNS)]
        out += ["| " + " | ".join(map(str, r)) + " |" for r in stats_rows(sec)]
        out.append("")
    legend = "; ".join(f"{k}: {v}" for k, v in S.DESCRIPTIONS.items())
    return "\n".join([*out, f"{legend}; power_LO-HI: mean spectral power (Hann-windowed) at LO to HI "
                             "cycles per image.", ""])
