"""PowerNorm (arXiv:2003.07845): approximate backward, running statistics, masking, BayesianNet use."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from bayesnets.nn import PowerNorm
from inference.density import make_potential

# Small enough that the eps / s^2 term of the fixed point (see norms.py) is below float64
# round-off at the tolerances used; the layer's default is 1e-5.
TINY_EPS = 1e-12
# Repeats of one batch: the gradient statistic nu contracts by (1 - (1 - alpha_bkw) * Gamma)
# = 0.9 per step (Gamma = 1 at a settled psi), so 400 steps leave 0.9^400 ~ 5e-19.
SETTLE_STEPS = 400


def _batch(**tkwargs) -> tuple[torch.Tensor, torch.Tensor]:
    # [T, B, C] tokens with unequal channel scales, and an upstream gradient.
    x = torch.randn(6, 5, 8, **tkwargs) * torch.linspace(0.5, 3.0, 8, **tkwargs)
    return x, torch.randn(6, 5, 8, **tkwargs)


def _grad(norm: PowerNorm, x: torch.Tensor, g: torch.Tensor, **kw) -> torch.Tensor:
    x = x.clone().requires_grad_()
    norm(x, **kw).backward(g)
    return x.grad


def _reference_grad(norm: PowerNorm, x: torch.Tensor, g: torch.Tensor, group_num: int | None) -> torch.Tensor:
    """Autograd of ``weight * u / RMS_batch(u) + bias`` with u the per-token group scaling of x."""
    x = x.clone().requires_grad_()
    u = x
    if group_num is not None:
        grp = x.unflatten(-1, (group_num, -1))
        u = (grp / (grp.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()).flatten(-2)
    y = norm.weight * u / (u.pow(2).mean((0, 1)) + norm.eps).sqrt() + norm.bias
    y.backward(g)
    return x.grad


@pytest.mark.parametrize("warmup_iters", [10**6, 0], ids=["batch-stats", "running-stats"])
@pytest.mark.parametrize("group_num", [None, 2])
def test_backward_equals_batch_rms_gradient_at_settled_statistics(warmup_iters, group_num, tkwargs):
    # Fed the same batch and upstream gradient again and again, psi^2 settles at the batch
    # quadratic mean and nu at its fixed point; the approximate backward must then be the
    # exact gradient of batch RMS normalization (in warm-up and after it).
    x, g = _batch(**tkwargs)
    norm = PowerNorm(8, eps=TINY_EPS, warmup_iters=warmup_iters, group_num=group_num).to(**tkwargs)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(8, **tkwargs) + 0.5)
    exact = _reference_grad(norm, x, g, group_num)
    first = _grad(norm, x, g)
    # The first step (nu = 0) is not exact: the running statistic is what makes it so.
    assert not torch.allclose(first, exact, rtol=1e-3, atol=1e-3)
    for _ in range(SETTLE_STEPS):
        approx = _grad(norm, x, g)
    torch.testing.assert_close(approx, exact, rtol=1e-9, atol=1e-9)


def test_parameter_gradients_match_autograd(tkwargs):
    x, g = _batch(**tkwargs)
    norm = PowerNorm(8, warmup_iters=10, group_num=None).to(**tkwargs)
    norm(x).backward(g)
    scale = (x.pow(2).mean((0, 1)) + norm.eps).sqrt()
    torch.testing.assert_close(norm.weight.grad, (g * x / scale).sum((0, 1)))
    torch.testing.assert_close(norm.bias.grad, g.sum((0, 1)))


def test_running_quadratic_mean_and_eval_is_per_sample(tkwargs):
    x, _ = _batch(**tkwargs)
    norm = PowerNorm(8, warmup_iters=3, group_num=None).to(**tkwargs)
    second_moment = x.pow(2).mean((0, 1))
    for _ in range(3):  # warm-up: psi^2 is the plain average of the batch quadratic means
        norm(x)
    torch.testing.assert_close(norm.running_phi, second_moment)
    for _ in range(50):  # then an EMA, which stays at the (constant) batch value
        norm(x)
    torch.testing.assert_close(norm.running_phi, second_moment)
    norm.eval()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1.0, 1.0)
        full = norm(x)
        one = norm(x[:1, :1])  # a single token, alone
    torch.testing.assert_close(one, full[:1, :1])
    torch.testing.assert_close(full, norm.weight * x / (second_moment + norm.eps).sqrt() + norm.bias)


def test_forward_switches_to_running_statistic_after_warmup(tkwargs):
    x, _ = _batch(**tkwargs)
    other = 3.0 * torch.randn_like(x)
    norm = PowerNorm(8, warmup_iters=2, group_num=None, affine=False).to(**tkwargs)
    torch.testing.assert_close(norm(x), x / (x.pow(2).mean((0, 1)) + norm.eps).sqrt())  # batch statistic
    norm(x)
    psi2 = norm.running_phi.clone()
    torch.testing.assert_close(norm(other), other / (psi2 + norm.eps).sqrt())  # running psi_{t-1}
    torch.testing.assert_close(norm.running_phi, 0.9 * psi2 + 0.1 * other.pow(2).mean((0, 1)))


def test_padded_tokens_do_not_enter_the_statistics(tkwargs):
    x, g = _batch(**tkwargs)
    pad = torch.zeros(6, 5, dtype=torch.bool, device=x.device)
    pad[4:, 1] = True
    pad[5:, 3] = True
    garbage = x.clone()
    garbage[pad] = 100.0 * torch.randn_like(garbage[pad])
    outs, grads, phis = [], [], []
    for inp in (x, garbage):
        norm = PowerNorm(8, warmup_iters=5, group_num=None).to(**tkwargs)
        xi = inp.clone().requires_grad_()
        for _ in range(3):  # the third call's backward uses a non-zero nu from the first two
            xi.grad = None
            out = norm(xi, pad_mask=pad)
            out.backward(g)
        outs.append(out.detach())
        grads.append(xi.grad)
        phis.append(norm.running_phi)
    keep = ~pad
    torch.testing.assert_close(outs[0][keep], outs[1][keep])
    torch.testing.assert_close(grads[0][keep], grads[1][keep])
    torch.testing.assert_close(phis[0], phis[1])
    torch.testing.assert_close(phis[0], x[keep].pow(2).mean(0))
    # A padded token gets the plain gradient of its own (fixed-scale) output.
    torch.testing.assert_close(grads[1][pad], (g[pad] / (phis[1] + 1e-5).sqrt()))


def test_drop_in_for_layernorm_in_a_transformer(tkwargs):
    # A transformer block with both LayerNorms swapped for PowerNorm trains on a toy task.
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    layer.norm1, layer.norm2 = PowerNorm(8, warmup_iters=20), PowerNorm(8, warmup_iters=20)
    model = nn.Sequential(nn.Linear(1, 8), layer, nn.Linear(8, 1)).to(**tkwargs)
    x = torch.randn(16, 8, 1, **tkwargs)
    y = x.mean(1, keepdim=True).expand_as(x)  # every token predicts the sequence mean: needs attention
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Past warm-up (step 20) the forward uses the running statistic; the loss keeps falling.
    assert sum(losses[-10:]) < 0.25 * sum(losses[:10]), losses
    assert layer.norm1.num_batches_tracked.item() == 60


def test_in_bayesian_net_with_svi(fit_small_regression):
    net = nn.Sequential(nn.Linear(2, 12), PowerNorm(12, warmup_iters=20, group_num=None), nn.Tanh(), nn.Linear(12, 1))
    model, post, x, y = fit_small_regression(net)
    assert net[1].running_phi.device == x.device and int(net[1].num_batches_tracked) > 120
    # Training mode cannot be vmapped (one shared running state): predict_f falls back to a
    # loop with a warning that says to call eval().
    with pytest.warns(RuntimeWarning, match=r"\.eval\(\)"):
        model.predict_f({n: v[0, :2] for n, v in post.samples.items()}, x)
    # Eval mode is a fixed per-channel scale: vectorised prediction, no fallback, state untouched.
    model.eval()
    phi = net[1].running_phi.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = post.predict(x)
    assert pred.f.shape == (1, 16, 48, 1) and torch.isfinite(pred.f).all()
    # The engines' vectorised gradient (vmap over chains of grad) also runs in eval mode and
    # equals per-chain autograd.
    potential = make_potential(model, x, y, gradient="vmap")
    view = potential.view
    z = torch.stack([view.ravel(model.unconstrain({n: v[0, k] for n, v in post.samples.items()}))
                     for k in range(3)])
    grad, value = potential(z, x, y)
    for k in range(3):
        zk = z[k].clone().requires_grad_()
        lp = model.log_density(view.unravel(zk), x, y)
        lp.backward()
        torch.testing.assert_close(value[k], lp.detach())
        torch.testing.assert_close(grad[k], zk.grad)
    assert torch.equal(net[1].running_phi, phi)


def test_bad_input():
    norm = PowerNorm(4)
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        norm(torch.randn(3, 5))
    with pytest.raises(ValueError, match="at least 2 dims"):
        norm(torch.randn(4))
    with pytest.raises(TypeError, match="bool"):
        norm(torch.randn(2, 3, 4), pad_mask=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        norm(torch.randn(2, 3, 4), pad_mask=torch.zeros(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="every position"):
        norm(torch.randn(2, 3, 4), pad_mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="group_num"):
        PowerNorm(6, group_num=4)
    with pytest.raises(ValueError, match="alpha_fwd"):
        PowerNorm(6, alpha_fwd=1.0)
