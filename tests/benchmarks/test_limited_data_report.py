"""benchmarks/limited_data_report.py: the figure, README table and compact JSON of issue #16, from
a real (tiny) ``cxraug bench`` results.json with every arm, transfer efficiency and an external
test set; a strict-protocol file with missing cells is reported next to it."""

import copy
import json
from pathlib import Path

import pytest
from conftest import generator_run, load_script, write_cohort
from PIL import Image

from cxraug.experiments import bench as B

REPO = Path(__file__).resolve().parents[2]
ARMS = ["real", "real+dup", "real+synth", "synth->real", "gen-data->real"]


@pytest.mark.no_templates  # the bench reads a cohort folder: no prompts, no template bank
def test_report_from_a_real_bench(kermany_fixture, nih_fixture, tmp_path, capsys, one_thread):
    cfg = B.BenchConfig(data=str(kermany_fixture), image_size=16, min_positive=1, n_boot=20,
                        real_fracs=[0.5, 1.0], arms=ARMS, seeds=2)
    cfg.classifier.arch, cfg.classifier.max_epochs = "resnet10t", 1
    out = tmp_path / "runs" / "sweep-paper"
    B.run_bench(cfg, out, synth=write_cohort(tmp_path / "cohort"), test_data=[str(nih_fixture)],
                model=generator_run(kermany_fixture, tmp_path / "gen"), progress=False)
    (tmp_path / "runs" / "sweep.sh").write_text(  # how the bench was started: the report finds it
        f"cd {tmp_path}\n{REPO}/.venv/bin/cxraug bench --data {kermany_fixture} \\\n"
        "  --arms 'real,real+dup,real+synth,synth->real,gen-data->real' --seeds 2 \\\n"
        f"  --test-data {nih_fixture} --out runs/sweep-paper\n")

    paper = json.loads((out / "results.json").read_text())
    strict = copy.deepcopy(paper)  # a strict run at 50% only, without real+dup
    strict["protocol"] = strict["generator"]["protocol"] = "strict"
    strict["cells"] = [c for c in strict["cells"] if c["frac"] == 0.5 and c["arm"] != "real+dup"]
    strict["transfer_efficiency"] = [dict(strict["transfer_efficiency"][0], value=0.42, ci=[0.1, 0.8], reason=None)]
    (tmp_path / "strict").mkdir()
    (tmp_path / "strict" / "results.json").write_text(json.dumps(strict))

    rep = load_script("limited_data_report")
    res = tmp_path / "results"
    assert rep.main(["--paper", str(out / "results.json"), "--strict", str(tmp_path / "strict" / "results.json"),
                     "--name", "ld", "--out-dir", str(res)]) == 0
    printed = capsys.readouterr().out

    png = Image.open(res / "ld.png")
    assert png.size[0] > 1000 and png.size[1] > 500  # two panels (test split, nih14) at dpi 150

    md = (res / "ld.md").read_text()
    assert md.splitlines()[0] in printed
    header = next(line for line in md.splitlines() if line.startswith("| real | protocol"))
    assert all(f" {a} |" in header for a in ARMS) and "transfer efficiency" in header
    rows = [line for line in md.splitlines() if line.startswith(("| 50% |", "| 100% |"))]
    assert {r.split(" | ")[0] + r.split(" | ")[1] for r in rows} >= {"| 50%paper", "| 100%paper", "| 50%strict"}
    assert "**nih14** (external test set" in md and "Δ " in md and " ± " in md  # sd over 2 seeds
    assert not any(r.startswith("| 100% | strict") for r in rows)  # nothing there: no row
    strict_50 = next(r for r in rows if r.startswith("| 50% | strict")).split(" | ")
    assert strict_50[3] == "-" and strict_50[-1] == "0.42 [0.10, 0.80] |"  # real+dup absent
    assert all(f"| {rep.te_text(t)} |" in md for t in paper["transfer_efficiency"])  # value or n/a (why)

    text = (res / "ld.json").read_text()
    assert "/tmp" not in text and str(REPO) not in text and str(tmp_path) not in text
    summary = json.loads(text)
    te = summary["transfer_efficiency"]
    assert {(t["protocol"], t["frac"]) for t in te} == {("paper", 0.5), ("paper", 1.0), ("strict", 0.5)}
    assert next(t for t in te if t["protocol"] == "strict") | {"per_seed": []} == {
        "protocol": "strict", "frac": 0.5, "value": 0.42, "ci": [0.1, 0.8], "reason": None, "per_seed": []}
    assert all(len(t["per_seed"]) == 2 for t in te)
    assert all((t["value"] is None) == (t["reason"] is not None) for t in te)
    cells = {(c["protocol"], c["frac"], c["arm"]): c for c in summary["cells"]}
    assert len(cells) == 2 * len(ARMS) + len(ARMS) - 1
    c = cells[("paper", 0.5, "synth->real")]
    assert {"mauc_mean", "mauc_sd", "ci_mean", "diff_vs_real_mean", "diff_ci_mean"} <= set(c)
    assert set(c["external"]["nih14"]) == {"mauc_mean", "mauc_sd", "ci_mean"}
    p = summary["protocols"]["paper"]
    assert p["test"]["n_images"] == paper["test"]["n_images"] and p["test_sets"]["nih14"]["n_images"] == 40
    assert p["generator"]["generators"]["all"]["real_frac"] == 1.0 and p["generator"]["generators"]["all"]["images"]
    assert p["results"] == "results.json" and p["versions"]["torch"]
    cmd = p["bench_command"]  # found in runs/sweep.sh, its paths made relative
    assert cmd.startswith("cxraug bench --data kermany") and "--out runs/sweep-paper" in cmd
    assert summary["protocols"]["strict"]["bench_command"] is None

    # --paper-extra: the 100% cells from another bench of the same settings fill the gap
    only50 = copy.deepcopy(paper)
    only50["cells"] = [c for c in only50["cells"] if c["frac"] == 0.5]
    only50["transfer_efficiency"] = [t for t in only50["transfer_efficiency"] if t["frac"] == 0.5]
    (tmp_path / "p50").mkdir()
    (tmp_path / "p50" / "results.json").write_text(json.dumps(only50))
    assert rep.main(["--paper", str(tmp_path / "p50" / "results.json"), "--paper-extra", str(out / "results.json"),
                     "--name", "merged", "--out-dir", str(res)]) == 0
    merged = json.loads((res / "merged.json").read_text())
    assert {(c["frac"], c["arm"]) for c in merged["cells"]} == {(c["frac"], c["arm"]) for c in paper["cells"]}
    assert merged["protocols"]["paper"]["merged_from"] == ["results.json"]
    other = copy.deepcopy(paper)
    other["config"]["image_size"] = 99
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="image_size"):
        rep.main(["--paper", str(tmp_path / "p50" / "results.json"), "--paper-extra", str(tmp_path / "other.json"),
                  "--name", "bad", "--out-dir", str(res)])
