"""The dataset card of a synthetic cohort: ``cohort.json`` (machine-readable), ``README.md``
(for people) and one sample grid per target in ``grids/``.

The card says what the images are (synthetic, from which generator, trained on which real
data), how they were made (sampler, prompts, seeds) and how many were requested, generated,
accepted and rejected by each gate, per target and per label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cxraug import __version__
from cxraug.data import labels as L
from cxraug.data.transforms import load_grayscale
from cxraug.diffusion.pipeline import grid_image

GRID_IMAGES = 8


def target_counts(manifest: pd.DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """Per target: requested (the plan), generated, accepted, rejected and rejected per gate."""
    reasons = manifest["reason"].fillna("").astype(str)
    rows = []
    for target, requested in plan["target"].value_counts(sort=False).items():
        m = manifest["target"] == target
        acc = manifest["accepted"].astype(bool)
        rows.append({"target": target, "requested": int(requested), "generated": int(m.sum()),
                     "accepted": int((m & acc).sum()), "rejected": int((m & ~acc).sum()),
                     "rejected_fidelity": int((m & reasons.str.contains("fidelity")).sum()),
                     "rejected_memorisation": int((m & reasons.str.contains("memorisation")).sum())})
    return pd.DataFrame(rows)


def label_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per observation: positive / negative / blank among the accepted images."""
    acc = manifest[manifest["accepted"].astype(bool)]
    rows = []
    for o in L.OBSERVATIONS:
        v = pd.to_numeric(acc[o], errors="coerce") if o in acc else pd.Series(dtype=float)
        rows.append({"label": o, "positive": int((v == L.POSITIVE).sum()),
                     "negative": int((v == L.NEGATIVE).sum()), "blank": int(v.isna().sum())})
    return pd.DataFrame(rows)


def write_grids(root: Path, manifest: pd.DataFrame, per_target: int = GRID_IMAGES) -> dict[str, str]:
    """``grids/<target>.png``: the first accepted images of each target, read back from disk."""
    from PIL import Image


    (root / "grids").mkdir(exist_ok=True)
    out = {}
    for target, part in manifest[manifest["accepted"].astype(bool)].groupby("target", sort=True):
        images = np.stack([load_grayscale(root / f) for f in part["file"].head(per_target)])
        name = f"grids/{str(target).replace(' ', '_')}.png"
        Image.fromarray(grid_image(images, rows=1 + (len(images) > 4))).save(root / name)
        out[str(target)] = name
    return out


def write_card(out, manifest: pd.DataFrame, plan: pd.DataFrame, settings: dict, generator: dict,
               gates: dict) -> dict:
    """Write ``cohort.json``, ``README.md`` and the grids into ``out.root``; returns counts."""
    root = Path(out.root)
    per_target = target_counts(manifest, plan)
    per_label = label_counts(manifest)
    grids = write_grids(root, manifest)
    seconds = float(pd.to_numeric(manifest.get("seconds"), errors="coerce").sum())
    totals = {k: int(per_target[k].sum()) for k in ("requested", "generated", "accepted", "rejected")}
    card = {
        "synthetic": True,
        "created_by": f"cxraug {__version__} (cxraug synth)",
        "generator": generator,
        "settings": settings,
        "gates": gates,
        "counts": totals,
        "per_target": per_target.to_dict(orient="records"),
        "per_label_accepted": per_label.to_dict(orient="records"),
        "grids": grids,
        "generation_seconds": round(seconds, 2),
        "images_per_second": round(len(manifest) / seconds, 3) if seconds else None,
        "files": {"manifest": "manifest.csv", "plan": "plan.csv", "accepted": "images/",
                  "rejected": "rejected/"},
    }
    (root / "cohort.json").write_text(json.dumps(card, indent=2) + "\n")
    (root / "README.md").write_text(_readme(card, per_target, per_label))
    return totals


def _table(df: pd.DataFrame) -> list[str]:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    return lines + ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]


