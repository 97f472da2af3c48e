"""The training kit: epoch replay, checkpoint round trip, the damaged-checkpoint fallback."""

import pytest
import torch

from cxraug.core.errors import CxraugError
from cxraug.core.training import (
    BatchOrder,
    EpochReplay,
    TrainState,
    ema_model,
    read_checkpoint,
    save_checkpoint,
)


def test_batch_order_is_a_permutation_per_epoch_and_stateless():
    order = BatchOrder(5, seed=3)
    rows = order.rows(0, 10)
    assert sorted(rows[:5]) == sorted(rows[5:]) == list(range(5)) and list(rows[:5]) != list(rows[5:])
    assert list(BatchOrder(5, seed=3).rows(7, 3)) == list(rows[7:10])  # no history needed


@pytest.mark.parametrize("taken", [0, 1, 3])  # epoch start, mid-epoch, epoch end
def test_epoch_replay_restores_a_shuffling_loader_mid_epoch(taken):
    """A DataLoader shuffled by a generator that the loop also draws from: restoring the epoch
    start and the generator state continues exactly where the interrupted loop was."""
    def run(n_batches, restore_from=None):
        gen = torch.Generator().manual_seed(0)
        loader = torch.utils.data.DataLoader(torch.arange(9), batch_size=3, shuffle=True, generator=gen)
        order = EpochReplay(lambda: loader, gen)
        if restore_from is not None:
            start, k, now = restore_from
            order.restore(start, k)
            gen.set_state(now)
        out = []
        for _ in range(n_batches):
            out.append(order.next().tolist() + [int(torch.randint(100, (1,), generator=gen))])
        return out, (*order.state(), gen.get_state())

    full, _ = run(7)
    first, state = run(taken)
    assert state[1] == taken
    rest, _ = run(7 - taken, state)
    assert first + rest == full


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def _state(net, gen):
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    return TrainState(net, opt, ema=ema_model(net, 0.9), generators={"g": gen}, global_rng=True,
                      extra={"losses": []})


def _steps(state, gen, n):
    for _ in range(n):
        x = torch.randn(4, 3, generator=gen) + torch.rand(1)  # the global RNG too
        loss = state.model(x).pow(2).mean()
        state.opt.zero_grad()
        loss.backward()
        state.opt.step()
        state.ema.update_parameters(state.model)
        state.extra["losses"].append(loss.item())


def test_train_state_round_trip_and_damaged_fallback(tmp_path, capsys):
    gen = torch.Generator().manual_seed(1)
    full = _state(_net(), gen)
    torch.manual_seed(5)
    _steps(full, gen, 4)
    gen = torch.Generator().manual_seed(1)
    part = _state(_net(), gen)
    torch.manual_seed(5)
    for step in (1, 2):
        _steps(part, gen, 1)
        part.save(tmp_path, step, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001", "step_00000002"]
    (tmp_path / "step_00000002" / "optimizer.pt").write_bytes(b"")  # a kill mid-copy
    torch.manual_seed(123)
    gen = torch.Generator()
    resumed = _state(_net(), gen)
    assert resumed.resume(tmp_path) == 1
    assert "skipped damaged checkpoint step_00000002 (optimizer.pt" in capsys.readouterr().err
    _steps(resumed, gen, 3)
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(resumed.ema.module.state_dict().values(), full.ema.module.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.extra["losses"] == full.extra["losses"]


def test_every_checkpoint_damaged_is_one_error_and_a_foreign_one_does_not_load(tmp_path):
    gen = torch.Generator()
    state = _state(_net(), gen)
    state.save(tmp_path / "a", 1, keep=1)
    (tmp_path / "a" / "step_00000001" / "rng.safetensors").write_bytes(b"xx")
    with pytest.raises(CxraugError, match="no intact checkpoint.*rng.safetensors"):
        _state(_net(), gen).resume(tmp_path / "a")
    state.save(tmp_path / "b", 1, keep=1)
    other = TrainState(torch.nn.Linear(3, 2), torch.optim.AdamW(torch.nn.Linear(3, 2).parameters()),
                       ema=ema_model(torch.nn.Linear(3, 2), 0.9), generators={"g": gen},
                       global_rng=True, extra={"losses": []})
    with pytest.raises(CxraugError, match="does not fit the model being trained"):
        other.resume(tmp_path / "b")
    # the denoiser's format (no generators, a scheduler) has no rng file
    net = _net()
    opt = torch.optim.AdamW(net.parameters())
    save_checkpoint(tmp_path / "c", 1, net, ema_model(net, 0.9), opt,
                    torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), keep=1)
    assert sorted(read_checkpoint(tmp_path / "c" / "step_00000001")) == [
        "ema.safetensors", "model.safetensors", "optimizer.pt", "state.json"]
