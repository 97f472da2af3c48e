"""The limited-data benchmark's figure, README table and compact JSON (issue #16), from the
``results.json`` that ``cxraug bench`` writes (paper protocol, and optionally strict):

    python benchmarks/limited_data_report.py --paper runs/sweep-paper/results.json \
        [--paper-extra runs/sweep-paper-100real/results.json] \
        [--strict runs/sweep-strict/results.json] [--name limited_data_v2] [--out-dir benchmarks/results]

``--paper-extra`` (repeatable) adds the cells of another bench of the same protocol, data, splits
and classifier settings where ``--paper`` has none (e.g. the ``real`` arm at 100% run on its own).

Writes ``<out-dir>/<name>.png`` (test mAUC vs real fraction, one panel per test set: the internal
test split, then each ``--test-data`` set; one line per arm, paper solid, strict dashed; the mean
per-seed 95% patient-bootstrap CI shaded; the ``real`` arm at 100% dotted; the transfer efficiency
``(synth->real - real) / (gen-data->real - real)`` per fraction printed under the axes),
``<name>.md`` (the README table, printed too) and ``<name>.json`` (every cell, the transfer
efficiency, test set sizes, the generators, the bench command when it can be found, versions).
Paths in the written files are relative to the repository root, or just names.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import textwrap
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from cxraug.experiments.bench.config import ARMS, GEN_DATA

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STYLE = {"paper": "-", "strict": "--"}
COLOURS = dict(zip(ARMS, ["#000000", "#E69F00", "#0072B2", "#009E73", "#D55E00", "#CC79A7"]))
MARKERS = dict(zip(ARMS, ["o", "s", "^", "D", "v", "X"]))
TE = "transfer efficiency (synth->real - real)/(gen-data->real - real)"
_ABS = re.compile(r"(?<![\w.~)\]>-])/[\w.+@-]+(?:/[\w.+@-]*)*")


def rel(path: str | Path) -> str:
    """A path relative to the repository root (``../x`` beside it), else just its name."""
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    if p.name == "cxraug" and p.parent.name == "bin":  # .venv/bin/cxraug -> cxraug
        return "cxraug"
    for base, prefix in ((REPO, ""), (REPO.parent, "../")):
        if len(base.parts) > 1 and p.is_relative_to(base):
            return prefix + str(p.relative_to(base)) if p != base else prefix.rstrip("/") or "."
    return p.name


def clean(x):
    """``x`` with every absolute path in its strings made relative (:func:`rel`), NaN as None."""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, str):
        return _ABS.sub(lambda m: rel(m.group(0)), x)
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, 4)
    return x


def bench_command(results: Path, report: dict) -> str | None:
    """The ``cxraug bench`` command line: from the report, a ``command.txt`` beside it, or a shell
    script next to (or above) its folder that runs ``cxraug bench ... --out .../<folder>``."""
    if report.get("command"):
        return str(report["command"])
    if (results.parent / "command.txt").is_file():
        return (results.parent / "command.txt").read_text().strip()
    for script in sorted([*results.parent.glob("*.sh"), *results.parent.parent.glob("*.sh")]):
        for line in script.read_text(errors="replace").replace("\\\n", " ").splitlines():
            if not re.search(r"cxraug\s+bench", line):
                continue
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            outs = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--out", "-o")]
            if outs and Path(outs[-1]).name == results.parent.name:
                return shlex.join(words)
    return None


def cells_of(report: dict) -> dict[tuple[float, str], dict]:
    return {(float(c["frac"]), c["arm"]): c for c in report.get("cells", [])}


def stat(cell: dict | None, test: str | None) -> dict | None:
    """One cell's mAUC stats (and seeds) on the internal test split (``test`` None) or an external set."""
    s = (cell if test is None else cell.get("external", {}).get(test)) if cell else None
    ok = s and s.get("mauc_mean") is not None and not math.isnan(s["mauc_mean"])
    return dict(s, seeds=cell.get("seeds", 2)) if ok else None


def mean_sd(s: dict) -> str:
    """``mean ± sd`` (the sd only over more than one seed)."""
    return f"{s['mauc_mean']:.3f}" + (f" ± {s.get('mauc_sd') or 0:.3f}" if s["seeds"] > 1 else "")


