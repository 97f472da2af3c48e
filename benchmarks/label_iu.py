"""Validate the report labelers against human MeSH indexing of the IU-Xray reports.

Run: ``/work/venv/bin/python benchmarks/label_iu.py [--errors "Pleural Effusion"]``

Every one of the 3,955 IU-Xray / Open-i reports (read from the installed torchxrayvision,
CC BY-NC-ND 4.0) carries MeSH terms that human indexers assigned (``<major>``), e.g.
``"Opacity/lung/base/left/mild"``. We map each term's heading (the part before the first ``/``),
sometimes with a qualifier, to the 14 CheXpert observations (:data:`MESH_TO_OBSERVATION`,
:data:`MESH_QUALIFIED`), label findings + impression with each labeler and score
per-observation precision / recall / F1 of the labeler's positives against the MeSH positives.

Scoring decisions:
* An observation is MeSH-positive when any major term maps to it, else MeSH-negative. Reports
  indexed ``"No Indexing"`` (no human terms) are left out.
* Uncertain labeler outputs count as negative (primary score; "positive = labeler positive").
  Measured on these reports, the indexers mostly did not index hedged findings: of the rule
  labeler's uncertain Pneumonia, Lung Lesion, Edema and Fracture outputs ("concerning for
  pneumonia", "metastatic disease cannot be excluded") only 10-22 % carry the MeSH term. The
  exception is a differential ("scarring or atelectasis"), which they index as both (~60 % for
  Atelectasis); the labeler follows CheXpert and calls it uncertain, which costs Atelectasis
  recall. The score with uncertain counted as positive is printed and saved too.
* A MeSH term qualified ``borderline`` ("Cardiomegaly/borderline") is a hedge by the indexer:
  that observation is not scored for that report.
* No Finding is scored with CheXpert's definition on both sides: MeSH-positive iff no term maps
  to an observation other than Support Devices. The indexers' own ``normal`` tag is stricter
  (a calcified granuloma or spine degeneration, outside the 14 observations, makes a study
  not normal), so agreement with it is reported separately (``no_finding_vs_mesh_normal``);
  no CheXpert-style labeler can reach it (precision ~0.54 for both labelers).
* macro-F1 averages the observations with at least 30 MeSH positives.

Baseline: a naive keyword matcher (one short keyword list per observation; a sentence with
"no"/"not"/"without" anywhere before the keyword makes it negative).

Results go to ``benchmarks/results/label_iu.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cxraug.data import labels as L
from cxraug.data.iu import IUReport, read_iu_reports
from cxraug.data.labeler import RuleLabeler
from cxraug.data.reports import split_sentences

OUT = Path(__file__).resolve().parent / "results" / "label_iu.json"
MIN_SUPPORT = 30

# MeSH major heading (lower case) -> observation. Headings not listed (e.g. Calcified Granuloma,
# Cicatrix, Lung/hypoinflation, Spine, Costophrenic Angle, Emphysema) have no CheXpert counterpart.
MESH_TO_OBSERVATION: dict[str, str | tuple[str, ...]] = {
    "cardiomegaly": "Cardiomegaly",
    "mediastinum": "Enlarged Cardiomediastinum",  # Mediastinum/prominent, .../enlarged
    "opacity": "Lung Opacity",
    "airspace disease": "Lung Opacity",
    "infiltrate": "Lung Opacity",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "pulmonary edema": "Edema",
    "pulmonary congestion": "Edema",
    "heart failure": "Edema",  # CHF on a radiograph = congestion / edema, as in CheXpert
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "pulmonary atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "hydropneumothorax": ("Pneumothorax", "Pleural Effusion"),
    "hemopneumothorax": ("Pneumothorax", "Pleural Effusion"),
    "pleural effusion": "Pleural Effusion",
    "fractures, bone": "Fracture",
    "catheters, indwelling": "Support Devices",
    "implanted medical device": "Support Devices",
    "surgical instruments": "Support Devices",  # mostly surgical clips and sternotomy wires
    "medical device": "Support Devices",
    "tube, inserted": "Support Devices",
    "stents": "Support Devices",
    "sutures": "Support Devices",
}
# Headings mapped only with a qualifier: Cardiac Shadow/enlarged = cardiomegaly; Thickening,
# Cicatrix or Calcinosis of the pleura = pleural thickening / scarring / plaques (Pleural Other);
# Density/lung = a lung opacity; interstitial (or reticular) markings, prominence, thickening and
# interstitial lung disease = Lung Opacity (CheXpert files interstitial patterns there).
MESH_QUALIFIED: list[tuple[str, str, str | None]] = [
    ("mass", "mediastinum", "Enlarged Cardiomediastinum"),
    ("mass", "breast", None),
    ("cardiac shadow", "enlarged", "Cardiomegaly"),
    ("thickening", "pleura", "Pleural Other"),
    ("pleura", "", "Pleural Other"),
    ("cicatrix", "pleura", "Pleural Other"),  # pleural scarring
    ("calcinosis", "pleura", "Pleural Other"),  # pleural calcification / calcified plaques
    ("density", "lung", "Lung Opacity"),
    ("markings", "interstitial", "Lung Opacity"),
    ("markings", "reticular", "Lung Opacity"),
    ("lung", "interstitial", "Lung Opacity"),  # Lung/interstitial/prominent
    ("thickening", "interstitial", "Lung Opacity"),
    ("lung diseases, interstitial", "", "Lung Opacity"),
]


def mesh_vector(report: IUReport) -> np.ndarray | None:
    """MeSH ground truth as ``float32[14]`` (1 / 0), or None when the report was not indexed."""
    terms = [t.strip().lower() for t in report.mesh_major]
    if not terms or "no indexing" in terms:
        return None
    v = np.zeros(L.N_OBS, np.float32)
    for t in terms:
        head, *quals = [p.strip() for p in t.split("/")]
        obs = MESH_TO_OBSERVATION.get(head)
        for h, q, o in MESH_QUALIFIED:
            if head == h and (not q or q in quals):
                obs = o
                break
        # "Cardiomegaly/borderline": the indexer hedged too; such rows are not scored
        value = L.UNCERTAIN if "borderline" in quals else L.POSITIVE
        for o in (obs,) if isinstance(obs, str) else obs or ():
            v[L.index(o)] = max(v[L.index(o)], value) if v[L.index(o)] != 0 else value
    # No Finding the CheXpert way, from the mapped terms: nothing but devices is indexed
    others = [i for i, o in enumerate(L.OBSERVATIONS) if o not in ("No Finding", "Support Devices")]
    v[L.index("No Finding")] = float(not np.isin(v[others], (L.POSITIVE, L.UNCERTAIN)).any())
    return v


# ---------------------------------------------------------------------- naive baseline
NAIVE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("widened mediastinum", "mediastinal widening"),
    "Cardiomegaly": ("cardiomegaly", "enlarged heart", "heart is enlarged", "cardiac enlargement"),
    "Lung Opacity": ("opacity", "opacities", "infiltrate", "airspace disease"),
    "Lung Lesion": ("nodule", "mass"),
    "Edema": ("edema", "congestion"),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("effusion",),
    "Pleural Other": ("pleural thickening",),
    "Fracture": ("fracture",),
    "Support Devices": ("pacemaker", "catheter", "tube", "clips", "sternotomy", "wires", "device"),
}


def naive_label(text: str) -> np.ndarray:
    """Keyword present -> positive, unless "no"/"not"/"without" precedes it in the sentence."""
    v = L.empty_vector()
    for s in split_sentences(text):
        s = s.lower()
        for obs, words in NAIVE_KEYWORDS.items():
            i = L.index(obs)
            for w in words:
                k = s.find(w)
                if k < 0:
                    continue
                neg = re.search(r"\b(?:no|not|without)\b", s[:k]) is not None
                if np.isnan(v[i]) or not neg:
                    v[i] = L.NEGATIVE if neg else L.POSITIVE
    return L.derive_no_finding(v)


# --------------------------------------------------------------------------- scoring
def score(pred: np.ndarray, truth: np.ndarray, uncertain_positive: bool) -> dict[str, dict]:
    """Per-observation precision/recall/F1 of labeler positives vs MeSH positives."""
    pos = (pred == L.POSITIVE) | ((pred == L.UNCERTAIN) if uncertain_positive else False)
    out = {}
    for i, obs in enumerate(L.OBSERVATIONS):
        t, scored = truth[:, i] == 1, truth[:, i] != L.UNCERTAIN
        p_, t_ = pos[scored, i], t[scored]
        tp, fp, fn = int((p_ & t_).sum()), int((p_ & ~t_).sum()), int((~p_ & t_).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        out[obs] = {"support": int(t_.sum()), "predicted": int(p_.sum()), "tp": tp,
                    "not_scored_borderline": int((~scored).sum()),
                    "precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}
    return out


def macro_f1(per_label: dict[str, dict]) -> tuple[float, list[str]]:
    used = [o for o, s in per_label.items() if s["support"] >= MIN_SUPPORT]
    return float(np.mean([per_label[o]["f1"] for o in used])), used


def show_errors(obs: str, reports: list[IUReport], pred: np.ndarray, truth: np.ndarray,
                limit: int = 25) -> None:
    """Print false positives and false negatives for one observation (uncertain = negative)."""
    i = L.index(obs)
    pos = pred[:, i] == L.POSITIVE
    for name, rows in (("FALSE POSITIVES", np.where(pos & (truth[:, i] == 0))[0]),
                       ("FALSE NEGATIVES", np.where(~pos & (truth[:, i] == 1))[0])):
        print(f"\n=== {obs}: {name} ({len(rows)})")
        for k in rows[:limit]:
            r = reports[k]
            print(f"- {r.report_id} pred={pred[k, i]} mesh={list(r.mesh_major)}\n  {r.text}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iu", default=None, help="NLMCXR_reports.tgz (default: torchxrayvision's)")
    ap.add_argument("--errors", default=None, help="print error examples for this observation")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    # 1. Label every report; score the ones the indexers indexed
    reports = read_iu_reports(args.iu)
    n_all = len(reports)
    truths = [mesh_vector(r) for r in reports]
    indexed = np.array([t is not None for t in truths])
    truth = np.stack([t for t in truths if t is not None])
    texts = [r.text for r in reports]
    reports = [r for r, i in zip(reports, indexed) if i]

    results, preds = {}, {}
    for name, fn in (("naive", lambda ts: np.stack([naive_label(t) for t in ts])),
                     ("rule", RuleLabeler().label)):
        t0 = time.perf_counter()
        preds[name] = fn(texts)[indexed]
        secs = time.perf_counter() - t0
        res = {"seconds": round(secs, 2)}
        for key, unc in (("uncertain_as_positive", True), ("uncertain_as_negative", False)):
            per = score(preds[name], truth, unc)
            mf, used = macro_f1(per)
            res[key] = {"macro_f1": round(mf, 4), "per_label": per}
        res["macro_f1"] = res["uncertain_as_negative"]["macro_f1"]
        normal = np.array([[float(r.is_normal)] * L.N_OBS for r in reports], np.float32)
        res["no_finding_vs_mesh_normal"] = score(preds[name], normal, False)["No Finding"]
        per = res["uncertain_as_negative"]["per_label"]
        res["macro_f1_if_no_finding_vs_normal_tag"] = round(float(np.mean(
            [per[o]["f1"] for o in used if o != "No Finding"]
            + [res["no_finding_vs_mesh_normal"]["f1"]])), 4)
        res["macro_over"] = used
        results[name] = res

    # 2. Print and save
    console = Console(width=110)
    tab = Table(title=f"IU-Xray labels vs MeSH ({len(reports)} indexed reports; "
                      "uncertain = negative)")
    for c in ("observation", "MeSH +", "naive P", "naive R", "naive F1", "rule P", "rule R",
              "rule F1"):
        tab.add_column(c, justify="left" if c == "observation" else "right")
    for obs in L.OBSERVATIONS:
        n = results["naive"]["uncertain_as_negative"]["per_label"][obs]
        r = results["rule"]["uncertain_as_negative"]["per_label"][obs]
        mark = "" if r["support"] >= MIN_SUPPORT else " *"
        tab.add_row(obs + mark, str(r["support"]), *(f"{d[k]:.3f}" for d in (n, r)
                                                    for k in ("precision", "recall", "f1")))
    console.print(tab)
    console.print(f"* fewer than {MIN_SUPPORT} MeSH positives: not in the macro-F1")
    for name in ("naive", "rule"):
        res = results[name]
        nf = res["no_finding_vs_mesh_normal"]
        console.print(f"{name:6s} macro-F1 {res['macro_f1']:.4f} (uncertain as positive: "
                      f"{res['uncertain_as_positive']['macro_f1']:.4f}); No Finding vs the MeSH "
                      f"'normal' tag: P {nf['precision']:.3f} R {nf['recall']:.3f} "
                      f"F1 {nf['f1']:.3f}; "
                      f"{res['seconds']} s")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "dataset": "IU-Xray / Open-i reports (torchxrayvision NLMCXR_reports.tgz, CC BY-NC-ND 4.0)",
        "n_reports": len(reports), "n_skipped_not_indexed": n_all - len(reports),
        "text": "findings + impression", "min_support_for_macro": MIN_SUPPORT,
        "mesh_mapping": MESH_TO_OBSERVATION,
        "mesh_qualified_mapping": [list(x) for x in MESH_QUALIFIED],
        "results": results}, indent=2))
    console.print(f"wrote {out}")
    if args.errors:
        show_errors(L.canonical(args.errors), reports, preds["rule"], truth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
