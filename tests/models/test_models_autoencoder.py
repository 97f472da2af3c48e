"""Latent space: tiny single-channel VAE, the pretrained-folder path, and the moment cache."""

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from cxraug.core.errors import WeightsError
from cxraug.core.progress import read_metrics
from cxraug.models.autoencoder import META_NAME, LatentSpace, cache_moments, load_pretrained_vae
from cxraug.models.config import VAEConfig
from cxraug.models.vae_train import build_vae, train_vae

TINY = {"image_size": 32, "block_out_channels": [8, 16], "steps": 2, "batch_size": 4, "lr": 1e-3,
        "scale_samples": 8}


def _x(n=2, size=32, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_tiny_vae_shapes_and_range():
    space = build_vae(VAEConfig(**TINY)).freeze()
    assert (space.latent_channels, space.downsample, space.latent_shape) == (4, 2, (4, 16, 16))
    with torch.no_grad():
        moments = space.encode_moments(_x())
        z = space.sample(moments, torch.Generator().manual_seed(0))
        y = space.decode(z)
    assert moments.shape == (2, 8, 16, 16) and z.shape == (2, 4, 16, 16)
    assert y.shape == (2, 1, 32, 32) and y.min() >= -1 and y.max() <= 1
    # the same generator gives the same draw; a different one a different draw
    z2 = space.sample(moments, torch.Generator().manual_seed(0))
    z3 = space.sample(moments, torch.Generator().manual_seed(1))
    assert torch.equal(z, z2) and not torch.equal(z, z3)
    with pytest.raises(ValueError, match=r"\[B, 1, 32, 32\]"):
        space.encode_moments(_x(size=16))


def test_train_two_steps_changes_weights_and_round_trips(images, tmp_path):
    before = {k: v.clone() for k, v in build_vae(VAEConfig(**TINY)).vae.state_dict().items()}
    space = train_vae(images, VAEConfig(**TINY), tmp_path / "vae", progress=False)
    after = space.vae.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    # per-channel standardisation (the default): one mean and std per latent channel
    assert space.scale_factor == 1.0 and len(space.latents_mean) == len(space.latents_std) == 4
    assert all(np.isfinite(space.latents_std)) and min(space.latents_std) > 0

    assert (tmp_path / "vae" / "config.json").is_file()
    assert (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    meta = json.loads((tmp_path / "vae" / META_NAME).read_text())
    assert meta["latent_shape"] == [4, 16, 16] and meta["pixel_range"] == [-1.0, 1.0]
    assert meta["scale_factor"] == pytest.approx(space.scale_factor)
    assert meta["train"]["steps"] == 2
    log = read_metrics(tmp_path / "vae" / "train_log.jsonl")  # every 50 steps and the last
    assert [r["step"] for r in log] == [2] and set(log[0]) == {"step", "recon_loss"}

    loaded = LatentSpace.load(tmp_path / "vae")
    assert loaded.scale_factor == pytest.approx(space.scale_factor)
    assert loaded.latents_mean == pytest.approx(space.latents_mean)
    assert loaded.latents_std == pytest.approx(space.latents_std)
    x = _x()
    with torch.no_grad():
        m1, m2 = space.encode_moments(x), loaded.encode_moments(x)
        assert torch.equal(m1, m2)
        assert torch.equal(space.decode(space.mode(m1)), loaded.decode(loaded.mode(m2)))


def test_latent_normalisation_standardises_channels_and_inverts(images):
    """Per channel: normalised latents of the fitting images have mean ~0 and std ~1 in every
    channel (a global scale cannot do that when channels differ), and denormalise inverts it."""
    from cxraug.models.vae_train import _UInt8Images, set_latent_stats

    space = build_vae(VAEConfig(**TINY)).freeze()
    data = _UInt8Images(images)
    with torch.no_grad():
        set_latent_stats(space, data, "channel", len(images), 4, torch.Generator().manual_seed(0))
        z = space.sample(space.encode_moments(torch.stack([data[i] for i in range(len(images))])),
                         torch.Generator().manual_seed(0))
        # a fresh posterior draw: equal to the fitted statistics up to sampling error
        assert z.mean((0, 2, 3)).abs().max() < 0.1 and (z.std((0, 2, 3)) - 1).abs().max() < 0.1
        raw = torch.randn(2, 4, 16, 16)
        assert torch.allclose(space.denormalise(space.normalise(raw)), raw, atol=1e-5)
        set_latent_stats(space, data, "global", len(images), 4, torch.Generator().manual_seed(0))
        assert space.latents_mean is None and space.scale_factor != 1.0
    with pytest.raises(Exception, match="latent_norm"):
        VAEConfig(**TINY, latent_norm="minmax").validate()


def test_cached_moments_equal_direct_encode(images, tmp_path):
    space = build_vae(VAEConfig(**TINY)).freeze()
    path = tmp_path / "moments.npy"
    cached = cache_moments(space, images, path, key="k1", batch_size=4, dtype="float32",
                           progress=False)
    assert cached.shape == (10, 8, 16, 16)
    from cxraug.data.transforms import uint8_to_model
    with torch.no_grad():
        direct = space.encode_moments(uint8_to_model(images)).numpy()
    np.testing.assert_allclose(cached, direct, atol=1e-5)
    # an iterable of batches gives the same result
    batches = cache_moments(space, (images[i:i + 3] for i in range(0, 10, 3)), tmp_path / "b.npy",
                            key="k1", dtype="float32", progress=False)
    np.testing.assert_allclose(batches, direct, atol=1e-5)
    # same key: reused without re-encoding; new key: rebuilt
    mtime = path.stat().st_mtime_ns
    cache_moments(space, images, path, key="k1", dtype="float32", progress=False)
    assert path.stat().st_mtime_ns == mtime
    cache_moments(space, images[:5], path, key="k2", dtype="float32", progress=False)
    assert np.load(path).shape[0] == 5


def test_missing_pretrained_folder_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="folder not found"):
        load_pretrained_vae(str(tmp_path / "no-such-vae"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="pass that folder"):
        load_pretrained_vae(str(tmp_path / "empty"))


def test_pretrained_rgb_vae_from_local_folder(tmp_path):
    torch.manual_seed(0)
    rgb = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
                        latent_channels=4)
    rgb.save_pretrained(tmp_path / "sd" / "vae")
    space = load_pretrained_vae(str(tmp_path / "sd"), subfolder="vae", image_size=32)
    assert space.rgb and space.scale_factor == pytest.approx(0.18215)
    assert not any(p.requires_grad for p in space.parameters())
    x = _x()
    with torch.no_grad():
        moments = space.encode_moments(x)
        y = space.decode(space.mode(moments))
        # the boundary is exactly "repeat gray to RGB": same as encoding the 3-channel image
        expected = rgb.encode(x.repeat(1, 3, 1, 1)).latent_dist.parameters
    assert torch.allclose(moments, expected, atol=1e-6)
    assert y.shape == (2, 1, 32, 32) and -1 <= y.min() and y.max() <= 1
    space.save(tmp_path / "copy")
    again = LatentSpace.load(tmp_path / "copy")
    with torch.no_grad():
        assert torch.equal(again.encode_moments(x), moments)


# ---------------------------------------------------------------- exact resume after a kill

RESUME = {**TINY, "steps": 7, "crop_size": 16}  # 10 images of batch 4: 2 batches per epoch


def _vae_state(space):
    return {k: v.clone() for k, v in space.vae.state_dict().items()}


@pytest.mark.parametrize("stop", [3, 4])  # mid-epoch, and at an epoch's end
def test_killed_vae_training_resumes_exactly(images, tmp_path, stop, one_thread):
    """Train 7 steps in one go; and 'killed' after ``stop`` steps (its checkpoint written), then
    rerun as a fresh call from that checkpoint: the same weights, latent statistics and log."""
    cfg = VAEConfig(**RESUME)
    full = train_vae(images, cfg, tmp_path / "a", progress=False, checkpoints=tmp_path / "ca",
                     checkpoint_every=stop)
    assert train_vae(images, cfg, tmp_path / "b", progress=False, checkpoints=tmp_path / "cb",
                     checkpoint_every=stop, max_steps=stop) is None
    assert sorted(p.name for p in (tmp_path / "cb").iterdir()) == [f"step_{stop:08d}"]
    torch.manual_seed(1234)  # a fresh process's global RNG is not the killed one's
    resumed = train_vae(images, cfg, tmp_path / "b", progress=False, checkpoints=tmp_path / "cb",
                        checkpoint_every=stop)
    ref = _vae_state(full)
    for k, v in _vae_state(resumed).items():
        assert torch.equal(v, ref[k]), k
    assert (resumed.latents_mean, resumed.latents_std) == (full.latents_mean, full.latents_std)
    assert read_metrics(tmp_path / "b" / "train_log.jsonl") == read_metrics(tmp_path / "a" / "train_log.jsonl")
    meta = json.loads((tmp_path / "b" / META_NAME).read_text())["train"]
    assert meta == json.loads((tmp_path / "a" / META_NAME).read_text())["train"]
    # without checkpoints it is the same training (the kit only adds the saving)
    plain = train_vae(images, cfg, progress=False)
    assert all(torch.equal(v, ref[k]) for k, v in _vae_state(plain).items())


def test_vae_resume_skips_a_damaged_checkpoint(images, tmp_path, capsys, one_thread):
    cfg = VAEConfig(**RESUME)
    full = train_vae(images, cfg, progress=False)
    train_vae(images, cfg, progress=False, checkpoints=tmp_path / "c", checkpoint_every=2, max_steps=4)
    rng = tmp_path / "c" / "step_00000004" / "rng.safetensors"
    rng.write_bytes(rng.read_bytes()[:20])
    resumed = train_vae(images, cfg, progress=False, checkpoints=tmp_path / "c", checkpoint_every=2)
    err = capsys.readouterr().err
    assert "skipped damaged checkpoint step_00000004 (rng.safetensors" in err
    assert "resuming from step_00000002" in err
    ref = _vae_state(full)
    assert all(torch.equal(v, ref[k]) for k, v in _vae_state(resumed).items())
