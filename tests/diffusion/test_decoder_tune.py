"""Decoder tuning (cxraug train decoder): the decoder learns, the encoder and latents do not, it
resumes exactly, and what a user can get wrong is one line."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_config, train_tiny_run

from cxraug.cli.main import main
from cxraug.core import config as C
from cxraug.core.config import ConfigError
from cxraug.diffusion.config import DecoderTuneConfig, DiffCXRConfig
from cxraug.diffusion.decoder_tune import DecoderGANLoss, PatchDiscriminator, tune_decoder
from cxraug.diffusion.pipeline import DiffCXRPipeline
from cxraug.diffusion.stages import decoder_tuned_steps, train_run
from cxraug.models.autoencoder import LatentSpace


def _sets(*items):
    return [x for s in items for x in ("--set", s)]


TUNE = ["decoder.steps=4", "decoder.batch_size=4", "decoder.disc_start=2", "decoder.log_every=1",
        "decoder.checkpoint_every=2", "decoder.disc_channels=8", "decoder.disc_layers=2"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory)


def _weights(space, prefix):
    return {k: v.clone() for k, v in space.vae.state_dict().items() if k.startswith(prefix)}


def test_patch_discriminator_and_adaptive_weight():
    disc = PatchDiscriminator(8, 2)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert disc(x).shape == (2, 1, 6, 6)
    last = torch.nn.Parameter(torch.randn(1, 4, 3, 3))
    recon = torch.nn.functional.conv2d(torch.randn(2, 4, 32, 32), last, padding=1)
    loss, logs = DecoderGANLoss(last, adv_weight=0.5).decoder_loss(recon, x, disc, adversarial=True)
    assert torch.isfinite(loss) and logs["adv_w"] > 0 and set(logs) == {"rec", "adv", "adv_w"}
    d_loss, d_logs = DecoderGANLoss.disc_loss(recon, x, disc)
    assert d_loss.item() >= 0 and "logit_real" in d_logs


def test_the_discriminator_learns_to_tell_detail_poor_crops_from_real_ones():
    """Reconstructions that lack fine detail (here: blurred copies) must be told apart by the
    discriminator alone (the decoder frozen), through the loss object the tuning uses."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    disc = PatchDiscriminator(16, 3)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.9))
    gaps = []
    for _ in range(150):
        real = ndimage.gaussian_filter(rng.standard_normal((8, 32, 32)), (0, 2, 2)) * 4 \
            + 0.3 * rng.standard_normal((8, 32, 32))
        blurred = ndimage.gaussian_filter(real, (0, 1.5, 1.5))
        x, recon = (torch.from_numpy(a).float().clamp(-1, 1).unsqueeze(1) for a in (real, blurred))
        loss, logs = DecoderGANLoss.disc_loss(recon, x, disc)
        opt.zero_grad()
        loss.backward()
        opt.step()
        gaps.append(logs["logit_real"] - logs["logit_fake"])
    assert np.mean(gaps[-20:]) > 0.5, np.mean(gaps[-20:])


