"""benchmarks/vae_precision.py in its tiny mode: both precisions train through the real loop (the
perceptual term on), and the JSON holds the CPU, the ratios and no local paths. Never a timing."""

import json

import numpy as np
import pytest
import torch
from conftest import load_script

from cxraug.classify.model import Classifier


def _words(value):
    """Every word of every string in a JSON value (split at spaces and '=')."""
    if isinstance(value, dict):
        return [w for v in value.values() for w in _words(v)]
    if isinstance(value, list):
        return [w for v in value for w in _words(v)]
    return str(value).replace("=", " ").split() if isinstance(value, str) else []


def test_tiny_run_writes_both_precisions_and_the_cpu(kermany_fixture, tmp_path, one_thread, capsys):
    VP = load_script("vae_precision")
    torch.manual_seed(0)
    Classifier("resnet10t", ["Pneumonia"], 32).save_pretrained(tmp_path / "clf" / "model")
    out = tmp_path / "out" / "vae_precision.json"
    res = VP.main(["--data", str(kermany_fixture), "--tiny", "--steps", "2", "--n-eval", "4",
                   "--set", "vae.perceptual_weight=0.5", "--set", f"vae.perceptual_net={tmp_path / 'clf'}",
                   "--out", str(out)])
    saved = json.loads(out.read_text())
    page = out.with_suffix(".md").read_text()  # the results page, written beside the JSON
    assert f"{saved['bf16_over_fp32_steps_per_s']:.2f}x" in page and saved["cpu"]["model"] in page
    assert saved == json.loads(json.dumps(res))
    assert saved["recipe"] == "diffcxr-cpu128-v3.yaml" and saved["tiny"] and saved["steps"] == 2
    assert set(saved["cpu"]) >= {"model", "flags", "cores", "fast_bf16"}
    assert saved["vae"]["image_size"] == 32 and saved["vae"]["latent_channels"] == 8  # the v3 recipe's
    for p in ("fp32", "bf16"):
        r = saved[p]
        assert r["steps_per_s"] > 0 and np.isfinite(r["train_recon_loss_last50"])
        assert r["held_out"]["n"] >= 1 and np.isfinite(r["held_out"]["l1"]) and r["held_out"]["perceptual"] > 0
        assert r["train_perceptual_last50"] > 0
    assert saved["bf16_over_fp32_steps_per_s"] == pytest.approx(saved["bf16"]["steps_per_s"] / saved["fp32"]["steps_per_s"])
    assert saved["suggest"] in ("fp32", "bf16")
    # the same seed, other arithmetic: bf16's weights, and so its reconstructions, differ a little
    assert saved["bf16"]["held_out"]["l1"] != saved["fp32"]["held_out"]["l1"]
    assert saved["perceptual"]["arch"] == "resnet10t" and saved["perceptual"]["net"] == "clf"
    assert not [w for w in _words(saved) if w.startswith("/")]  # no absolute (local) paths
    assert "bf16 / fp32:" in capsys.readouterr().out


def test_a_wrong_data_folder_is_one_line(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vae_precision.py"), "--data",
                           str(tmp_path / "nope"), "--tiny", "--steps", "1", "--out", str(tmp_path / "o.json")],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "nope" in done.stderr
    assert not (tmp_path / "o.json").exists()
