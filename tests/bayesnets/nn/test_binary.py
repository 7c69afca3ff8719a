"""BiPer binary layers (arXiv:2404.01278): periodic binarization, surrogates, schedule, QE."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from scenarios import z_critical
from torch import nn

from bayesnets.nn import BiPerConv2d, BiPerLinear, TwoStageSchedule, quantization_error, set_stage

#: Limit of the quantization error for N(0, 1) latent weights as freq grows (papers_b.md, P20).
QE_LIMIT = 0.5 - 4.0 / math.pi**2


@pytest.mark.parametrize("make", [lambda: BiPerLinear(7, 5), lambda: BiPerConv2d(3, 4, 3)], ids=["linear", "conv"])
def test_stage2_weights_are_binary_with_sine_gradient(make, tkwargs):
    layer = make().to(**tkwargs)
    layer.stage = 2
    with torch.no_grad():
        layer.weight.normal_()  # latent weights spread over many periods of the wave
    b = layer.binary_weight()
    assert b.shape == layer.weight.shape
    assert bool(((b == 1) | (b == -1)).all())
    torch.testing.assert_close(b, torch.sign(torch.sin(layer.freq * layer.weight)).detach(), rtol=0, atol=0)
    g = torch.randn_like(b)
    b.backward(g)
    torch.testing.assert_close(layer.weight.grad, layer.freq * torch.cos(layer.freq * layer.weight.detach()) * g)


def test_stage1_uses_the_sine_weights(tkwargs):
    layer = BiPerLinear(7, 5, freq=3.0).to(**tkwargs)
    torch.testing.assert_close(layer.binary_weight(), torch.sin(3.0 * layer.weight))


def test_linear_forward_and_activation_surrogate(tkwargs):
    layer = BiPerLinear(6, 4, stage=2).to(**tkwargs).eval()  # eval: no std rescaling of activations
    with torch.no_grad():
        layer.alpha.uniform_(0.5, 1.5)
    x = (1.5 * torch.randn(10, 6, **tkwargs)).requires_grad_()
    y = layer(x)
    bw = torch.sign(torch.sin(layer.freq * layer.weight)).detach()
    bx = torch.where(x >= 0, 1.0, -1.0).to(x.dtype).detach()
    torch.testing.assert_close(y, (bx @ bw.T + layer.bias) * layer.alpha)
    g = torch.randn_like(y)
    y.backward(g)
    surrogate = (2 - 2 * x.detach().abs()).clamp_min(0)  # ApproxSign: zero outside |x| < 1
    torch.testing.assert_close(x.grad, ((g * layer.alpha) @ bw) * surrogate)
    assert bool((x.grad[x.detach().abs() >= 1] == 0).all())


def test_training_rescales_activations_only_in_the_surrogate(tkwargs):
    layer = BiPerLinear(6, 4, stage=2).to(**tkwargs)
    x = 5.0 * torch.randn(10, 6, **tkwargs)
    out_train = layer(x)
    layer.eval()
    torch.testing.assert_close(layer(x), out_train)  # the sign does not see the scale
    layer.train()
    x = x.requires_grad_()
    g = torch.randn(10, 4, **tkwargs)
    layer(x).backward(g)
    # Reference: sign forward, and as backward the derivative of ApproxSign's polynomial
    # q(a) = 2a - a|a| on |a| < 1 (constant outside), i.e. max(0, 2 - 2|a|), applied to
    # each row divided by its standard deviation (differentiated through, as in the paper).
    xr = x.detach().clone().requires_grad_()
    a = xr / torch.sqrt(xr.var(-1, keepdim=True) + 1e-5)
    q = torch.where(a.abs() < 1, 2 * a - a * a.abs(), torch.sign(a))
    bx = torch.where(a >= 0, 1.0, -1.0).to(a.dtype).detach() + (q - q.detach())
    bw = torch.sign(torch.sin(layer.freq * layer.weight)).detach()
    ((bx @ bw.T + layer.bias.detach()) * layer.alpha.detach()).backward(g)
    torch.testing.assert_close(x.grad, xr.grad)


@pytest.mark.parametrize("stage", [1, 2])
def test_gradients_vectorise_over_weight_draws(stage, tkwargs):
    # torch.func over draws of the layer's parameters (as BayesianNet's engines do), in
    # training mode (activation scaling on): equals one plain autograd call per draw.
    layer = BiPerLinear(6, 3, stage=stage).to(**tkwargs)
    x = torch.randn(5, 6, **tkwargs)
    names = [n for n, _ in layer.named_parameters()]
    draws = {n: torch.randn(4, *p.shape, **tkwargs) for n, p in layer.named_parameters()}

    def loss(params, x):
        return torch.func.functional_call(layer, params, (x,)).sin().sum()

    grads = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(0, None))(draws, x)
    for k in range(4):
        params = {n: draws[n][k].clone().requires_grad_() for n in names}
        xk = x.clone().requires_grad_()
        loss(params, xk).backward()
        for n in names:
            torch.testing.assert_close(grads[0][n][k], params[n].grad)
        torch.testing.assert_close(grads[1][k], xk.grad)


@pytest.mark.parametrize("stage", [1, 2])
def test_conv_forward(stage, tkwargs):
    layer = BiPerConv2d(3, 4, 3, padding=1, stage=stage).to(**tkwargs).eval()
    x = torch.randn(2, 3, 8, 8, **tkwargs)
    w = torch.sin(layer.freq * layer.weight)
    if stage == 2:
        w = torch.sign(w)
    bx = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    expected = F.conv2d(bx, w, padding=1) * layer.alpha[:, None, None]
    torch.testing.assert_close(layer(x), expected)
    full = BiPerConv2d(3, 4, 3, binary_activations=False).to(**tkwargs)
    torch.testing.assert_close(full(x), F.conv2d(x, torch.sin(full.freq * full.weight)) * full.alpha[:, None, None])


def test_quantization_error_approaches_its_limit(tkwargs):
    # For w ~ N(0, 1) the finite-freq bias is ~exp(-2 freq^2) (negligible at 20), so the
    # estimator differs from 1/2 - 4/pi^2 only by Monte Carlo error. Its standard error
    # comes from the delta method (QE = mean(s^2) - mean(|s|)^2); z-threshold at a
    # false-failure rate of 1e-3 per check, 2 checks.
    w = torch.randn(400_000, **tkwargs)
    qe = quantization_error(w, freq=20.0)
    s = torch.sin(20.0 * w)
    influence = s**2 - 2 * s.abs().mean() * s.abs()
    se = influence.std() / math.sqrt(w.numel())
    zc = z_critical(2, 1e-3)
    assert abs(float(qe) - QE_LIMIT) < zc * float(se), (float(qe), QE_LIMIT, float(se))
    # The same with one scale per output channel (500 channels of 800 weights).
    qe_rows = quantization_error(w.reshape(500, 800), freq=20.0, per_channel=True)
    assert abs(float(qe_rows) - QE_LIMIT) < zc * float(se) + 1e-3  # + the per-row scale fitting bias ~1/800
    # At low frequency the wave is not yet a full square wave: a clearly smaller error.
    assert float(quantization_error(w, freq=0.5)) < QE_LIMIT - 0.02


def test_two_stage_schedule_and_set_stage():
    net = nn.Sequential(BiPerConv2d(1, 2, 3), nn.Flatten(), BiPerLinear(2 * 4 * 4, 3), nn.Linear(3, 1))
    sched = TwoStageSchedule(net, stage1_steps=3)
    stages = [sched.step() for _ in range(5)]
    assert stages == [1, 1, 2, 2, 2]
    assert net[0].stage == 2 and net[2].stage == 2
    assert set_stage(net, 1) == 2 and net[0].stage == 1
    with pytest.raises(ValueError, match="stage"):
        set_stage(net, 3)
    with pytest.raises(ValueError, match="no BiPer"):
        TwoStageSchedule(nn.Linear(2, 2), 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="freq"):
        BiPerLinear(3, 2, freq=0.0)
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        BiPerLinear(3, 2)(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"\[N, 2, H, W\]"):
        BiPerConv2d(2, 2, 3)(torch.randn(1, 3, 5, 5))
    with pytest.raises(TypeError, match="floating"):
        quantization_error(torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="per_channel"):
        quantization_error(torch.randn(5), per_channel=True)


def test_binary_classifier_trains_through_both_stages(tkwargs):
    # Plain PyTorch: a small binary net learns a linear rule in stage 1 and still generalises
    # after the switch to binary weights (held-out accuracy; chance is 0.5).
    torch.manual_seed(1)
    x, x_test = torch.randn(128, 10, **tkwargs), torch.randn(512, 10, **tkwargs)

    def rule(x: torch.Tensor) -> torch.Tensor:
        return (x[:, :5].sum(1) > x[:, 5:].sum(1)).long()

    net = nn.Sequential(BiPerLinear(10, 32, binary_activations=False, freq=5.0),
                        BiPerLinear(32, 2, freq=5.0)).to(**tkwargs)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = TwoStageSchedule(net, stage1_steps=50)

    def accuracy() -> float:
        net.eval()
        with torch.no_grad():
            acc = (net(x_test).argmax(1) == rule(x_test)).double().mean().item()
        net.train()
        return acc

    for step in range(80):
        opt.zero_grad()
        F.cross_entropy(net(x), rule(x)).backward()
        opt.step()
        if step == 49:  # the end of stage 1, still sine weights
            assert net[0].stage == 1
            acc1 = accuracy()
        sched.step()
    assert net[0].stage == 2
    acc2 = accuracy()
    b = net[0].binary_weight()
    assert bool(((b == 1) | (b == -1)).all())
    assert acc1 > 0.85 and acc2 > 0.85, (acc1, acc2)


@pytest.mark.parametrize("stage", [1, 2])
def test_in_bayesian_net_with_svi(stage, fit_small_regression):
    _, post, x, _ = fit_small_regression(nn.Sequential(BiPerLinear(2, 16, binary_activations=False, stage=stage),
                                                    nn.Tanh(), BiPerLinear(16, 1, stage=stage)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the custom autograd Functions must vmap over draws
        pred = post.predict(x)
    assert pred.f.shape == (1, 16, 48, 1) and torch.isfinite(pred.f).all()
