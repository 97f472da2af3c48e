"""Does a generator's realism matter downstream? A second generator on the paper protocol of a
finished limited-data sweep (``benchmarks/limited_data.py``): the same real subsets, seeds, step
budget and test patients; its ``synth->real`` and ``real+synth`` arms against ``real+dup`` and
against the first generator's.

    python benchmarks/generator_realism.py --old-work runs/limited-v3 --model kermany-128 \
        [--test-data ../shared/data/nih14] [--n-synth 1000] [--work runs/realism] [--name generator_realism]

Declared before any job (``WORK/protocol.json``, refused if another one is there): the primary
comparison is the paper protocol at 5 %, ``synth->real`` of the new generator minus the old one's
(paired on subset draws, seeds and test patients: the hierarchical bootstrap of the bench). The
family, Holm-adjusted, is every other new-minus-old difference and each new arm against
``real+dup``. The old sweep's ``real+dup`` jobs and splits are copied, not retrained; the new
generator draws its own cohort (``--n-synth``: the old sweep's size). Resumable (a finished job is
kept). Writes ``benchmarks/results/NAME.json`` and ``.md`` (command, machine, date, no machine
paths) and prints the primary comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

import torch

from cxraug.classify.real import load_real_splits
from cxraug.core import config as C
from cxraug.core.errors import CxraugError
from cxraug.core.paths import relative_paths
from cxraug.core.precision import cpu_info
from cxraug.experiments.bench import DUP, BenchConfig, run_bench
from cxraug.experiments.bench.inputs import load_test_sets
from cxraug.experiments.bench.report import arm_stats, paired_diff
from cxraug.metrics import hierarchical as H

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from limited_data import _ci, reuse_generator_free_jobs  # a sibling script

ARMS = ["synth->real", "real+synth"]
PRIMARY = {"protocol": "paper", "frac": 0.05, "arm": "synth->real", "comparison": "new - old"}


def bench_config(old: Path, data: str | None) -> BenchConfig:
    """The old paper bench's settings, with only the arms compared here and ``real+dup``."""
    if not (old / "results.json").is_file():
        raise CxraugError(f"{old / 'results.json'}: no finished paper bench there; run "
                          "benchmarks/limited_data.py --protocols paper first")
    sets = [f"arms=[{DUP},{','.join(ARMS)}]", "primary=none"] + ([f"data={data}"] if data else [])
    return C.load(BenchConfig, old / "config.yaml", sets)


def declare(work: Path) -> None:
    """Write the primary comparison before the first job; refuse a folder declared otherwise."""
    path = work / "protocol.json"
    if path.is_file():
        if json.loads(path.read_text())["primary"] != PRIMARY:
            raise CxraugError(f"{path}: declares another primary comparison; use another --work")
        return
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"primary": PRIMARY, "family": "every other new - old difference and "
                                "each new arm against real+dup, Holm", "level": H.LEVEL,
                                "declared": dt.datetime.now(dt.timezone.utc).isoformat()}, indent=2) + "\n")


def bench_splits(bench: Path, model: str) -> Path:
    """The splits a bench used: its generator run's own, else the bench folder's."""
    from cxraug.models.zoo import resolve_model

    mine = resolve_model(model) / "splits.csv"
    return mine if mine.is_file() else bench / "splits.csv"


def same_splits(old: Path, old_model: str, new: Path, model: str) -> Path:
    """The old bench's splits, given to the new bench; refused if the new generator run has
    other splits of its own (the two would be scored on different test patients, and the copied
    ``real+dup`` jobs would not be its)."""
    import shutil

    theirs = bench_splits(old, old_model)
    mine = bench_splits(new, model)
    if mine != new / "splits.csv" and mine.read_bytes() != theirs.read_bytes():
        raise CxraugError(f"{mine}: not the splits of the bench in {old}; the generators would be "
                          "scored on different test patients (train the new one with the same split seed)")
    new.mkdir(parents=True, exist_ok=True)
    if not (new / "splits.csv").is_file():
        shutil.copyfile(theirs, new / "splits.csv")
    return theirs


