"""benchmarks/gpu.py --tiny: every part of the GPU benchmark runs on the CPU and reports sane numbers."""

import json
from pathlib import Path

import pytest
import torch
from conftest import load_script

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.no_templates  # --tiny uses the paper's fixed prompts: no mined bank needed
def test_tiny_run_measures_every_part(tmp_path, capsys, one_thread):
    out = tmp_path / "gpu.json"
    work = tmp_path / "work"
    assert load_script("gpu").main(["--tiny", "--out", str(out), "--workdir", str(work)]) == 0
    text = out.read_text()
    res = json.loads(text)
    assert "wrote" in capsys.readouterr().out

    # the whole record: every section, nothing skipped or failed, no absolute paths
    for key in ("environment", "peak_matmul", "train", "components", "sample", "cli",
                "part_wall_s", "skipped", "wall_s"):
        assert key in res, key
    assert res["skipped"] == [] and "errors" not in res
    assert str(tmp_path) not in text and str(REPO) not in text and str(Path.home()) not in text
    assert res["environment"]["versions"]["torch"] == torch.__version__
    assert res["peak_matmul"]["tflops"] > 0

    # training: eager +/- checkpointing, then compiled, each with throughput, FLOPs and MFU
    variants = res["train"]["variants"]
    shapes = [(v["stage"], bool(v["compile"]), v["checkpointing"]) for v in variants]
    assert shapes == [(1, False, False), (2, False, False), (1, False, True), (2, False, True),
                      (1, True, False), (2, True, False)]
    for v in variants:
        assert v["status"] == "ok", v
        assert 1 <= v["batch"] <= 8 and v["samples_per_s"] > 0 and v["step_ms"] > 0
        assert v["flops_per_step"] > 0 and 0 < v["mfu"] < 10
    flops = {(v["stage"], v["batch"]): v["flops_per_step"] for v in variants}
    assert all(v["flops_per_step"] == flops[v["stage"], v["batch"]] for v in variants)
    stage1, stage2 = variants[0], variants[1]
    assert stage2["trainable_params_m"] < stage1["trainable_params_m"]  # the adapter alone trains

    # sampling: the pipeline against its FLOP ceiling and the two-pass baseline
    s = res["sample"]
    assert s["flops_per_image"] > 0 and s["ceiling_images_per_s"] > 0
    assert all(v > 0 for v in s["flops_per_image_by_part"].values())
    assert s["pipeline"]["images_per_s"] > 0 and s["two_pass_baseline"]["images_per_s"] > 0
    assert 0 < s["pipeline"]["fraction_of_flop_ceiling"] and s["speedup_vs_two_pass"] > 0
    assert s["text_encoder"] == "biomedclip"

    # the CLI path: train, resume with more steps, synth; all succeeded
    cli = res["cli"]
    assert cli["all_ok"] and [st["step"] for st in cli["steps"]] == ["train", "resume", "synth"]
    assert all(st["ok"] and st["wall_s"] > 0 for st in cli["steps"])
    assert cli["text_encoder"] == "biomedclip"
    first, resumed = cli["steps"][0]["train_loop_speed"], cli["steps"][1]["train_loop_speed"]
    assert first["stage1"]["step"] == 3 and first["stage2"]["step"] == 2
    assert resumed["stage1"]["step"] == 4 and resumed["stage2"]["step"] == 3
    assert cli["steps"][2]["images"] == 2
    assert cli["steps"][0]["command"].startswith("cxraug train --stage 2 --recipe <repo>/recipes/")


@pytest.mark.no_templates
@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA GPU")
def test_without_cuda_or_tiny_says_so(tmp_path, capsys):
    assert load_script("gpu").main(["--out", str(tmp_path / "gpu.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a CUDA GPU" in err and "--tiny" in err
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.no_templates
def test_tiny_without_out_writes_a_temporary_file_never_the_checkouts(tmp_path, capsys, one_thread):
    """A CPU run is not a GPU result: --tiny without --out leaves benchmarks/results/gpu.json alone."""
    import shutil
    import tempfile

    committed = REPO / "benchmarks" / "results" / "gpu.json"
    before = committed.read_bytes() if committed.exists() else None
    assert load_script("gpu").main(["--tiny", "--skip", "train,compile,sample,cli",
                                    "--workdir", str(tmp_path / "work")]) == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("wrote "))
    try:
        assert out.is_file() and out.parent.parent == Path(tempfile.gettempdir())
        assert json.loads(out.read_text())["peak_matmul"]["tflops"] > 0
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    assert (committed.read_bytes() if committed.exists() else None) == before
