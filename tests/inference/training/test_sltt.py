"""SLTT (arXiv:2302.14311): spatial-only online backpropagation for spiking networks."""

from __future__ import annotations

import copy

import pytest
import torch

from bayesnets.nn import SpikingMLP
from inference.training import SavedTensorMeter, bptt_step, sltt_loss, sltt_step


def _net(num_steps: int, temporal_grad: bool = True, **tkwargs) -> SpikingMLP:
    torch.manual_seed(0)
    # v_th = 0.5 and inputs of scale 2 make a good share of the hidden units fire.
    return SpikingMLP(4, [32, 16], 3, num_steps=num_steps, v_th=0.5, temporal_grad=temporal_grad).to(**tkwargs)


def _data(**tkwargs) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(20, 4, generator=g, dtype=torch.float64).to(**tkwargs)
    y = torch.randint(0, 3, (20,), generator=g).to(tkwargs["device"])
    return x, y


def _grads(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


def test_sltt_equals_bptt_at_one_time_step(tkwargs):
    x, y = _data(**tkwargs)
    net = _net(1, **tkwargs)
    other = copy.deepcopy(net)
    loss_sltt = sltt_step(net, x, y)
    loss_bptt = bptt_step(other, x, y)
    torch.testing.assert_close(loss_sltt, loss_bptt, rtol=0, atol=0)
    for a, b in zip(_grads(net), _grads(other)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert any(float(g.abs().sum()) > 0 for g in _grads(net))


def test_online_sltt_equals_the_offline_spatial_only_gradient(tkwargs):
    # Backpropagating each step at once (SLTT) gives the gradient of sum_t l_t with every
    # temporal path cut; BPTT through SLTT neurons (temporal_grad=False) computes the same
    # thing offline. With temporal paths kept (plain BPTT) the gradient differs.
    x, y = _data(**tkwargs)
    online = _net(6, **tkwargs)
    offline = copy.deepcopy(online)
    offline.neuron.temporal_grad = False
    full = copy.deepcopy(online)
    torch.testing.assert_close(sltt_step(online, x, y), bptt_step(offline, x, y))
    bptt_step(full, x, y)
    for a, b in zip(_grads(online), _grads(offline)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert not all(torch.allclose(a, b) for a, b in zip(_grads(online), _grads(full)))


def test_sltt_k_backpropagates_only_the_chosen_steps(tkwargs):
    x, y = _data(**tkwargs)
    net = _net(6, **tkwargs)
    manual = copy.deepcopy(net)
    manual.neuron.temporal_grad = False
    total = sltt_step(net, x, y, K=2, generator=torch.Generator().manual_seed(3))
    chosen = set(torch.randperm(6, generator=torch.Generator().manual_seed(3))[:2].tolist())
    state, loss, full_loss = None, 0.0, 0.0
    for t in range(6):
        out, state = manual.step(x, state)
        step_loss = sltt_loss(out, y) / 6
        full_loss = full_loss + step_loss.detach()
        if t in chosen:
            loss = loss + step_loss
    loss.backward()
    for a, b in zip(_grads(net), _grads(manual)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(total, full_loss)  # the reported loss covers all T steps
    with pytest.raises(ValueError, match=r"K must be in \[1, T = 6\]"):
        sltt_step(net, x, y, K=7)


def test_sltt_memory_does_not_grow_with_time_steps(tkwargs):
    # Peak bytes autograd holds for backward: SLTT frees each step's graph before the next, so
    # its peak is one step's graph for any T; BPTT keeps all T steps.
    x, y = _data(**tkwargs)
    peaks = {}
    for name, step in (("sltt", sltt_step), ("bptt", bptt_step)):
        for num_steps in (2, 8):
            with SavedTensorMeter() as meter:
                step(_net(num_steps, **tkwargs), x, y)
            peaks[name, num_steps] = meter.peak
            assert meter.current == 0  # every saved tensor was released again
    assert peaks["sltt", 2] == peaks["sltt", 8] > 0
    assert peaks["bptt", 8] > 3 * peaks["bptt", 2]  # the meter does see growth


def test_sltt_training_reduces_the_loss(tkwargs):
    # Two separable classes; 20 SLTT steps with Adam lower the training loss a lot (observed:
    # 0.68 -> 0.12); the check asks for a factor 3.
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 2, (64,), generator=g)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64) + 2.0 * (2 * y[:, None] - 1)
    x, y = x.to(**tkwargs), y.to(tkwargs["device"])
    torch.manual_seed(5)
    net = SpikingMLP(4, [32], 2, num_steps=4, v_th=0.5, temporal_grad=False).to(**tkwargs)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    losses = [float(sltt_step(net, x, y, opt)) for _ in range(20)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] / 3, losses


def test_step_model_protocol_is_checked(tkwargs):
    with pytest.raises(TypeError, match="must have a step"):
        sltt_step(torch.nn.Linear(2, 2).to(**tkwargs), torch.zeros(3, 2, **tkwargs), torch.zeros(3))