def hours(new: Path) -> float:
    """Measured hours of what this comparison ran: the new generator's classifier jobs (its
    shared pre-trainings once) and its cohort, not the copied real+dup jobs."""
    rec = json.loads((new / "results.json").read_text())
    jobs = [j for j in rec["jobs"] if j["arm"] in ARMS and j.get("seconds") is not None]
    pre = {(j["arm"], j["seed"]): j.get("pretrain_seconds") or 0.0 for j in jobs}
    cohorts = [(c.get("card") or {}).get("generation_seconds") or 0.0
               for c in rec.get("synthetic", {}).get("cohorts", {}).values()]
    return round((sum(j["seconds"] for j in jobs) + sum(pre.values()) + sum(cohorts)) / 3600, 3)


def compare(cfg: BenchConfig, old: Path, new: Path, splits: Path, test_data: list[str]) -> dict:
    """Per test set, fraction and arm: old and new against real+dup, and new minus old."""
    old_jobs = json.loads((old / "results.json").read_text())["jobs"]
    new_jobs = json.loads((new / "results.json").read_text())["jobs"]
    real = load_real_splits(cfg, splits, cfg.image_size, cfg.split_seed)
    sets = [("test", real.test.targets, real.test.patient_ids, None)]
    sets += [(t.name, t.data.targets, t.data.patient_ids, t) for t in load_test_sets(test_data, cfg, real.labels)]
    rows = []
    for name, y, pids, t in sets:
        for frac in cfg.real_fracs:
            a = arm_stats(cfg, old, [j for j in old_jobs if j["arm"] in (DUP, *ARMS)], frac, y, pids, t)
            b = arm_stats(cfg, new, new_jobs, frac, y, pids, t)
            if a[DUP][1].shape != b[DUP][1].shape or (a[DUP][0] != b[DUP][0]).any():
                raise CxraugError(f"{new}: its real+dup jobs at {frac:g} are not the old bench's; "
                                  "start again in an empty --work")
            for arm in ARMS:
                rows.append({"test_set": name, "frac": frac, "arm": arm,
                             "old": H.summarise(*a[arm]), "new": H.summarise(*b[arm]),
                             "real+dup": H.summarise(*b[DUP]),
                             "old_vs_dup": H.summarise(*paired_diff(a[arm], a[DUP])),
                             "new_vs_dup": H.summarise(*paired_diff(b[arm], b[DUP])),
                             "new_minus_old": H.summarise(*paired_diff(b[arm], a[arm]))})
    return {"rows": rows, "test_sets": [s[0] for s in sets]}


def family(rows: list[dict]) -> tuple[dict | None, list[dict]]:
    """The declared primary comparison and the Holm family (on the official test split)."""
    primary, fam = None, []
    for r in (r for r in rows if r["test_set"] == "test"):
        if (r["frac"], r["arm"]) == (PRIMARY["frac"], PRIMARY["arm"]):
            primary = {"frac": r["frac"], "arm": r["arm"], "comparison": "new - old", **r["new_minus_old"]}
        else:
            fam.append({"frac": r["frac"], "arm": r["arm"], "comparison": "new - old", **r["new_minus_old"]})
        fam.append({"frac": r["frac"], "arm": r["arm"], "comparison": "new - real+dup", **r["new_vs_dup"]})
    for rec, adj in zip(fam, H.holm([f["p_value"] for f in fam])):
        rec["p_holm"] = adj
    return primary, fam


def verdict(primary: dict | None) -> str:
    what = f"{PRIMARY['arm']} at {PRIMARY['frac']:.0%} (paper protocol), new generator minus old"
    if primary is None:
        return f"No verdict: the primary comparison ({what}) has not run."
    lo, hi = primary["ci"]
    est = f"{primary['estimate']:+.3f} mAUC [{lo:+.3f}, {hi:+.3f}]"
    if lo > 0:
        return f"The more realistic generator helped: {what} = {est}."
    if hi < 0:
        return f"The more realistic generator hurt: {what} = {est}."
    return f"No difference shown: {what} = {est}; the interval includes 0."


