"""benchmarks/limited_data.py, the sweep of record (protocol v3): paper and strict protocol with a
tiny trained generator and two subset draws, the generator-free jobs reused (not retrained) under
strict, the declared primary comparison and Holm family, the convergence and headroom benches, a
report with the machine and no machine paths, and a rerun that trains nothing."""

import json
import re

import pytest
from conftest import load_script, train_tiny_run

TINY_BENCH = ["--set", "image_size=16", "--set", "min_positive=1", "--set", "n_boot=20",
              "--set", "classifier.arch=resnet10t"]


@pytest.mark.no_templates
def test_sweep_both_protocols_then_resume(tmp_path_factory, tmp_path, nih_fixture, one_thread, capsys):
    _, run, root = train_tiny_run(tmp_path_factory)
    work, results = tmp_path / "work", tmp_path / "results"
    argv = ["--data", str(root), "--model", str(run.root), "--test-data", str(nih_fixture),
            "--fracs", "0.25,0.5", "--strict-fracs", "0.25", "--subsets", "2", "--seeds", "1",
            "--steps", "2", "--n-synth", "4", "--strict-generator-set", "train.steps=2",
            "--strict-generator-set", "adapter.steps=1", "--work", str(work), "--out-dir", str(results),
            "--name", "t", *TINY_BENCH]
    sweep = load_script("limited_data")
    # the tiny fixture's 5 % is one patient: declare the same comparison at 25 % instead
    sweep.PRIMARY = dict(sweep.PRIMARY, frac=0.25)
    assert sweep.main(argv) == 0

    declared = json.loads((work / "protocol.json").read_text())
    assert declared["primary"] == {"protocol": "strict", "frac": 0.25, "arm": "synth->real",
                                   "reference": "real+dup"}
    rec = json.loads((results / "t.json").read_text())
    assert rec["primary"]["protocol"] == "strict" and rec["primary"]["arm"] == "synth->real"
    assert rec["primary"]["draws"] == 2 and len(rec["primary"]["ci"]) == 2
    fam = rec["family"]
    assert fam and all(f["p_holm"] >= f["p_value"] for f in fam)
    assert not any(f["protocol"] == "strict" and f["frac"] == 0.25 and f["arm"] == "synth->real" for f in fam)
    strict_arms = {c["arm"] for c in rec["cells"] if c["protocol"] == "strict"}
    assert strict_arms == {"real", "real+dup", "real+synth", "synth->real", "shuffled-synth->real",
                           "gen-data->real"}
    assert {c["optimizer_steps"][0] for c in rec["cells"]} == {2}
    assert [c["steps_x2"] for c in rec["convergence"]] == [4, 4]
    assert {h["frac"] for h in rec["headroom"]} == {0.25, 0.5}
    assert rec["verdict"].split(":")[0] in ("No benefit shown", "Synthetic pre-training helped",
                                            "Synthetic pre-training hurt")
    assert rec["machine"]["model"] and "fast_bf16" in rec["machine"]
    assert rec["cost"]["paper"]["jobs"] == 24 and rec["cost"]["total_hours"] > 0
    # seconds, not hours: two tiny generators can train in under 1.8 s, which rounds to 0.000 h
    assert rec["cost"]["strict"]["generators"] == 2 and rec["cost"]["strict"]["generator_seconds_median"] > 0
    by_frac = rec["cost"]["strict"]["by_frac"]  # the cost of a strict generator, per fraction
    assert list(by_frac) == ["0.25"] and by_frac["0.25"]["timed_whole"] == 2
    assert by_frac["0.25"]["seconds_median"] > 0 and len(by_frac["0.25"]["n_images"]) == 2
    text = (results / "t.json").read_text()
    assert not re.search(r'[" =]/(tmp|work|root|home)/', text)  # no machine paths
    md = (results / "t.md").read_text()
    assert rec["verdict"] in md and "Holm" in md and (results / "t.png").stat().st_size > 0
    for d in (0, 1):  # a generator per draw
        assert (work / "strict" / "generators" / f"frac0.25_draw{d}" / "denoiser").is_dir()

    # real / real+dup under strict are the paper bench's jobs, copied: byte-identical results
    for job in ("frac0.25_draw1_real_seed0", "frac0.25_draw1_real-plus-dup_seed0"):
        paper, strict = (work / p / "jobs" / job / "result.json" for p in ("paper", "strict"))
        assert paper.read_bytes() == strict.read_bytes()

    # a rerun trains nothing; --report-only rewrites the report without --data / --model
    before = {p: p.stat().st_mtime_ns for p in work.rglob("result.json")}
    assert sweep.main(argv) == 0
    assert sweep.main([*argv[4:], "--report-only"]) == 0
    assert {p: p.stat().st_mtime_ns for p in work.rglob("result.json")} == before
    with pytest.raises(SystemExit, match="no such file"):
        sweep.main([*argv[4:], "--report-only", "--work", str(tmp_path / "none")])
    with pytest.raises(SystemExit):  # a sweep without them is a usage error
        sweep.main(argv[4:])
    assert "--data and --model are required" in capsys.readouterr().err
    # other classifier settings in the same work folder: refused, naming the field
    with pytest.raises(SystemExit, match="classifier.lr"):
        sweep.main([*argv, "--set", "classifier.lr=0.5"])


def test_sweep_commands_are_recorded_in_order_without_the_job_share(tmp_path):
    sweep = load_script("limited_data")
    path = tmp_path / "command.txt"
    base = ["benchmarks/limited_data.py", "--data", "d", "--protocols", "paper"]
    sweep._record_command(path, [*base, "--job", "0/2"])
    sweep._record_command(path, [*base, "--job=1/2"])  # the other share: the same sweep
    sweep._record_command(path, [*base[:-1], "paper,strict", "--job", "0/2"])
    assert path.read_text().splitlines() == ["benchmarks/limited_data.py --data d --protocols paper",
                                             "benchmarks/limited_data.py --data d --protocols paper,strict"]

