"""benchmarks/decoder_loss_balance.py on a tiny run: every term's value and gradient norm at the
decoder's last layer, nothing trained, a result without machine paths."""

import json

import torch
from conftest import load_script, train_tiny_run

from cxraug.models.autoencoder import LatentSpace

bal = load_script("decoder_loss_balance")


def test_gradient_norms_of_a_tiny_runs_terms(tmp_path_factory, tmp_path):
    _, run, _ = train_tiny_run(tmp_path_factory)
    before = {k: v.clone() for k, v in LatentSpace.load(run.vae).vae.state_dict().items()}
    assert bal.main(["--model", str(run.root), "--batches", "2", "--out-dir", str(tmp_path)]) == 0
    rec = json.loads((tmp_path / "decoder_loss_balance.json").read_text())
    assert set(rec["terms"]) == {"l1", "spectral"}  # the tiny recipe has no perceptual term
    assert "spectral_weight_matching_perceptual" not in rec
    for t in rec["terms"].values():
        assert t["value"] > 0 and t["grad_norm"] > 0
    assert str(tmp_path) not in json.dumps(rec) and rec["vae"] == "vae"
    after = LatentSpace.load(run.vae).vae.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # nothing trained or saved
