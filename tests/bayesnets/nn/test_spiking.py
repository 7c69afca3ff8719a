"""LIF neurons with surrogate gradients and the spiking MLP (arXiv:2302.14311)."""

from __future__ import annotations

import warnings

import pytest
import torch

from bayesnets.nn import LIF, SLTTLIF, SpikingMLP
from bayesnets.nn.spiking import spike

#: The surrogate derivatives sigma'(x) the official code uses (spikingjelly Sigmoid with
#: alpha = 4, the official Rectangle of width 1, spikingjelly PiecewiseQuadratic alpha = 1).
DERIVATIVES = {
    "sigmoid": lambda x: 4 * torch.sigmoid(4 * x) * (1 - torch.sigmoid(4 * x)),
    "rectangle": lambda x: (x.abs() <= 0.5).to(x.dtype),
    "triangle": lambda x: (1 - x.abs()).clamp_min(0),
}


@pytest.mark.parametrize("surrogate", sorted(DERIVATIVES))
def test_spike_is_heaviside_forward_and_surrogate_backward(surrogate, tkwargs):
    x = torch.linspace(-2, 2, 81, **tkwargs).requires_grad_()
    s = spike(x, surrogate)
    assert torch.equal(s.detach(), (x >= 0).to(x.dtype))  # exactly 0/1, threshold inclusive
    (grad,) = torch.autograd.grad(s, x, torch.ones_like(s))
    torch.testing.assert_close(grad, DERIVATIVES[surrogate](x.detach()), rtol=1e-12, atol=1e-12)


def test_lif_dynamics_by_hand(tkwargs):
    # tau = 2 (decay 1/2), v_th = 1, constant current 0.6:
    # v = 0.6, 0.9, 1.05 -> spike, reset to 0.05; then 0.625, 0.9125, 1.05625 -> spike.
    lif = LIF(tau=2.0, v_th=1.0)
    current = torch.full((1,), 0.6, **tkwargs)
    v, spikes, potentials = None, [], []
    for _ in range(6):
        s, v = lif(current, v)
        spikes.append(float(s))
        potentials.append(float(v))
    assert spikes == [0, 0, 1, 0, 0, 1]
    assert potentials == pytest.approx([0.6, 0.9, 0.05, 0.625, 0.9125, 0.05625], abs=1e-12)


def test_sltt_neuron_cuts_the_temporal_path(tkwargs):
    c0 = torch.tensor([0.7], **tkwargs, requires_grad=True)
    c1 = torch.tensor([0.6], **tkwargs, requires_grad=True)
    for neuron, linked in ((LIF(), True), (SLTTLIF(), False)):
        _, v = neuron(c0)
        s1, _ = neuron(c1, v)
        g0, g1 = torch.autograd.grad(s1.sum(), (c0, c1), allow_unused=True)
        assert float(g1) > 0  # the spatial path is kept by both
        assert (g0 is not None and float(g0) != 0) == linked


def test_neuron_and_network_validate_arguments(tkwargs):
    with pytest.raises(ValueError, match="tau must be > 1"):
        LIF(tau=1.0)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        LIF(surrogate="erf")
    with pytest.raises(ValueError, match="v must have the shape of current"):
        LIF()(torch.zeros(2, 3, **tkwargs), torch.zeros(2, 4, **tkwargs))
    net = SpikingMLP(3, [8], 2).to(**tkwargs)
    with pytest.raises(ValueError, match=r"x must have shape \[N, 3\] or \[N, T, 3\]"):
        net(torch.zeros(4, 5, **tkwargs))


def test_spiking_mlp_averages_readouts_over_steps(tkwargs):
    torch.manual_seed(0)
    net = SpikingMLP(3, [16, 8], 2, num_steps=5).to(**tkwargs)
    x = torch.randn(7, 3, **tkwargs) * 3
    state, outs = None, []
    for _ in range(5):
        out, state = net.step(x, state)
        outs.append(out)
    torch.testing.assert_close(net(x), torch.stack(outs).mean(0))
    # A [N, T, D] sequence of the same input is the same computation.
    torch.testing.assert_close(net(x.unsqueeze(1).expand(7, 5, 3)), net(x))
    # Hidden units really spike (0/1 activity, some of each), so the test is not vacuous.
    with torch.no_grad():
        h, _ = net.neuron(net.layers[0](x))
    assert 0 < float(h.mean()) < 1 and set(h.unique().tolist()) <= {0.0, 1.0}


def test_in_bayesian_net_with_svi(fit_small_regression):
    net = SpikingMLP(2, [32], 1, num_steps=4, v_th=0.5)
    _, post, x, _ = fit_small_regression(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the surrogate spike vmaps over draws: no fallback
        pred = post.predict(x)
    assert pred.f.shape == (1, 16, 48, 1) and torch.isfinite(pred.f).all()
