"""The limited-data sweep of record (protocol v3): do synthetic images help a classifier trained on
1 % or 5 % of the real patients, beyond reusing those real images, at equal compute?

    python benchmarks/limited_data.py --data ../shared/data/kermany --model kermany-128 \
        --test-data ../shared/data/nih14 [--fracs 0.01,0.05] [--strict-fracs 0.01,0.05] \
        [--subsets 3] [--seeds 2] [--steps 200] [--n-synth 2000] [--protocols paper,strict] \
        [--job i/N] [--work runs/limited-v3] [--name limited_data_v3]

Declared before any run (and written to ``WORK/protocol.json`` first): the primary comparison is
the **strict protocol at 5 %: synth->real minus real+dup** (hierarchical paired bootstrap, 95 %);
every other comparison against real+dup, in both protocols, is one Holm-adjusted family.

Benches (each a ``cxraug bench`` library call, resumable, into ``WORK/<name>``):

1. ``paper``: every arm, one cohort from ``--model`` (trained on the whole training split);
2. ``strict``: every arm, a generator per fraction and subset draw trained with ``--model``'s
   recipe (steps scaled to the subset) on that draw's patients only; its ``real``/``real+dup``
   jobs are the paper bench's (same draws, seeds and budget), copied, not retrained;
3. ``converge``: ``real`` at twice the step budget (the evidence that the budget lets ``real``
   converge), one seed per draw;
4. ``ceiling``: ``real`` on 100 % of the training patients at the budget (the headroom).

Every classifier trains ``--steps`` optimiser steps (pre-training arms split them), takes its
final weights (no validation data) and is scored on the official test split and ``--test-data``.
The report (JSON, markdown, figure) goes to ``benchmarks/results/NAME.*`` with this command, the
machine and the date. ``--report-only`` trains nothing; ``--job i/N`` runs a share of every
bench's jobs (any scheduler), and the share that finds every job done writes the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from cxraug.core import config as C
from cxraug.core.config import parse_slice
from cxraug.core.errors import CxraugError
from cxraug.core.paths import relative_paths
from cxraug.core.precision import cpu_info
from cxraug.experiments.bench import ARMS, DUP, BenchConfig, job_dir, jobs, run_bench
from cxraug.experiments.bench.generators import COST_NAME
from cxraug.metrics.hierarchical import LEVEL, holm

HERE = Path(__file__).resolve().parent
PRIMARY = {"protocol": "strict", "frac": 0.05, "arm": "synth->real", "reference": DUP}
SWEEP_ARMS = [a for a in ARMS if a != "synth"]
NO_GENERATOR = ("real", DUP)  # identical under both protocols
CLASSIFIER = ["image_size=64", "classifier.arch=resnet18", "classifier.batch_size=64"]


def fractions(text: str, flag: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"{flag} {text!r}: expected comma-separated fractions in (0, 1], e.g. 0.01,0.05")
    if any(not 0 < f <= 1 for f in out):
        sys.exit(f"{flag} {text!r}: every fraction must be in (0, 1]")
    return out


def bench_configs(args) -> dict[str, BenchConfig]:
    """The four benches' configs (what each one compares), before anything runs."""
    base = [f"data={args.data}", f"subsets={args.subsets}", f"seeds={args.seeds}",
            f"steps={args.steps}", *CLASSIFIER]

    def cfg(fracs, arms, *extra):
        sets = [*base, f"real_fracs=[{','.join(f'{f:g}' for f in fracs)}]",
                f"arms=[{','.join(arms)}]", *extra, *args.set]
        return C.load(BenchConfig, None, sets)

    primary = (f"primary={PRIMARY['frac']:g}:{PRIMARY['arm']}"
               if PRIMARY["frac"] in args.strict_fracs else "primary=none")
    out = {"paper": cfg(args.fracs, SWEEP_ARMS, "primary=none"),
           "converge": cfg(sorted(set(args.fracs) | set(args.strict_fracs)), ["real"],
                           f"steps={2 * args.steps}", f"seeds={args.converge_seeds}", "primary=none"),
           "ceiling": cfg([1.0], ["real"], "subsets=1", "primary=none")}
    if args.strict_fracs:
        out["strict"] = cfg(args.strict_fracs, SWEEP_ARMS, primary)
    return out