def _trained_gap(norm: str, contrast: float, steps: int = 100) -> float:
    """Mean logit gap (real - fake) over the last 20 of ``steps`` discriminator updates, fakes being
    the real crops with their greys compressed toward the middle by ``contrast``."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    disc = PatchDiscriminator(16, 3, norm)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.9))
    gaps = []
    for _ in range(steps):
        real = ndimage.gaussian_filter(rng.standard_normal((8, 32, 32)), (0, 2, 2)) * 4
        x = torch.from_numpy(real).float().clamp(-1, 1).unsqueeze(1)
        loss, logs = DecoderGANLoss.disc_loss(x * contrast, x, disc)
        opt.zero_grad()
        loss.backward()
        opt.step()
        gaps.append(logs["logit_real"] - logs["logit_fake"])
    return float(np.mean(gaps[-20:]))


def test_a_discriminator_without_batchnorm_learns_missing_contrast():
    """``norm="none"``: no BatchNorm layer, and the discriminator alone learns to tell crops whose
    greys are compressed toward the middle (x 0.7) from the real ones."""
    assert _trained_gap("none", 0.7) > 0.5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in PatchDiscriminator(8, 2, "none").modules())
    with pytest.raises(ValueError, match="norm"):
        PatchDiscriminator(8, 2, "layer")
    with pytest.raises(ConfigError, match="decoder.disc_norm"):
        C.load(DiffCXRConfig, None, ["decoder.disc_norm=group"])


def test_cli_tunes_the_decoder_only(tiny_run, tmp_path):
    _, run0, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(run0.root, run)
    before = LatentSpace.load(run / "vae")
    assert main(["train", "decoder", "--from", str(run), *_sets(*TUNE)]) == 0
    after = LatentSpace.load(run / "vae")
    for prefix in ("encoder.", "quant_conv."):  # the latent space itself is untouched
        for k, v in _weights(before, prefix).items():
            assert torch.equal(v, after.vae.state_dict()[k]), k
    assert any(not torch.equal(v, after.vae.state_dict()[k]) for k, v in _weights(before, "decoder.").items())
    assert (after.latents_mean, after.latents_std) == (before.latents_mean, before.latents_std)
    assert after.fingerprint() != before.fingerprint()
    meta = json.loads((run / "vae" / "cxraug_latent.json").read_text())
    assert meta["decoder_tune"]["steps"] == 4 and meta["train"]["steps"] == 3  # the VAE's own record kept
    assert "_name_or_path" not in json.loads((run / "vae" / "config.json").read_text())  # no local path
    logs = [json.loads(x) for x in (run / "metrics_decoder.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3, 4] and "adv" not in logs[1] and "adv" in logs[2]
    assert "decoder tuned 4 steps" in (run / "README.md").read_text()
    # the denoiser still samples through the tuned decoder
    img = DiffCXRPipeline.from_pretrained(run)(["No acute findings."], seeds=[1])
    assert img.shape == (1, 32, 32)
    # rerunning the same command trains nothing
    stamp = (run / "vae" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert main(["train", "decoder", "--from", str(run), *_sets(*TUNE)]) == 0
    assert (run / "vae" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("spectral", ["0", "0.1"])
def test_resumed_tuning_equals_one_pass(tiny_run, tmp_path, one_thread, spectral):
    _, run, _ = tiny_run
    cfg = C.from_dict(DecoderTuneConfig, C.apply_overrides(C.to_dict(DecoderTuneConfig()),
                                                           [s.split(".", 1)[1] for s in TUNE]
                                                           + [f"spectral_weight={spectral}"]))
    images = np.random.default_rng(0).integers(0, 255, (6, 32, 32), dtype=np.uint8)
    full = tune_decoder(LatentSpace.load(run.vae), images, cfg, tmp_path / "a", progress=False)
    logs = [json.loads(x) for x in (tmp_path / "decoder_log.jsonl").read_text().splitlines()]
    assert ("spectral" in logs[-1]) == (spectral != "0") and all(np.isfinite(r["rec"]) for r in logs)
    assert tune_decoder(LatentSpace.load(run.vae), images, cfg, tmp_path / "b", progress=False, max_steps=2) is None
    resumed = tune_decoder(LatentSpace.load(run.vae), images, cfg, tmp_path / "b", progress=False)
    for k, v in full.vae.state_dict().items():
        torch.testing.assert_close(resumed.vae.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_user_errors_are_one_line(tiny_run, tmp_path, capsys):
    _, run0, data = tiny_run
    assert main(["train", "decoder", "--from", str(run0.root)]) == 2
    err = capsys.readouterr().err
    assert "decoder.steps is 0" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="decoder.crop_size"):
        tiny_config(data, "decoder.steps=2", "decoder.crop_size=48")
    with pytest.raises(ConfigError, match="decoder.spectral_weight: must be a finite"):
        C.load(DiffCXRConfig, None, ["decoder.spectral_weight=-1"])
    with pytest.raises(ConfigError, match="decoder.spectral_weight: the spectral term needs"):
        tiny_config(data, "decoder.steps=2", "decoder.crop_size=16", "decoder.spectral_weight=0.1")
    with pytest.raises(ConfigError, match="keeps its decoder"):
        C.load(DiffCXRConfig, None, ["vae.pretrained=some/vae", "decoder.steps=2"])
    run = tmp_path / "run"
    shutil.copytree(run0.root, run)
    train_run(tiny_config(data, *TUNE), run, ["decoder"], progress=False)
    assert decoder_tuned_steps(type(run0)(run)) == 4
    capsys.readouterr()
    assert main(["train", "decoder", "--from", str(run), *_sets(*TUNE, "decoder.steps=3")]) == 2
    err = capsys.readouterr().err
    assert "more than decoder.steps=3" in err and len(err.strip().splitlines()) == 1
    # other settings on a tuned decoder would be silently ignored (or mixed into a resume): refused
    assert main(["train", "decoder", "--from", str(run), *_sets(*TUNE, "decoder.lr=0.5")]) == 2
    err = capsys.readouterr().err
    assert "decoder.lr=0.0001, not 0.5" in err and len(err.strip().splitlines()) == 1


def test_tuned_run_guards_and_interrupted_swap(tiny_run, tmp_path, capsys):
    """A tuned run: decoder.steps 0 (e.g. another recipe) would drop the tuning from its record,
    more steps without a checkpoint would restart from step 0 on the tuned decoder; both refused
    before anything is written. A swap interrupted between its renames is finished by the next run."""
    _, run0, data = tiny_run
    run = tmp_path / "run"
    shutil.copytree(run0.root, run)
    train_run(tiny_config(data, *TUNE), run, ["decoder"], progress=False)
    config = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", "denoiser", "--from", str(run)]) == 2  # which stage: one line
    assert "needs --stage 1 (U-ViT) or --stage 2" in capsys.readouterr().err
    assert main(["train", "denoiser", "--stage", "1", "--from", str(run), "--set", "decoder.steps=0"]) == 2
    err = capsys.readouterr().err
    assert "keep --set decoder.steps=4" in err and len(err.strip().splitlines()) == 1
    assert (run / "config.yaml").read_text() == config

    tuned = (run / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    shutil.copytree(run / "vae", run / ".vae-tuned")  # killed after the first rename
    (run / "vae").rename(run / ".vae-untuned")
    assert main(["train", "decoder", "--from", str(run), *_sets(*TUNE)]) == 0
    assert (run / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == tuned
    assert not (run / ".vae-tuned").exists() and not (run / ".vae-untuned").exists()

    shutil.rmtree(run / "checkpoints" / "decoder")
    capsys.readouterr()
    assert main(["train", "decoder", "--from", str(run), *_sets(*TUNE, "decoder.steps=6")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint to continue the 4-step decoder tuning" in err and len(err.strip().splitlines()) == 1
    assert (run / "config.yaml").read_text() == config