def _gate_lines(gates: dict) -> list[str]:
    f, m = gates.get("fidelity", {}), gates.get("memorisation", {})
    lines = []
    if f.get("status") == "run":
        thr = ", ".join(f"{k.lower()} >= {v['positive']:.3f} (negatives <= {v['negative']:.3f})"
                        for k, v in f["thresholds"].items())
        lines.append(f"- **label fidelity**: classifier `{f['classifier']}` (trained on real data); "
                     f"thresholds keep {f['recall']:.0%} of real val positives and "
                     f"{f['negative_keep']:.0%} of real val negatives ({f['n_val']} val images): {thr}.")
    else:
        lines.append(f"- **label fidelity**: not run ({f.get('why', 'disabled with --gates')}).")
    if m.get("status") == "run":
        lines.append(f"- **memorisation**: nearest of {m['n_reference']} training images by "
                     f"{m['embedding']} (top {m['top_k']}), then SSIM; rejected above "
                     f"{m['threshold']:.3f}, the {1 - m['alpha']:.0%} quantile of real val images' "
                     f"best SSIM to the training set ({m['n_val']} val images, median "
                     f"{m['val_ssim_median']:.3f}).")
    else:
        lines.append("- **memorisation**: not run (disabled with --gates).")
    return lines


def _readme(card: dict, per_target: pd.DataFrame, per_label: pd.DataFrame) -> str:
    g, s, c = card["generator"], card["settings"], card["counts"]
    t = g["trained_on"]
    lines = [
        "# Synthetic chest X-ray cohort",
        "",
        ("**Every image in this folder is synthetic.** They were generated by a diffusion model "
         "(Diff-CXR) and show no real patient. They are not for diagnosis or clinical use."),
        "",
        "## Generator",
        f"- run `{g['run']}` (weights hash `{g['hash']}`; model card `{g['model_card']}`)",
        (f"- trained on `{t['data']}` ({t['dataset']}, {t['images']} images of the {t['split']}, "
         f"real fraction {t['real_frac']}, LNFS filter {t['filter'] or 'none'}), {t['image_size']} px"),
        (f"- sampling: {s['sampler']} {s['steps']} steps, guidance {s['guidance']}, {s['precision']}; "
         f"prompts: {s['prompts']} templates + the DKIM hint of the target labels; cohort seed "
         f"{s['seed']}"),
        "",
        "## Contents",
        (f"Requested {c['requested']} images for {', '.join(s['labels'])} ({s['negatives']:.0%} "
         f"explicit negatives, co-occurrence {s['cooccurrence']}); generated {c['generated']}, "
         f"accepted {c['accepted']}, rejected {c['rejected']}."),
        "",
        *_table(per_target),
        "",
    ]
    short = per_target[per_target["accepted"] < per_target["requested"]]
    if len(short):
        what = ", ".join(f"{r.target} {r.accepted}/{r.requested}" for r in short.itertuples())
        why = ("--until-accepted budget reached" if s.get("until_accepted")
               else "rerun with --until-accepted to top up")
        lines += [f"Short of the request after the gates: {what} ({why}).", ""]
    used = per_label[per_label[["positive", "negative"]].sum(axis=1) > 0]
    grids = f" ({', '.join(card['grids'])})" if card["grids"] else " (none accepted)"
    lines += [
        "Labels of the accepted images:", "", *_table(used), "",
        "## Quality gates", *_gate_lines(card["gates"]), "",
        "## Files",
        ("- `manifest.csv`: one row per generated image: file, seed, prompt, hint, target, the 14 "
         "label columns (1 / 0 / blank), sampler settings, generator hash, gate scores, `accepted` "
         "and `reason`. Any image can be regenerated from its row."),
        ("- `images/`: accepted images; `rejected/`: rejected ones, kept to audit the gates "
         "(delete before sharing: memorisation rejects may resemble training images)."),
        "- `plan.csv` (and `topups.csv`): the planned label vectors; `gates.json`: thresholds.",
        f"- `grids/`: sample grids of accepted images per target{grids}.",
        "", f"Made by {card['created_by']}.", "",
    ]
    return "\n".join(lines)