def reuse_generator_free_jobs(paper: Path, strict: Path, cfg: BenchConfig) -> int:
    """Copy the paper bench's real / real+dup jobs (and its splits) into the strict bench."""
    strict.mkdir(parents=True, exist_ok=True)
    if (paper / "splits.csv").is_file() and not (strict / "splits.csv").is_file():
        shutil.copyfile(paper / "splits.csv", strict / "splits.csv")
    n = 0
    for f, d, arm, s in jobs(cfg):
        a, b = job_dir(paper, f, d, arm, s), job_dir(strict, f, d, arm, s)
        if arm in NO_GENERATOR and (a / "result.json").is_file() and not (b / "result.json").is_file():
            shutil.copytree(a, b, dirs_exist_ok=True)
            n += 1
    return n


def run_sweep(args, cfgs: dict[str, BenchConfig], share: tuple[int, int]) -> dict:
    """Every bench of ``args.protocols`` (resumable); seconds per bench in this call."""
    seconds = {}
    order = ["paper", "converge", "ceiling", "strict"]
    for name in [n for n in order if n in cfgs and (n in args.protocols or n in ("converge", "ceiling"))]:
        t0 = time.perf_counter()
        strict = name == "strict"
        if strict:
            print(f"strict: {reuse_generator_free_jobs(args.work / 'paper', args.work / name, cfgs[name])} "
                  "real/real+dup jobs reused from the paper bench", flush=True)
        run_bench(cfgs[name], args.work / name, model=Path(args.model),
                  n_synth=args.n_synth, job=share, strict=strict, test_data=args.test_data,
                  generator_overrides=args.strict_generator_set if strict else None)
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: this call {seconds[name] / 60:.1f} min", flush=True)
    return seconds


# ------------------------------------------------------------------------------ the report

def build_report(work: Path, names: list[str]) -> dict:
    """The sweep's record from its benches' results.json files."""
    benches = {n: json.loads((work / n / "results.json").read_text()) for n in names
               if (work / n / "results.json").is_file()}
    cells = [dict(c, protocol=n) for n in ("paper", "strict") if n in benches for c in benches[n]["cells"]]
    primary = None
    family = []
    for n in ("paper", "strict"):
        if n not in benches:
            continue
        if benches[n].get("primary"):
            primary = dict(benches[n]["primary"], protocol=n)
        family += [dict(c, protocol=n) for c in benches[n].get("family", [])]
    for rec, adj in zip(family, holm([r["p_value"] for r in family])):
        rec["p_holm"] = adj
    real_at = {c["frac"]: c for c in cells if c["arm"] == "real" and c["protocol"] == "paper"}
    converge = [{"frac": c["frac"], "steps": benches["paper"]["statistics"]["steps"],
                 "real": real_at[c["frac"]]["estimate"], "real_ci": real_at[c["frac"]]["ci"],
                 "steps_x2": c["optimizer_steps"][0], "real_x2": c["estimate"], "real_x2_ci": c["ci"],
                 "gain_x2": c["estimate"] - real_at[c["frac"]]["estimate"]}
                for c in benches.get("converge", {}).get("cells", []) if c["frac"] in real_at]
    ceiling = next((c for c in benches.get("ceiling", {}).get("cells", []) if c["arm"] == "real"), None)
    headroom = [{"frac": f, "real": c["estimate"], "real_100": ceiling["estimate"],
                 "real_100_ci": ceiling["ci"], "headroom": ceiling["estimate"] - c["estimate"]}
                for f, c in sorted(real_at.items()) if ceiling is not None]
    any_bench = next(iter(benches.values()))
    return {"cost": cost(benches, work), "declared_primary": PRIMARY, "primary": primary, "family": family, "cells": cells,
            "convergence": converge, "headroom": headroom, "level": LEVEL,
            "statistics": any_bench["statistics"], "labels": any_bench["labels"],
            "test": any_bench["test"], "test_sets": any_bench.get("test_sets", {}),
            "transfer_efficiency": {n: benches[n].get("transfer_efficiency", []) for n in ("paper", "strict") if n in benches},
            "generators": {n: benches[n].get("generator") for n in ("paper", "strict") if n in benches},
            "cohorts": {n: {k: {kk: vv for kk, vv in v.items() if kk != "card"} | {
                "counts": (v.get("card") or {}).get("counts")}
                for k, v in benches[n].get("synthetic", {}).get("cohorts", {}).items()}
                for n in ("paper", "strict") if n in benches},
            "config": {n: b["config"] for n, b in benches.items()},
            "benches_done": sorted(benches), "versions": any_bench["versions"]}


