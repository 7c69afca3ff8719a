"""The one optimisation loop against torch's own optimisers run by hand, and its parts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from inference.training.loop import Minibatches, lr_factor, make_schedule, optimize


def _problem(tkwargs: dict) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(**tkwargs)
    x = torch.randn(32, 3, **tkwargs)
    return net, x, x.sum(-1, keepdim=True).sin()


def _mse(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (net(x) - y).square().mean()


@pytest.mark.parametrize(("name", "cls", "options"), [
    ("adam", torch.optim.Adam, {}), ("sgd", torch.optim.SGD, {"momentum": 0.9}),
    ("adamw", torch.optim.AdamW, {"weight_decay": 0.1})])
def test_equals_torch_by_hand_with_clipping_and_a_schedule(tkwargs, name, cls, options):
    net, x, y = _problem(tkwargs)
    ref = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    result = optimize(net, lambda: _mse(net, x, y), 25, optimizer=name, lr=0.05, optimizer_options=options,
                      schedule="cosine", clip=0.5, progress=False)
    twin, _, _ = _problem(tkwargs)
    opt = cls(twin.parameters(), lr=0.05, **options)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=25)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = _mse(twin, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(twin.parameters()), 0.5)
        opt.step()
        sched.step()
        losses.append(loss.item())
    assert torch.equal(result.history["loss"], torch.tensor(losses, dtype=torch.float64))
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), twin.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), ref))
    assert all(p.grad is None for p in net.parameters())  # no stale gradients left behind


def test_lbfgs_runs_one_closure_step_per_loop_step(tkwargs):
    net, x, y = _problem(tkwargs)
    result = optimize(net, lambda: _mse(net, x, y), 3, optimizer="lbfgs", lr=0.5,
                      optimizer_options={"max_iter": 5, "line_search_fn": "strong_wolfe"}, progress=False)
    twin, _, _ = _problem(tkwargs)
    opt = torch.optim.LBFGS(twin.parameters(), lr=0.5, max_iter=5, line_search_fn="strong_wolfe")
    first = []
    for _ in range(3):
        def closure():
            opt.zero_grad()
            loss = _mse(twin, x, y)
            loss.backward()
            return loss
        first.append(float(opt.step(closure).detach()))
    assert result.history["loss"].tolist() == first
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), twin.parameters()))


def test_metrics_join_the_history_and_callback_sees_them(tkwargs):
    net, x, y = _problem(tkwargs)
    seen = []

    def loss_fn():
        loss = _mse(net, x, y)
        return loss, {"rmse": loss.detach().sqrt(), "twice": 2 * float(loss)}

    result = optimize(net, loss_fn, 4, progress=False, callback=lambda step, m: seen.append((step, m)))
    assert set(result.history) == {"loss", "rmse", "twice"}
    torch.testing.assert_close(result.history["rmse"], result.history["loss"].sqrt())
    assert [s for s, _ in seen] == [1, 2, 3, 4] and seen[-1][1]["twice"] == result.history["twice"][-1].item()


def test_minibatches_shuffle_per_epoch_drop_the_rest_and_resume():
    x = torch.arange(10.0).unsqueeze(-1)
    mb = Minibatches(x, batch_size=4, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    perm1, perm2 = torch.randperm(10, generator=gen), torch.randperm(10, generator=gen)
    got = [next(mb)[0].flatten() for _ in range(3)]
    # two batches per epoch (the last 2 rows of each permutation wait), then a new permutation
    for batch, want in zip(got, [perm1[:4], perm1[4:8], perm2[:4]]):
        assert torch.equal(batch, want.double().float())
    state = mb.state_dict()
    after = [next(mb)[0] for _ in range(3)]
    again = Minibatches(x, batch_size=4, generator=torch.Generator())
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(after, [next(again)[0] for _ in range(3)]))
    whole = Minibatches(x)
    assert next(whole)[0] is x  # the full data, unshuffled
    with pytest.raises(ValueError, match="batch_size"):
        Minibatches(x, batch_size=11)
    with pytest.raises(ValueError, match="first dimension"):
        Minibatches(x, torch.zeros(3))


def test_dataloader_restarts_at_the_end_of_an_epoch(tkwargs):
    net, x, y = _problem(tkwargs)
    loader = DataLoader(TensorDataset(x, y), batch_size=10)  # 4 batches per epoch, the last of 2 rows
    sizes = []

    def loss_fn(batch):
        sizes.append(batch[0].shape[0])
        return _mse(net, *batch)

    optimize(net, loss_fn, 9, batches=loader, progress=False)
    assert sizes == [10, 10, 10, 2, 10, 10, 10, 2, 10]
    with pytest.raises(ValueError, match="yielded nothing"):
        optimize(net, loss_fn, 2, batches=DataLoader(TensorDataset(x[:0], y[:0])), progress=False)


def test_non_finite_steps_stop_or_are_skipped_within_the_budget(tkwargs):
    net, x, y = _problem(tkwargs)

    def flaky(batch):
        return _mse(net, x, y) * (math.nan if batch == 3 else 1.0)

    with pytest.raises(FloatingPointError, match=r"step 3: lower lr \(now 0.001\), clip gradients"):
        optimize(net, flaky, 10, batches=lambda step: step, progress=False)
    before = [p.detach().clone() for p in net.parameters()]
    kept = []

    def watch(step, metrics):
        if step in (3, 4):
            kept.append([p.detach().clone() for p in net.parameters()])

    result = optimize(net, flaky, 10, batches=lambda step: step, skip_nonfinite=0.1, progress=False, callback=watch)
    assert result.skipped == 1 and math.isnan(result.history["loss"][3])
    assert int(result.history["loss"].isnan().sum()) == 1
    assert all(torch.equal(a, b) for a, b in zip(*kept))  # the skipped step left the parameters alone
    assert not all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    with pytest.raises(FloatingPointError, match="at most 5%"):
        optimize(net, flaky, 10, batches=lambda step: step, skip_nonfinite=0.05, progress=False)


def test_schedules_follow_their_formulas():
    p = [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD(p, lr=2.0)
    sched = make_schedule(opt, "warmup_cosine", 20, warmup_steps=4)
    rates = []
    for _ in range(20):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([2.0 * lr_factor(s, 20, 4) for s in range(20)])
    opt = torch.optim.SGD(p, lr=1.0)
    sched = make_schedule(opt, "exponential", 11, final_lr=1e-2)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2)
    assert make_schedule(opt, None, 5) is None and make_schedule(opt, "constant", 5) is None
    with pytest.raises(ValueError, match="schedule"):
        make_schedule(opt, "linear", 5)


def test_amp_is_off_on_the_cpu_and_bad_input_is_named(tkwargs):
    net, x, y = _problem(tkwargs)
    dtypes = []

    def loss_fn():
        out = net(x)
        dtypes.append(out.dtype)
        return (out - y).square().mean()

    optimize(net, loss_fn, 1, amp=True, progress=False)
    assert dtypes == [tkwargs["dtype"]] or tkwargs["device"].type == "cuda"
    with pytest.raises(ValueError, match="num_steps"):
        optimize(net, loss_fn, 0, progress=False)
    with pytest.raises(TypeError, match="scalar tensor"):
        optimize(net, lambda: net(x), 1, progress=False)
    with pytest.raises(ValueError, match="no parameters"):
        optimize(net, loss_fn, 1, params=[], progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        optimize(net, loss_fn, 1, optimizer="adamax", progress=False)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        optimize({"a": 3}, loss_fn, 1, progress=False)
