"""Write the shipped model's card (cxraug/assets/models/kermany-128/README.md) from its template and the
committed results, so that every number the card quotes is a JSON's.

    python benchmarks/model_card.py            # rewrite the card
    python benchmarks/model_card.py --check    # exit 1 if the shipped card is not what the results say

Inputs: the template `benchmarks/model_cards/kermany-128.md`, the quality cards, guidance sweep and
downstream comparison named in INPUTS (benchmarks/results/), and the model's own `training_cost.json`.
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODEL = REPO / "cxraug" / "assets" / "models" / "kermany-128"
TEMPLATE = REPO / "benchmarks" / "model_cards" / "kermany-128.md"
INPUTS = {
    "card": "quality_kermany-128-v5map.json",            # the shipped generator's quality card
    "previous": "quality_kermany-128-v4-judge2.json",    # the version it replaces, same judge
    "vae": "quality_kermany-128-v3-spectral_vae.json",   # its latent space alone
    "sweep": "guidance_sweep_v3.json",                   # how its guidance was picked (same denoiser)
    "realism": "generator_realism_v5.json",              # downstream: new vs previous generator
    "targets": "realism_targets_intensity_map.json",     # the realism targets, new and previous
}
# Hours of the components trained before cxraug recorded costs (summed from their logs' elapsed times).
LOGGED_HOURS = {"perceptual": 0.9, "vae": 1.84}


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def render() -> str:
    q, o, v, sw, rz, tg = (load(INPUTS[k]) for k in ("card", "previous", "vae", "sweep", "realism", "targets"))
    calls = json.loads((MODEL / "training_cost.json").read_text())["calls"]

    def ev(x): return x["eval"]
    def eq(x): return x["eval"]["synthetic_matched"]["equal_n"]
    def lf(x, k): return x["label_fidelity"]["pneumonia"][k]["auc"]
    def st(x): return x["image_stats"]["generator"]["synthetic"]["stats"]

    f, feq = ev(q)["floor"], ev(q)["floor"]["equal_n"]
    rows = [  # (label, value of one card, floor)
        ("FID / KID ({} accepted vs {:,} real)".format(ev(q)["counts"]["synthetic"], ev(q)["counts"]["real"]),
         lambda x: f"{ev(x)['metrics']['fid']:.1f} / {ev(x)['metrics']['kid_mean']:.3f}",
         f"{f['fid']:.1f} / {f['kid_mean']:.3f}"),
        ("precision / recall", lambda x: f"{ev(x)['metrics']['precision']:.3f} / {ev(x)['metrics']['recall']:.3f}",
         f"{f['precision']:.3f} / {f['recall']:.3f}"),
        ("at equal n: precision / recall / coverage",
         lambda x: f"{eq(x)['precision']:.3f} / {eq(x)['recall']:.3f} / {eq(x)['coverage']:.3f}",
         f"{feq['precision']:.3f} / {feq['recall']:.3f} / {feq['coverage']:.3f}"),
        ("two-sample AUC (0.5 = indistinguishable), all / equal n",
         lambda x: f"{ev(x)['two_sample_auc']:.3f} / {eq(x)['two_sample_auc']:.3f}",
         f"{f['two_sample_auc']:.3f} / {feq['two_sample_auc']:.3f}"),
        ("label fidelity, pneumonia AUC (stage 1 / + DKIM adapter)",
         lambda x: f"{lf(x, 'stage1'):.3f} / {lf(x, 'stage1+adapter'):.3f}",
         f"judge on real test images {q['label_fidelity']['judge_real_test_auc']['Pneumonia']['auc']:.3f}"),
        ("memorisation gate rejections", lambda x: f"{x['cohort']['memorisation_fail']} of {x['cohort']['n']}", "-"),
        ("VAE reconstructions of 300 test images: two-sample AUC at equal n",
         lambda x: f"{x['vae_recon']['synthetic_matched']['equal_n']['two_sample_auc']:.3f}",
         f"{q['vae_recon']['floor']['equal_n']['two_sample_auc']:.3f}"),
    ]
    metrics_rows = [f"| {label} | {value(q)} | {value(o)} | {floor} |" for label, value, floor in rows]

    names = {"laplacian_var": "variance of the Laplacian (fine detail)", "pixel_std": "pixel standard deviation",
             "p1": "1st percentile of intensity", "p99": "99th percentile of intensity"}
    stats_rows = []
    for k, name in names.items():
        a, b = st(q)[k], st(o)[k]
        stats_rows.append(f"| {name} | {a['real']:.4f} | {a['compared']:.4f} ({a['ratio']:.2f}x) "
                          f"| {b['compared']:.4f} ({b['ratio']:.2f}x) |")
    bands = [k for k in st(q) if k.startswith("power_")]
    stats_rows.append("| spectral power, synthetic / real, at " + " / ".join(b[6:] for b in bands)
                      + " cycles per image | 1 | " + " / ".join(f"{st(q)[b]['ratio']:.2f}" for b in bands)
                      + " | " + " / ".join(f"{st(o)[b]['ratio']:.2f}" for b in bands) + " |")
    floor_ratios = [s["ratio"] for s in q["image_stats"]["generator"]["floor"]["stats"].values()]

    sweep_rows = [f"| {s['guidance']:.1f} | {s['fid']:.1f} | {s['two_sample_auc']:.3f} | {s['label_auc']:.3f} |"
                  for s in sw["scales"]]

    def hours(stage): return sum(c["seconds"] for c in calls if c["stage"] == stage) / 3600
    cost = [("perceptual network (resnet10t, 128 px)", "640 (early stop)", "fp32", LOGGED_HOURS["perceptual"], "its log"),
            ("VAE", "12,000", "bf16 (auto)", LOGGED_HOURS["vae"], "its log"),
            ("decoder tuning", "4,000", "fp32", hours("decoder"), "training_cost.json"),
            ("text (AVA-TLS squeeze)", "1 epoch", "-", hours("text"), "training_cost.json"),
            ("stage 1 (denoiser)", "16,000", "bf16 (auto)", hours("stage1"), "training_cost.json"),
            ("stage 2 (DKIM adapter)", "800", "bf16 (auto)", hours("stage2"), "training_cost.json"),
            ("intensity map (256 images drawn)", "-", "fp32", hours("intensity_map"), "training_cost.json")]
    cost_rows = [f"| {a} | {b} | {c} | {d:.2f} | {e} |" for a, b, c, d, e in cost]
    cost_rows.append(f"| all | | | {sum(r[3] for r in cost):.1f} | |")

    power = [st(q)[b]["ratio"] for b in bands]
    return TEMPLATE.read_text().format(
        metrics_rows="\n".join(metrics_rows), stats_rows="\n".join(stats_rows), sweep_rows="\n".join(sweep_rows),
        cost_rows="\n".join(cost_rows), floor_lo=min(floor_ratios), floor_hi=max(floor_ratios),
        std_ratio=st(q)["pixel_std"]["ratio"], p1_new=st(q)["p1"]["compared"], p1_real=st(q)["p1"]["real"],
        p99_new=st(q)["p99"]["compared"], p99_real=st(q)["p99"]["real"],
        met_new=tg["met"]["kermany-128-v5map"], met_old=tg["met"]["kermany-128-v4-judge2"], met_of=tg["of"],
        pow_lo=min(power), pow_hi=max(power), vae_auc=v["vae_recon"]["synthetic_matched"]["equal_n"]["two_sample_auc"],
        auc_eq=eq(q)["two_sample_auc"],
        mem_fail=q["cohort"]["memorisation_fail"], mem_n=q["cohort"]["n"],
        prec=ev(q)["metrics"]["precision"], prec_old=ev(o)["metrics"]["precision"], prec_floor=f["precision"],
        rec=ev(q)["metrics"]["recall"],
        realism="{:+.3f} [{:+.3f}, {:+.3f}]".format(rz["primary"]["estimate"], *rz["primary"]["ci"]),
        realism_verdict=rz["verdict"].split(":")[0].lower())  # the comparison's own reading


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the shipped card differs from the results")
    args = ap.parse_args()
    text, out = render(), MODEL / "README.md"
    if args.check:
        if out.read_text() != text:
            print(f"{out.relative_to(REPO)} is out of date: run python benchmarks/model_card.py", file=sys.stderr)
            return 1
        print(f"{out.relative_to(REPO)} matches the results")
        return 0
    out.write_text(text)
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
