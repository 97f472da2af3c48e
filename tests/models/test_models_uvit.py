"""U-ViT denoiser: shapes, training, save/load, batch independence, skip residuals."""

import pytest
import torch

from cxraug.core.artifacts import load_component
from cxraug.models.uvit import PRESETS, UViT

TINY = PRESETS["tiny"]  # width 32, depth 2, heads 2, 8x8 latents, K=4 context tokens of width 16


def inputs(batch: int, k: int = TINY["num_context_tokens"], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    ctx = torch.randn(batch, k, TINY["context_dim"], generator=g)
    return x, t, ctx


def tiny(**over) -> UViT:
    torch.manual_seed(0)
    return UViT(**{**TINY, **over}).eval()


@pytest.mark.parametrize("over", [{}, {"time_mlp": True}, {"learned_pos_embed": False},
                                  {"final_conv": False}, {"depth": 4}])
def test_forward_shape(over):
    model = tiny(**over)
    x, t, ctx = inputs(3)
    assert model(x, t, ctx).shape == x.shape


@pytest.mark.parametrize("t", [7, 7.5, torch.tensor(7), torch.tensor([1, 2, 3]),
                               torch.tensor([0.5, 10.0, 999.0])])
def test_timestep_forms(t):
    x, _, ctx = inputs(3)
    assert tiny()(x, t, ctx).shape == x.shape


def test_scalar_timestep_equals_broadcast():
    model = tiny()
    x, _, ctx = inputs(3)
    assert torch.equal(model(x, 42, ctx), model(x, torch.full((3,), 42), ctx))


def test_timestep_changes_output():
    model = tiny()
    x, _, ctx = inputs(2)
    assert not torch.allclose(model(x, 1, ctx), model(x, 900, ctx))


@pytest.mark.parametrize("k", [32, 77, 128])
def test_context_token_count(k):
    model = tiny(num_context_tokens=k)
    x, t, ctx = inputs(2, k=k)
    assert model(x, t, ctx).shape == x.shape
    assert model.embed.pos_embed.shape[1] == 1 + k + 16
    with pytest.raises(ValueError, match="context has shape"):
        model(x, t, ctx[:, :-1])


def test_wrong_latent_size_is_rejected():
    _, t, ctx = inputs(2)
    with pytest.raises(ValueError, match="latent is 16x16"):
        tiny()(torch.randn(2, 4, 16, 16), t, ctx)


def test_two_training_steps_change_params():
    model = tiny(gradient_checkpointing=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, t, ctx = inputs(4)
    for _ in range(2):
        loss = torch.nn.functional.mse_loss(model(x, t, ctx), torch.randn_like(x))
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
    assert torch.isfinite(loss)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)


def test_gradient_checkpointing_gives_same_gradients():
    x, t, ctx = inputs(2)
    grads = []
    for ckpt in (False, True):
        model = tiny(gradient_checkpointing=ckpt).train()
        model(x, t, ctx).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_save_load_round_trip(tmp_path):
    model = tiny(time_mlp=True)
    with torch.no_grad():  # make sure non-default weights survive, final conv included
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "uvit", meta={"latent_scale": 0.18215})
    loaded = UViT.from_pretrained(tmp_path / "uvit").eval()
    assert loaded.args == model.args and loaded.meta == {"latent_scale": 0.18215}
    assert isinstance(load_component(tmp_path / "uvit"), UViT)
    x, t, ctx = inputs(2)
    with torch.no_grad():
        assert torch.equal(model(x, t, ctx), loaded(x, t, ctx))


def test_output_independent_of_batch_composition():
    model = tiny()
    x, t, ctx = inputs(4)
    with torch.no_grad():
        batch = model(x, t, ctx)
        for i in range(4):
            alone = model(x[i:i + 1], t[i:i + 1], ctx[i:i + 1])
            torch.testing.assert_close(batch[i:i + 1], alone, atol=1e-5, rtol=0)


def test_zero_residuals_change_nothing():
    model = tiny(depth=4)
    x, t, ctx = inputs(2)
    L = 1 + TINY["num_context_tokens"] + 16
    zeros = [torch.zeros(2, L, 32) for _ in model.in_blocks]
    with torch.no_grad():
        ref = model(x, t, ctx)
        assert torch.equal(model(x, t, ctx, skip_residuals=zeros), ref)
        assert torch.equal(model(x, t, ctx, skip_residuals=zeros, mid_residual=zeros[0]), ref)
        assert not torch.allclose(model(x, t, ctx, mid_residual=torch.ones(2, L, 32)), ref)
    with pytest.raises(ValueError, match="skip_residuals"):
        model(x, t, ctx, skip_residuals=zeros[:1])


def test_paper_config_size():
    model = UViT(**PRESETS["paper"])
    assert (len(model.in_blocks), len(model.out_blocks)) == (8, 8)
    assert sum(p.numel() for p in model.parameters()) == 58_345_636  # "about 58M" in the paper


def test_odd_depth_is_rejected():
    with pytest.raises(ValueError, match="even"):
        UViT(**{**TINY, "depth": 3})