def cost(benches: dict, work: Path | None = None) -> dict:
    """Measured seconds per bench: classifier jobs (one per fraction x draw x arm x seed, the
    shared pre-trainings counted once), cohort synthesis; one thread per job (``torch_threads``)."""
    out = {}
    for name, b in benches.items():
        jobs = [j for j in b["jobs"] if j.get("seconds") is not None]
        if name == "strict" and "paper" in benches:  # its real / real+dup jobs are the paper's, copied
            jobs = [j for j in jobs if j["arm"] not in NO_GENERATOR]
        pre = {(j["arm"], j["seed"], j["frac"] if name == "strict" else 0,
                j["draw"] if name == "strict" else 0): j["pretrain_seconds"]
               for j in jobs if j.get("pretrain_seconds")}
        cohorts = [c["card"].get("generation_seconds") or 0.0
                   for c in b.get("synthetic", {}).get("cohorts", {}).values() if c.get("card")]
        secs = sorted(j["seconds"] for j in jobs)
        out[name] = {"jobs": len(jobs), "job_seconds_median": secs[len(secs) // 2] if secs else None,
                     "classifier_hours": round((sum(secs) + sum(pre.values())) / 3600, 3),
                     "cohort_hours": round(sum(cohorts) / 3600, 3),
                     "steps_per_job": sorted({j["optimizer_steps"] for j in jobs})}
    paths = sorted((work / "strict" / "generators").glob(f"*/{COST_NAME}")) if work is not None else []
    gens = [json.loads(p.read_text()) | {"frac": p.parent.name.split("_")[0].removeprefix("frac")}
            for p in paths]
    if "strict" in out:
        secs = sorted(g["seconds"] for g in gens)
        whole = sorted(g["seconds"] for g in gens if not g.get("resumed"))
        out["strict"] |= {"generators": len(gens), "generator_hours": round(sum(secs) / 3600, 3),
                          "generator_seconds_median": whole[len(whole) // 2] if whole else None,
                          "generators_resumed": sum(bool(g.get("resumed")) for g in gens),
                          "by_frac": _generator_cost_by_frac(gens)}
    out["total_hours"] = round(sum(v["classifier_hours"] + v["cohort_hours"] + v.get("generator_hours", 0)
                                   for v in out.values()), 3)
    return out


def _generator_cost_by_frac(gens: list[dict]) -> dict:
    """Per fraction: how many generators have a cost record, and the hours of those timed whole
    (a resumed generator's earlier calls are not in its record)."""
    out = {}
    for frac in sorted({g["frac"] for g in gens}, key=float):
        whole = sorted(g["seconds"] for g in gens if g["frac"] == frac and not g.get("resumed"))
        out[frac] = {"recorded": sum(g["frac"] == frac for g in gens), "timed_whole": len(whole),
                     "seconds_median": whole[len(whole) // 2] if whole else None,
                     "n_images": sorted(g["n_images"] for g in gens if g["frac"] == frac)}
    return out


def verdict(rec: dict) -> str:
    """One sentence a user can act on, from the primary comparison (or why there is none)."""
    p, d = rec["primary"], rec["declared_primary"]
    what = f"{d['arm']} minus {d['reference']} at {d['frac']:.0%} ({d['protocol']} protocol)"
    if p is None:
        return f"No verdict yet: the primary comparison ({what}) has not run."
    lo, hi = p["ci"]
    est = f"{p['estimate']:+.3f} mAUC [{lo:+.3f}, {hi:+.3f}]"
    if lo > 0:
        return f"Synthetic pre-training helped: {what} = {est}; it is worth using at this data size."
    if hi < 0:
        return f"Synthetic pre-training hurt: {what} = {est}; do not use it at this data size."
    return (f"No benefit shown: {what} = {est}; the interval includes 0, so at this data size the "
            "synthetic images are not shown to add anything over reusing the real ones.")


def _ci(c: dict, sign: str = "") -> str:
    return f"{c['estimate']:{sign}.3f} [{c['ci'][0]:{sign}.3f}, {c['ci'][1]:{sign}.3f}]"


def markdown(rec: dict) -> str:
    st = rec["statistics"]
    lines = [f"# Limited-data benchmark, protocol v3 ({rec['date']})", "",
             "Written by `benchmarks/limited_data.py`; every number below is in "
             f"[`{rec['name']}.json`]({rec['name']}.json).", "",
             *(["Commands, in order (each later one extended the same work folder, resuming):", "",
                *[f"- `{c}`" for c in rec["commands"]], ""] if len(rec.get("commands", [])) > 1
               else [f"Command: `{rec['command']}`  "]),
             f"Machine: {rec['machine']['model']} "
             f"({', '.join(rec['machine']['flags'])}), {rec['machine']['cores']} cores.", "",
             f"**Verdict.** {rec['verdict']}", "",
             f"Protocol: every classifier trains {st['steps']} optimiser steps (pre-training arms: "
             f"{st['pretrain_steps']} pre-training + {st['steps'] - st['pretrain_steps']} fine-tuning), "
             f"selection: {st['selection']}; intervals: {st['method']}, {rec['level']:.0%}.", ""]
    if rec["primary"]:
        p = rec["primary"]
        lines += [f"**Primary comparison** (declared before the run): {p['protocol']} {p['frac']:.0%}, "
                  f"{p['arm']} - real+dup = {_ci(p, '+')}, p = {p['p_value']:.3f}.", ""]
    lines += ["| protocol | real fraction | arm | draws x seeds | steps | test mAUC | vs real+dup | "
              + " | ".join(f"{t} mAUC" for t in rec["test_sets"]) + " |",
              "|---|---|---|---|---|---|---|" + "---|" * len(rec["test_sets"])]
    for c in rec["cells"]:
        ext = [_ci(c["external"][t]) if c.get("external") else "-" for t in rec["test_sets"]]
        lines.append(f"| {c['protocol']} | {c['frac']:.0%} | {c['arm']} | {c['draws']}x{c['seeds']} | "
                     f"{','.join(map(str, c['optimizer_steps']))} | {_ci(c)} | "
                     f"{_ci(c['vs_dup'], '+') if c.get('vs_dup') else '-'} | " + " | ".join(ext) + " |")
    if rec["family"]:
        lines += ["", "Every other comparison against real+dup (one family, Holm-adjusted):", "",
                  "| protocol | real fraction | arm | difference | p | Holm p |", "|---|---|---|---|---|---|"]
        lines += [f"| {f['protocol']} | {f['frac']:.0%} | {f['arm']} | {_ci(f, '+')} | {f['p_value']:.3f} | "
                  f"{f['p_holm']:.3f} |" for f in rec["family"]]
    if rec["convergence"]:
        lines += ["", "Is the budget enough for `real`? The same draws at twice the steps:", "",
                  "| real fraction | steps | real | 2x steps | real (one seed per draw) | gain |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c['frac']:.0%} | {c['steps']} | {c['real']:.3f} [{c['real_ci'][0]:.3f}, {c['real_ci'][1]:.3f}] | "
                  f"{c['steps_x2']} | {c['real_x2']:.3f} [{c['real_x2_ci'][0]:.3f}, {c['real_x2_ci'][1]:.3f}] | "
                  f"{c['gain_x2']:+.3f} |" for c in rec["convergence"]]
    if rec["headroom"]:
        lines += ["", "Headroom: `real` on 100 % of the training patients (same budget) minus `real` "
                  "at the fraction:", "", "| real fraction | real | real 100 % | headroom |", "|---|---|---|---|"]
        lines += [f"| {h['frac']:.0%} | {h['real']:.3f} | {h['real_100']:.3f} | {h['headroom']:+.3f} |"
                  for h in rec["headroom"]]
    c = rec["cost"]
    lines += ["", f"Cost, measured on this machine ({rec['machine']['model']}): wall seconds of one-thread "
              "jobs, as they ran (job shares side by side on the cores, other work beside them), so "
              "an idle core is faster. The strict bench's `real` / `real+dup` jobs are the paper "
              "bench's, copied, and counted once:", "",
              "| bench | jobs | median seconds per job | classifier hours | cohort hours |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {v['jobs']} | {v['job_seconds_median']} | {v['classifier_hours']} | {v['cohort_hours']} |"
              for n, v in c.items() if n != "total_hours"]
    if c.get("strict", {}).get("generators"):
        g = c["strict"]
        lines += ["", f"Strict generators: {g['generators']}, median {g['generator_seconds_median']} s each "
                  "(of those timed whole), "
                  f"{g['generator_hours']} hours in all ({g['generators_resumed']} resumed after an "
                  "interruption: their earlier calls are not counted)."]
        lines += ["", "| real fraction | generators recorded | timed whole | hours per generator (median of "
                  "those timed whole) | training images |", "|---|---|---|---|---|"]
        lines += [f"| {float(f):.0%} | {v['recorded']} | {v['timed_whole']} | "
                  f"{'-' if v['seconds_median'] is None else round(v['seconds_median'] / 3600, 2)} | "
                  f"{', '.join(map(str, v['n_images']))} |" for f, v in g.get("by_frac", {}).items()]
    lines += ["", f"Total: {c['total_hours']} hours."]
    missing = sorted({"paper", "strict", "converge", "ceiling"} - set(rec["benches_done"]))
    if missing:
        lines += ["", f"Not yet run: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def figure(rec: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protos = [p for p in ("paper", "strict") if any(c["protocol"] == p for c in rec["cells"])]
    fig, axes = plt.subplots(1, len(protos), figsize=(5 * len(protos), 3.8), squeeze=False)
    for ax, proto in zip(axes[0], protos):
        cells = [c for c in rec["cells"] if c["protocol"] == proto]
        arms = sorted({c["arm"] for c in cells}, key=ARMS.index)
        fracs = sorted({c["frac"] for c in cells})
        width = 0.8 / len(arms)
        for i, arm in enumerate(arms):
            cs = [next(c for c in cells if c["arm"] == arm and c["frac"] == f) for f in fracs]
            x = [j + i * width for j in range(len(fracs))]
            ax.errorbar(x, [c["estimate"] for c in cs], fmt="o", label=arm,
                        yerr=[[c["estimate"] - c["ci"][0] for c in cs], [c["ci"][1] - c["estimate"] for c in cs]])
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(fracs))], [f"{f:.0%}" for f in fracs])
        ax.set_title(f"{proto} protocol", fontsize=9)
        ax.set_ylabel(f"test mAUC ({rec['level']:.0%} hierarchical bootstrap)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()  # below the panels, off the data
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _no_job(argv: list[str]) -> list[str]:
    """The command without its ``--job i/N`` share (every share runs the same sweep)."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--job="):
            skip = False
            continue
        skip = a == "--job"
        if not skip:
            out.append(a)
    return out


def _record_command(path: Path, argv: list[str]) -> None:
    """Append this sweep command to the work folder's ``command.txt`` unless it is there: a work
    folder extended by later commands (another protocol, more draws) lists each in order."""
    line = shlex.join(_no_job(argv))
    have = path.read_text().splitlines() if path.is_file() else []
    if line not in have:
        path.write_text("".join(f"{c}\n" for c in [*have, line]))


def write_report(args, argv: list[str], seconds: dict) -> Path:
    names = ["paper", "strict", "converge", "ceiling"]
    rec = build_report(args.work, names)
    ran = args.work / "command.txt"
    commands = ran.read_text().strip().splitlines() if ran.is_file() else [shlex.join(_no_job(argv))]
    rec.update(name=args.name, date=dt.date.today().isoformat(), command=commands[-1], commands=commands,
               machine=cpu_info() | {"torch_threads": torch.get_num_threads()},
               seconds_this_call=seconds)
    if args.report_only:  # the sweep's own settings stay those of its command
        rec["report_command"] = shlex.join(argv)
    rec["verdict"] = verdict(rec)
    rec = relative_paths(rec, args.out_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{args.name}.json"
    out.write_text(json.dumps(rec, indent=2, default=str) + "\n")
    (args.out_dir / f"{args.name}.md").write_text(markdown(rec))
    figure(rec, args.out_dir / f"{args.name}.png")
    print(rec["verdict"])
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        return sweep(argv)
    except CxraugError as e:  # a wrong setting or input: one line, like the CLI
        sys.exit(f"error: {e}")


def sweep(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="the real dataset (any layout cxraug reads); required unless --report-only")
    ap.add_argument("--model", help="the generator: shipped name or run folder (its config.yaml is the "
                    "strict generators' recipe); required unless --report-only")
    ap.add_argument("--test-data", action="append", default=[], help="external test set (repeatable)")
    ap.add_argument("--fracs", default="0.01,0.05", help="paper protocol fractions")
    ap.add_argument("--strict-fracs", default="0.01,0.05", help="strict protocol fractions ('' for none)")
    ap.add_argument("--protocols", default="paper,strict", help="which generator protocols to run now")
    ap.add_argument("--strict-generator-set", action="append", default=[],
                    help="override for the strict generators' recipe, after the size scaling")
    ap.add_argument("--subsets", type=int, default=3, help="patient-level draws per fraction")
    ap.add_argument("--seeds", type=int, default=2, help="training seeds per draw")
    ap.add_argument("--converge-seeds", type=int, default=1, help="seeds per draw of the 2x-budget real arm")
    ap.add_argument("--steps", type=int, default=200, help="optimiser steps every arm trains")
    ap.add_argument("--n-synth", type=int, default=2000, help="cohort size per generator")
    ap.add_argument("--set", action="append", default=[], help="BenchConfig override KEY=VALUE")
    ap.add_argument("--job", default=None, help="run share i/N of every bench's jobs")
    ap.add_argument("--work", type=Path, default=Path("runs/limited-v3"))
    ap.add_argument("--name", default="limited_data_v3", help="file stem under --out-dir")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--report-only", action="store_true", help="train nothing: rewrite the report "
                    "from the finished benches under --work")
    args = ap.parse_args(argv)
    argv = ["benchmarks/limited_data.py", *(sys.argv[1:] if argv is None else argv)]
    args.fracs = fractions(args.fracs, "--fracs")
    args.strict_fracs = fractions(args.strict_fracs, "--strict-fracs")
    args.protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if bad := [p for p in args.protocols if p not in ("paper", "strict")]:
        ap.error(f"--protocols: unknown {bad[0]!r}; choose paper, strict")
    if args.report_only:
        if not (args.work / "paper" / "results.json").is_file():
            sys.exit(f"{args.work / 'paper' / 'results.json'}: no such file; --report-only needs a "
                     "finished paper bench (run without it first)")
        write_report(args, argv, {})
        return 0
    if not (args.data and args.model):
        ap.error("--data and --model are required (only --report-only works without them)")
    share = parse_slice(args.job, "--job")
    cfgs = bench_configs(args)  # every setting checked before anything runs
    args.work.mkdir(parents=True, exist_ok=True)
    declared = args.work / "protocol.json"
    if not declared.is_file():  # the primary comparison, fixed before the first job
        declared.write_text(json.dumps({"primary": PRIMARY, "family": "every other comparison "
                                        "against real+dup, Holm", "level": LEVEL,
                                        "declared": dt.datetime.now(dt.timezone.utc).isoformat()}, indent=2))
    _record_command(args.work / "command.txt", argv)
    seconds = run_sweep(args, cfgs, share)
    done = all((args.work / n / "results.json").is_file() for n in cfgs
               if n in args.protocols or n in ("converge", "ceiling"))
    if done:
        write_report(args, argv, seconds)
    else:
        print("some jobs of other shares are still missing; the last share to finish writes the report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
