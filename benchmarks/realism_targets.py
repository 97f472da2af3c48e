"""Score generators' quality cards against the realism targets, side by side.

    python benchmarks/realism_targets.py kermany-128-v3 kermany-128-v3z --out zero_snr

reads `benchmarks/results/quality_<name>.json` for each name (cards made by the same judge with
`benchmarks/quality_card.py`) and writes `benchmarks/results/realism_targets_<out>.json` and `.md`:
one row per target, each card's value, whether it meets the target, and the number of targets met.
It measures nothing itself; every value is the card's.

The targets (a generator whose images a classifier cannot easily tell from real radiographs, with
real contrast and fine detail; all at the card's resolution):
- radial power spectrum ratio (synthetic / real) >= 0.85 in every band;
- variance of the Laplacian within 15 % of real's;
- 1st and 99th intensity percentiles within 0.01 of real's;
- two-sample AUC at equal n <= 0.80; FID <= 5;
- label fidelity (pneumonia AUC with the adapter) >= 0.99; memorisation gate rejecting <= 1 %.
"""

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
BANDS = ("1-4", "4-8", "8-16", "16-32", "32-48", "48-64")


def _stats(card: dict) -> dict:
    return card["image_stats"]["generator"]["synthetic"]["stats"]


def targets(card: dict) -> list[dict]:
    """Every target of one card: ``{"target", "value", "met"}`` (value formatted for the table)."""
    st, ev = _stats(card), card["eval"]
    power = [st[f"power_{b}"]["ratio"] for b in BANDS]
    lap = st["laplacian_var"]["ratio"]
    p1, p99 = st["p1"], st["p99"]
    auc = ev["synthetic_matched"]["equal_n"]["two_sample_auc"]
    fid = ev["metrics"]["fid"]
    label = card["label_fidelity"]["pneumonia"]["stage1+adapter"]["auc"]
    fail, n = card["cohort"]["memorisation_fail"], card["cohort"]["n"]
    return [
        {"target": "power ratio >= 0.85 in every band (" + " / ".join(BANDS) + " cycles)",
         "value": " / ".join(f"{r:.2f}" for r in power), "met": min(power) >= 0.85},
        {"target": "Laplacian variance ratio in [0.85, 1.15]", "value": f"{lap:.2f}",
         "met": 0.85 <= lap <= 1.15},
        {"target": f"p1 / p99 within 0.01 of real's ({p1['real']:.3f} / {p99['real']:.3f})",
         "value": f"{p1['compared']:.3f} / {p99['compared']:.3f}",
         "met": abs(p1["diff"]) <= 0.01 and abs(p99["diff"]) <= 0.01},
        {"target": "two-sample AUC at equal n <= 0.80", "value": f"{auc:.3f}", "met": auc <= 0.80},
        {"target": "FID <= 5", "value": f"{fid:.1f}", "met": fid <= 5},
        {"target": "label fidelity >= 0.99", "value": f"{label:.3f}", "met": label >= 0.99},
        {"target": "memorisation gate rejects <= 1 %", "value": f"{fail} of {n}", "met": fail <= 0.01 * n},
    ]


def score(names: list[str]) -> dict:
    cards = {n: json.loads((RESULTS / f"quality_{n}.json").read_text()) for n in names}
    judges = {"{name} {arch} {input_size} px, sha256 {sha256:.12}".format(**c["eval"]["extractor"])
              for c in cards.values()}
    if len(judges) > 1:
        raise SystemExit(f"the cards were made by different judges ({sorted(judges)}); compare cards of one judge")
    rows = {n: targets(c) for n, c in cards.items()}
    return {"cards": {n: f"quality_{n}.json" for n in names}, "judge": judges.pop(),
            "rows": rows, "met": {n: sum(r["met"] for r in rs) for n, rs in rows.items()},
            "of": len(next(iter(rows.values())))}


def markdown(rec: dict, out: str) -> str:
    names = list(rec["rows"])
    lines = [f"# Realism targets: {', '.join(f'`{n}`' for n in names)}", "",
             f"Written by `benchmarks/realism_targets.py`; every value is its quality card's "
             f"({', '.join(f'[`{f}`]({f})' for f in rec['cards'].values())}), summarised in "
             f"[`realism_targets_{out}.json`](realism_targets_{out}.json). Judge: `{rec['judge']}`. "
             "A value in **bold** meets its target.", "",
             "| target | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for i, row in enumerate(rec["rows"][names[0]]):
        cells = [rec["rows"][n][i] for n in names]
        lines.append(f"| {row['target']} | " + " | ".join(
            f"**{c['value']}**" if c["met"] else c["value"] for c in cells) + " |")
    lines.append("| targets met | " + " | ".join(f"{rec['met'][n]} of {rec['of']}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help="quality card names (benchmarks/results/quality_NAME.json)")
    ap.add_argument("--out", required=True, help="writes benchmarks/results/realism_targets_OUT.json/.md")
    args = ap.parse_args(argv)
    missing = [n for n in args.names if not (RESULTS / f"quality_{n}.json").is_file()]
    if missing:
        print(f"benchmarks/results/quality_{missing[0]}.json: no such card; run benchmarks/quality_card.py "
              f"--name {missing[0]} first", file=sys.stderr)
        return 2
    rec = score(args.names)
    (RESULTS / f"realism_targets_{args.out}.json").write_text(json.dumps(rec, indent=1) + "\n")
    md = markdown(rec, args.out)
    (RESULTS / f"realism_targets_{args.out}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
