"""Build the embedded real sample shipped in cxraug/assets/sample from the full datasets.

    python scripts/make_sample.py --kermany ../shared/data/kermany --nih ../shared/data/nih14

Deterministic (seed 0): Kermany 320 train (equal normal / bacteria / virus thirds, whole
patients) + 90 official test images; NIH 120 images (60 Pneumonia, 60 No Finding). Images are
copied unchanged (128 px PNG). The licence/attribution files are written beside them.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "cxraug" / "assets" / "sample"

KERMANY_NOTICE = """Kermany paediatric pneumonia sample (410 images, 128x128 PNG)
Source: Kermany D, Zhang K, Goldbaum M (2018), "Labeled Optical Coherence Tomography (OCT) and
Chest X-Ray Images for Classification", Mendeley Data v2, doi:10.17632/rscbjbr9sj.2.
Licence: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/). Attribution required.
Changes: a deterministic subset of the official train/test splits, converted to 8-bit grayscale,
centre-cropped and resized to 128x128 (see scripts/make_sample.py).
"""
NIH_NOTICE = """NIH ChestX-ray14 sample (120 images, 128x128 PNG)
Source: Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM, "ChestX-ray8: Hospital-scale Chest
X-ray Database and Benchmarks on Weakly-Supervised Classification and Localization of Common
Thorax Diseases", CVPR 2017. Images and labels from the NIH Clinical Center, which places no
restrictions on their use; please cite the paper and acknowledge the NIH Clinical Center.
Labels were mined from reports by NLP and are noisy. Half of the images were chosen as Pneumonia
cases and half as No Finding, so the label mix is not the population's.
"""


def sample_patients(df: pd.DataFrame, n_images: int, seed: int) -> pd.DataFrame:
    """Whole patients, in a seeded random order, until ``n_images`` images are taken."""
    patients = df["patient_id"].drop_duplicates().sample(frac=1.0, random_state=seed)
    picked, total = [], 0
    for p in patients:
        k = int((df["patient_id"] == p).sum())
        if total + k > n_images:
            continue
        picked.append(p)
        total += k
        if total == n_images:
            break
    return df[df["patient_id"].isin(picked)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kermany", type=Path, required=True)
    ap.add_argument("--nih", type=Path, required=True)
    args = ap.parse_args()
    if OUT.exists():
        shutil.rmtree(OUT)

    k = pd.read_csv(args.kermany / "index.csv", dtype=str)
    test_patients = set(k.loc[k.split == "test", "patient_id"])
    train = k[(k.split == "train") & ~k.patient_id.isin(test_patients)]
    parts = [sample_patients(train[train.subtype == s], 107 if s != "normal" else 106, 0)
             for s in ("normal", "bacteria", "virus")]
    parts += [sample_patients(k[(k.split == "test") & (k.subtype == s)], 30, 0)
              for s in ("normal", "bacteria", "virus")]
    ks = pd.concat(parts).sort_values("image_path")
    (OUT / "kermany" / "images_128").mkdir(parents=True)
    for p in ks.image_path:
        shutil.copy(args.kermany / p, OUT / "kermany" / p)
    ks.to_csv(OUT / "kermany" / "index.csv", index=False)
    (OUT / "kermany" / "NOTICE.txt").write_text(KERMANY_NOTICE)

    n = pd.read_csv(args.nih / "index.csv", dtype=str)
    ns = pd.concat([sample_patients(n[n["Pneumonia"] == "1"], 60, 0),
                    sample_patients(n[n["No Finding"] == "1"], 60, 0)]).drop_duplicates("image_id")
    ns = ns.drop(columns=["image_path_256"]).sort_values("image_id")
    (OUT / "nih14" / "images_128").mkdir(parents=True)
    for p in ns.image_path_128:
        shutil.copy(args.nih / p, OUT / "nih14" / p)
    ns.to_csv(OUT / "nih14" / "index.csv", index=False)
    (OUT / "nih14" / "NOTICE.txt").write_text(NIH_NOTICE)
    print(f"kermany: {len(ks)} images, nih14: {len(ns)} images -> {OUT}")


if __name__ == "__main__":
    main()
