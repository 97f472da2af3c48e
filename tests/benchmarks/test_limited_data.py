"""benchmarks/limited_data.py, the sweep of record: paper and strict protocol with a tiny trained
generator, the generator-free jobs reused (not retrained) under strict, the report with the
machine, and a rerun that resumes without training anything and refuses other settings."""

import json

import pytest
from conftest import load_script, train_tiny_run

TINY_BENCH = ["--set", "image_size=16", "--set", "min_positive=1", "--set", "n_boot=20",
              "--set", "classifier.arch=resnet10t", "--set", "classifier.max_epochs=1"]


@pytest.mark.no_templates
def test_sweep_both_protocols_then_resume(tmp_path_factory, tmp_path, nih_fixture, one_thread, capsys):
    _, run, root = train_tiny_run(tmp_path_factory)
    work, results = tmp_path / "work", tmp_path / "results"
    argv = ["--data", str(root), "--model", str(run.root), "--test-data", str(nih_fixture),
            "--fracs", "0.5,1.0", "--strict-fracs", "0.5", "--seeds", "1", "--n-synth", "4",
            "--strict-generator-set", "train.steps=2", "--strict-generator-set", "adapter.steps=1",
            "--work", str(work), "--out-dir", str(results), "--name", "t", *TINY_BENCH]
    assert load_script("limited_data").main(argv) == 0

    rec = json.loads((results / "t.json").read_text())
    assert set(rec["protocols"]) == {"paper", "strict"}
    strict_arms = {c["arm"] for c in rec["cells"] if c["protocol"] == "strict"}
    assert strict_arms == {"real", "real+dup", "real+synth", "synth->real", "gen-data->real"}
    assert {c["frac"] for c in rec["cells"] if c["protocol"] == "paper"} == {0.5, 1.0}
    gens = rec["protocols"]["strict"]["generator"]["generators"]
    assert gens["0.5"]["real_frac"] == 0.5 and gens["0.5"]["images"] > 0
    assert rec["protocols"]["strict"]["bench_command"].startswith("benchmarks/limited_data.py")
    assert rec["machine"]["model"] and "fast_bf16" in rec["machine"]
    assert rec["strict_generator_overrides"] == ["train.steps=2", "adapter.steps=1"]
    assert str(tmp_path) not in (results / "t.json").read_text()  # no machine paths
    assert (results / "t.png").stat().st_size > 0 and "| 50% | strict |" in (results / "t.md").read_text()

    # real / real+dup under strict are the paper run's jobs, copied: byte-identical results
    for job in ("frac0.5_real_seed0", "frac0.5_real-plus-dup_seed0"):
        paper, strict = (work / p / "jobs" / job / "result.json" for p in ("paper", "strict"))
        assert paper.read_bytes() == strict.read_bytes()
    assert (work / "strict" / "generators" / "frac0.5" / "denoiser").is_dir()

    # a rerun trains nothing: every job's result stays as it was
    before = {p: p.stat().st_mtime_ns for p in work.rglob("result.json")}
    capsys.readouterr()
    assert load_script("limited_data").main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in work.rglob("result.json")} == before

    # --report-only recomputes the statistics from the finished jobs and trains nothing
    strict_results = work / "strict" / "results.json"
    old = json.loads(strict_results.read_text())
    for c in old["cells"]:
        c.pop("diff_vs_dup_mean", None)
    strict_results.write_text(json.dumps(old))
    gen_config = work / "strict" / "generators" / "frac0.5" / "config.yaml"
    kept = {p: p.stat().st_mtime_ns for p in [*work.rglob("result.json"), gen_config]}
    report_argv = [*argv[4:], "--report-only"]  # --data / --model are not needed to report
    assert load_script("limited_data").main(report_argv) == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    rec = json.loads((results / "t.json").read_text())
    synth = next(c for c in rec["cells"] if c["protocol"] == "strict" and c["arm"] == "real+synth")
    assert synth["diff_vs_dup_mean"] is not None and "--report-only" in rec["report_command"]
    assert "--report-only" not in rec["command"]
    with pytest.raises(SystemExit, match="results.json: no such file"):
        load_script("limited_data").main([*report_argv, "--work", str(tmp_path / "none")])
    with pytest.raises(SystemExit):  # a sweep without them is a usage error
        load_script("limited_data").main(argv[4:])
    assert "--data and --model are required" in capsys.readouterr().err

    # other classifier settings in the same work folder: refused, naming the field
    with pytest.raises(SystemExit, match="classifier.lr"):
        load_script("limited_data").main([*argv, "--set", "classifier.lr=0.5"])