def markdown(rec: dict) -> str:
    p = rec["primary"]
    lines = [f"# Does realism matter downstream? ({rec['date']})", "",
             "Written by `benchmarks/generator_realism.py`; every number below is in "
             f"[`{rec['name']}.json`]({rec['name']}.json).", "",
             f"Command: `{rec['command']}`  ",
             f"Machine: {rec['machine']['model']} ({', '.join(rec['machine']['flags'])}), "
             f"{rec['machine']['cores']} cores.", "",
             f"Generators: old `{rec['old_model']}` (the sweep in `{rec['old_work']}`), new "
             f"`{rec['new_model']}`. Paper protocol: each classifier trains {rec['steps']} optimiser "
             "steps; the same subset draws, seeds and test patients for both generators; the "
             "`real+dup` jobs are the old sweep's. Intervals: hierarchical paired bootstrap (subset "
             f"draws, seeds, test patients), {rec['level']:.0%}.", "",
             f"**Verdict.** {rec['verdict']}", ""]
    if p:
        lines += [f"**Primary comparison** (declared before the run): {p['frac']:.0%}, {p['arm']}, "
                  f"new - old = {_ci(p, '+')}, p = {p['p_value']:.3f}.", ""]
    lines += ["| test set | real fraction | arm | old | new | real+dup | old - real+dup | new - real+dup | new - old |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['test_set']} | {r['frac']:.0%} | {r['arm']} | {_ci(r['old'])} | {_ci(r['new'])} | "
              f"{_ci(r['real+dup'])} | {_ci(r['old_vs_dup'], '+')} | {_ci(r['new_vs_dup'], '+')} | "
              f"{_ci(r['new_minus_old'], '+')} |" for r in rec["rows"]]
    lines += ["", "Family (official test split, Holm-adjusted):", "",
              "| real fraction | arm | comparison | difference | p | Holm p |", "|---|---|---|---|---|---|"]
    lines += [f"| {f['frac']:.0%} | {f['arm']} | {f['comparison']} | {_ci(f, '+')} | {f['p_value']:.3f} | "
              f"{f['p_holm']:.3f} |" for f in rec["family"]]
    lines += ["", f"Cost of this run on this machine: {rec['hours']} hours (the new generator's cohort "
              "and classifier jobs; wall time)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-work", type=Path, required=True, help="a limited_data.py work folder with a finished paper bench")
    ap.add_argument("--model", required=True, help="the new generator: shipped name or run folder")
    ap.add_argument("--data", help="the real dataset (default: the old bench's)")
    ap.add_argument("--test-data", action="append", default=[], help="external test set (repeatable)")
    ap.add_argument("--n-synth", type=int, default=1000, help="cohort size (the old sweep's)")
    ap.add_argument("--work", type=Path, default=Path("runs/realism"))
    ap.add_argument("--name", default="generator_realism", help="file stem under --out-dir")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    command = shlex.join(["benchmarks/generator_realism.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        old = args.old_work / "paper"
        cfg = bench_config(old, args.data)
        old_rec = json.loads((old / "results.json").read_text())
        declare(args.work)
        new = args.work / "paper"
        old_model = (old_rec.get("generator") or {}).get("model") or ""
        splits = same_splits(old, old_model, new, args.model)
        reuse_generator_free_jobs(old, new, cfg)
        run_bench(cfg, new, model=Path(args.model), n_synth=args.n_synth, test_data=args.test_data)
        cmp = compare(cfg, old, new, splits, args.test_data)
    except CxraugError as e:  # a wrong setting or input: one line, like the CLI
        sys.exit(f"error: {e}")
    primary, fam = family(cmp["rows"])
    rec = {"name": args.name, "date": dt.date.today().isoformat(), "command": command,
           "machine": cpu_info() | {"torch_threads": torch.get_num_threads()},
           "declared_primary": PRIMARY, "primary": primary, "family": fam, "verdict": verdict(primary),
           "old_model": old_model, "old_work": str(args.old_work),
           "new_model": args.model, "steps": cfg.steps, "level": H.LEVEL,
           "hours": hours(new), **cmp}
    rec = relative_paths(rec, args.out_dir)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(rec, indent=2, default=str) + "\n")
    (args.out_dir / f"{args.name}.md").write_text(markdown(rec))
    print(rec["verdict"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