def te_text(cell: dict | None) -> str:
    """One transfer-efficiency cell: ``value [lo, hi]``, ``n/a (why)``, or ``-`` when absent."""
    if cell is None:
        return "-"
    if cell.get("value") is not None and cell.get("ci"):
        return f"{cell['value']:.2f} [{cell['ci'][0]:.2f}, {cell['ci'][1]:.2f}]"
    why = str(cell.get("reason") or "")
    why = ("gen-data->real - real CI includes 0" if "includes 0" in why else
           "arms missing" if "needs arms" in why else why[:40])
    return f"n/a ({why})" if why else "n/a"


def layout(runs: dict[str, dict]) -> tuple[list[float], list[str], list[str]]:
    """Fractions, arms (bench order) and external test sets across the protocols."""
    fracs = sorted({f for r in runs.values() for f, _ in cells_of(r)})
    seen = {a for r in runs.values() for _, a in cells_of(r)}
    arms = [a for a in ARMS if a in seen] + sorted(seen - set(ARMS))
    tests = list(dict.fromkeys(t for r in runs.values() for t in r.get("test_sets", {})))
    return fracs, arms, tests


def markdown(runs: dict[str, dict]) -> str:
    fracs, arms, tests = layout(runs)
    first = next(iter(runs.values()))
    t, cfg = first.get("test", {}), first.get("config", {})
    name = Path(str(cfg.get("data", "?"))).name
    seeds = ", ".join(f"{p} {r.get('config', {}).get('seeds', '?')}" for p, r in runs.items())
    lines = [(f"**{name}** ({', '.join(first.get('labels', []))}; test {t.get('n_images', '?')} images / "
              f"{t.get('n_patients', '?')} patients; seeds: {seeds}). mAUC mean ± sd across seeds "
              "[mean per-seed 95% patient-bootstrap CI]; Δ = paired difference vs `real` [its mean "
              "per-seed 95% CI]; vs dup = the same vs the count-matched `real+dup` control; "
              f"{TE} per fraction [mean per-seed 95% CI]."), "",
             "| real | protocol | " + " | ".join(arms) + " | transfer efficiency |",
             "|---|---|" + "---|" * (len(arms) + 1)]
    for frac in fracs:
        for proto, r in runs.items():
            cells, row = cells_of(r), [f"{100 * frac:g}%", proto]
            for arm in arms:
                c = stat(cells.get((frac, arm)), None)
                txt = "-" if c is None else (f"{mean_sd(c)} [{c['ci_mean'][0]:.2f}, {c['ci_mean'][1]:.2f}]")
                if c is not None and c.get("diff_vs_real_mean") is not None:
                    lo, hi = c["diff_ci_mean"]
                    txt += f" Δ {c['diff_vs_real_mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                if c is not None and c.get("diff_vs_dup_mean") is not None:
                    lo, hi = c["diff_vs_dup_ci_mean"]
                    txt += f"; vs dup {c['diff_vs_dup_mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                row.append(txt)
            te = {float(x["frac"]): x for x in r.get("transfer_efficiency", [])}
            if all(c == "-" for c in row[2:]) and frac not in te:
                continue  # nothing at this fraction under this protocol
            lines.append("| " + " | ".join([*row, te_text(te.get(frac))]) + " |")
    for test in tests:
        card = next(r["test_sets"][test] for r in runs.values() if test in r.get("test_sets", {}))
        skipped = "; ".join(f"{k} ({v})" for k, v in card.get("skipped", {}).items())
        lines += ["", f"**{test}** (external test set, {card.get('n_images', '?')} images / "
                  f"{card.get('n_patients', '?')} patients; labels {', '.join(card.get('labels', []))}"
                  + (f"; skipped: {skipped}" if skipped else "") + "). mAUC mean ± sd across seeds.", "",
                  "| real | protocol | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
        for frac in fracs:
            for proto, r in runs.items():
                cs = [stat(cells_of(r).get((frac, a)), test) for a in arms]
                if all(c is None for c in cs):
                    continue
                lines.append(f"| {100 * frac:g}% | {proto} | " + " | ".join(
                    "-" if c is None else mean_sd(c) for c in cs) + " |")
    return clean("\n".join(lines)) + "\n"


def plot(runs: dict[str, dict], path: Path) -> None:
    fracs, arms, tests = layout(runs)
    first = next(iter(runs.values()))
    panels = [None, *tests]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, test in zip(axes[0], panels):
        full = set()
        for proto, r in runs.items():
            cells, ls = cells_of(r), STYLE.get(proto, ":")
            for arm in arms:
                pts = [(f, s) for f in fracs if (s := stat(cells.get((f, arm)), test)) is not None]
                if not pts:
                    continue
                x = [f for f, _ in pts]
                ax.plot(x, [s["mauc_mean"] for _, s in pts], ls=ls, color=COLOURS.get(arm, "0.5"),
                        marker=MARKERS.get(arm, "P"), ms=5, lw=1.4,
                        mfc=COLOURS.get(arm, "0.5") if ls == "-" else "white")
                ax.fill_between(x, [s["ci_mean"][0] for _, s in pts], [s["ci_mean"][1] for _, s in pts],
                                color=COLOURS.get(arm, "0.5"), alpha=0.12 if ls == "-" else 0.06, lw=0)
            ref = stat(cells.get((1.0, "real")), test)
            if ref is not None and round(ref["mauc_mean"], 4) not in full:
                full.add(round(ref["mauc_mean"], 4))
                ax.axhline(ref["mauc_mean"], color="0.35", ls=":", lw=1)
                ax.annotate(f"real, 100%: {ref['mauc_mean']:.3f}", (0.02, ref["mauc_mean"]),
                            xycoords=("axes fraction", "data"), va="bottom", fontsize=7, color="0.3")
        card = first.get("test", {}) if test is None else next(
            r["test_sets"][test] for r in runs.values() if test in r.get("test_sets", {}))
        label = "test split" if test is None else f"{test} (external)"
        ax.set_title(f"{label}: {card.get('n_images', '?')} images / {card.get('n_patients', '?')} patients",
                     fontsize=9)
        ax.set_xscale("log")
        ax.set_xticks(fracs, [f"{100 * f:g}%" for f in fracs])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("fraction of real training patients")
        ax.set_ylabel("mAUC (mean; band: mean per-seed 95% CI)", fontsize=8)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=COLOURS.get(a, "0.5"), marker=MARKERS.get(a, "P"), label=a) for a in arms]
    handles += [Line2D([], [], color="0.3", ls=STYLE.get(p, ":"), label=f"{p} protocol") for p in runs]
    fig.legend(handles=handles, fontsize=8, loc="upper center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 0.95))
    name = Path(str(first.get("config", {}).get("data", "?"))).name
    fig.suptitle(f"{name}: {', '.join(first.get('labels', []))}", fontsize=10)
    width = int(5.2 * len(panels) * 14)
    text = []
    for proto, r in runs.items():
        te = {float(x["frac"]): x for x in r.get("transfer_efficiency", [])}
        line = f"{proto}, {TE}: " + "   ".join(f"{100 * f:g}%: {te_text(te.get(f))}" for f in sorted(te) or fracs)
        text += textwrap.wrap(line, width, subsequent_indent="    ")
    step = 0.16 / fig.get_figheight()  # one text line, as a fraction of the figure height
    bottom = 0.02 + step * (len(text) + 0.5)
    fig.tight_layout(rect=(0, bottom, 1, 0.9))
    for i, line in enumerate(text):
        fig.text(0.01, 0.02 + step * (len(text) - i - 0.5), clean(line), fontsize=7.5, family="monospace")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def compact(name: str, runs: dict[str, dict], sources: dict[str, Path], argv: list[str]) -> dict:
    """The JSON: every cell and transfer-efficiency entry (with its protocol), and per protocol the
    test sets' sizes, the generators, the bench's command, settings and versions."""
    out = {"name": name, "date": time.strftime("%Y-%m-%d"), "command": shlex.join(argv),
           "transfer_efficiency_definition": TE, "protocols": {}, "cells": [], "transfer_efficiency": []}
    for proto, r in runs.items():
        cfg = r.get("config", {})
        out["protocols"][proto] = {
            "results": rel(sources[proto].resolve()), "bench_command": bench_command(sources[proto], r),
            "merged_from": r.get("merged_from", []),
            "protocol": r.get("protocol"), "data": cfg.get("data"), "labels": r.get("labels"),
            "real_fracs": cfg.get("real_fracs"), "arms": cfg.get("arms"), "seeds": cfg.get("seeds"),
            "n_boot": cfg.get("n_boot"), "image_size": cfg.get("image_size"),
            "classifier": {k: cfg.get("classifier", {}).get(k) for k in ("arch", "max_epochs", "max_steps")},
            "init": r.get("init"), "test": r.get("test"),
            "test_sets": {k: {f: v.get(f) for f in ("data", "n_images", "n_patients", "labels", "skipped")}
                          for k, v in r.get("test_sets", {}).items()},
            "generator": r.get("generator"), "versions": r.get("versions"), "warnings": r.get("warnings", [])}
        for c in r.get("cells", []):
            out["cells"].append({"protocol": proto, **{k: c.get(k) for k in (
                "frac", "arm", "seeds", "mauc_mean", "mauc_sd", "ci_mean", "diff_vs_real_mean", "diff_ci_mean",
                "diff_vs_dup_mean", "diff_vs_dup_ci_mean")
                if k in c}, **({"external": c["external"]} if "external" in c else {})})
        for t in r.get("transfer_efficiency", []):
            out["transfer_efficiency"].append({
                "protocol": proto, "frac": t.get("frac"), "value": t.get("value"), "ci": t.get("ci"),
                "reason": t.get("reason"), "per_seed": [{k: p.get(k) for k in ("seed", "value", "ci", "reason")}
                                                        for p in t.get("per_seed", [])]})
    return clean(out)


SAME = ("data", "dataset", "image_size", "split_seed", "subset_seed", "classifier", "n_boot")


def merge(base: dict, extra: dict, path: Path) -> None:
    """Add ``extra``'s cells (and their jobs and transfer entries) for the (fraction, arm) pairs
    ``base`` lacks; both benches must share the settings in ``SAME``."""
    a, b = base.get("config", {}), extra.get("config", {})
    diff = [k for k in SAME if a.get(k) != b.get(k)]
    if diff or base.get("protocol") != extra.get("protocol"):
        sys.exit(f"--paper-extra {path}: other settings than --paper ({', '.join(diff) or 'protocol'})")
    have = set(cells_of(base))
    new = [c for c in extra.get("cells", []) if (float(c["frac"]), c["arm"]) not in have]
    base["cells"] = base.get("cells", []) + new
    added = {(float(c["frac"]), c["arm"]) for c in new}
    base["jobs"] = base.get("jobs", []) + [j for j in extra.get("jobs", [])
                                           if (float(j["frac"]), j["arm"]) in added]
    fracs = {float(t["frac"]) for t in base.get("transfer_efficiency", [])}
    base["transfer_efficiency"] = base.get("transfer_efficiency", []) + [
        t for t in extra.get("transfer_efficiency", []) if float(t["frac"]) not in fracs]
    base.setdefault("merged_from", []).append(rel(path.resolve()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paper", type=Path, required=True, help="results.json of the paper-protocol bench")
    ap.add_argument("--paper-extra", type=Path, action="append", default=[],
                    help="results.json of another paper-protocol bench with the same settings; its "
                         "cells fill (fraction, arm) pairs --paper lacks (repeatable)")
    ap.add_argument("--strict", type=Path, help="results.json of the strict-protocol bench")
    ap.add_argument("--name", default="limited_data_v2", help="output file stem")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    sources = {p: f for p, f in (("paper", args.paper), ("strict", args.strict)) if f is not None}
    runs = {}
    for proto, f in sources.items():
        if not f.is_file():
            ap.error(f"--{proto} {f}: no such file (the results.json that cxraug bench writes)")
        runs[proto] = json.loads(f.read_text())
        if runs[proto].get("protocol", proto) != proto:
            print(f"warning: --{proto} {f} was run with the {runs[proto]['protocol']} protocol", file=sys.stderr)
        if GEN_DATA not in runs[proto].get("config", {}).get("arms", []):
            print(f"warning: --{proto}: no {GEN_DATA} arm, so no transfer efficiency", file=sys.stderr)
    for f in args.paper_extra:
        if not f.is_file():
            ap.error(f"--paper-extra {f}: no such file")
        merge(runs["paper"], json.loads(f.read_text()), f)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    files = {ext: args.out_dir / f"{args.name}.{ext}" for ext in ("png", "md", "json")}
    plot(runs, files["png"])
    table = markdown(runs)
    files["md"].write_text(table)
    argv = ["benchmarks/limited_data_report.py", *(sys.argv[1:] if argv is None else argv)]
    files["json"].write_text(json.dumps(compact(args.name, runs, sources, argv), indent=2) + "\n")
    print(table)
    print("wrote " + ", ".join(rel(f.resolve()) for f in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
