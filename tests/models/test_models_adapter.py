"""Disease adapter (DKIM): exact identity at init, only the adapter trains, save/load."""

import pytest
import torch

from cxraug.core.errors import WeightsError
from cxraug.models.adapter import ControlledUViT, DiseaseAdapter
from cxraug.models.uvit import PRESETS, UViT

TINY = {**PRESETS["tiny"], "depth": 4}  # 2 in-blocks, so skip residuals are a real list


def inputs(batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    ctx = torch.randn(batch, 4, 16, generator=g)
    hint = torch.randn(batch, 4, 16, generator=g)
    return x, t, ctx, hint


def controlled(**over) -> ControlledUViT:
    torch.manual_seed(0)
    base = UViT(**{**TINY, **over})
    return ControlledUViT(base, DiseaseAdapter.from_base(base))


def train_step(model: ControlledUViT, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    x, t, ctx, hint = inputs(seed=1)
    model.train()
    loss = torch.nn.functional.mse_loss(model(x, t, ctx, hint), torch.randn_like(x))
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.eval()


@pytest.mark.parametrize("over", [{}, {"time_mlp": True, "learned_pos_embed": False}])
def test_equals_base_exactly_at_init(over):
    model = controlled(**over)
    x, t, ctx, hint = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, ctx, hint), model.base(x, t, ctx))
    # the copy really holds the base weights (not just zero outputs)
    assert torch.equal(model.adapter.embed.pos_embed, model.base.embed.pos_embed)
    assert torch.equal(model.adapter.in_blocks[1].block.ff.net[2].weight,
                       model.base.in_blocks[1].block.ff.net[2].weight)


def test_base_is_frozen_and_stays_in_eval():
    model = controlled()
    assert not any(p.requires_grad for p in model.base.parameters())
    assert all(p.requires_grad for p in model.adapter.parameters())
    model.train()
    assert model.adapter.training and not model.base.training


def test_one_step_moves_output_but_not_base():
    model = controlled()
    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    x, t, ctx, hint = inputs()
    with torch.no_grad():
        before = model(x, t, ctx, hint)
    train_step(model)
    assert all(torch.equal(v, base_before[k]) for k, v in model.base.state_dict().items())
    assert all(p.grad is None for p in model.base.parameters())
    assert model.adapter.mid_zero.weight.abs().sum() > 0
    with torch.no_grad():
        after = model(x, t, ctx, hint)
        assert not torch.allclose(after, before)
    # the hint matters once the zero layers are non-zero and give it a gradient (step 2)
    train_step(model)
    with torch.no_grad():
        assert not torch.equal(model(x, t, ctx, hint), model(x, t, ctx, torch.zeros_like(hint)))


def test_save_load_round_trip(tmp_path):
    model = controlled()
    train_step(model)
    train_step(model)
    model.base.save_pretrained(tmp_path / "base")
    model.adapter.save_pretrained(tmp_path / "adapter", meta={"stage": 2})
    loaded = ControlledUViT.load(tmp_path / "base", tmp_path / "adapter").eval()
    x, t, ctx, hint = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, ctx, hint), loaded(x, t, ctx, hint))
    assert not any(p.requires_grad for p in loaded.base.parameters())


def test_adapter_must_fit_base():
    torch.manual_seed(0)
    other = DiseaseAdapter(**{**TINY, "width": 64})
    with pytest.raises(WeightsError, match="width=64"):
        ControlledUViT(UViT(**TINY), other)


def test_hint_shape_checked():
    model = controlled()
    x, t, ctx, hint = inputs()
    with pytest.raises(ValueError, match="hint has shape"):
        model(x, t, ctx, hint[:, :2])


def test_paper_adapter_size():
    base = UViT(**PRESETS["paper"])
    adapter = DiseaseAdapter.from_base(base)
    assert len(adapter.skip_zero) == 8
    assert sum(p.numel() for p in adapter.parameters()) == 31_688_704
