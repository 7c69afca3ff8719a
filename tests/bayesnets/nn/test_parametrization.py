"""abc-parametrisations, μP coordinate checks and criticality (arXiv 2011.14522, 2203.03466, 2106.10165)."""

from __future__ import annotations

import math

import pytest
import torch
from scenarios import z_critical
from torch import nn

from bayesnets.nn.parametrization import (
    AbcParametrization,
    coord_check,
    critical_init,
    init_critical_,
    kernel_recursion,
    output_kurtosis,
    parametrize,
    relu_output_kurtosis,
    susceptibilities,
)


def _mlp(width: int, d: int = 8, depth: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def test_abc_arithmetic_matches_tensor_programs_iv():
    mup, ntk, mf, sp = (AbcParametrization.named(n) for n in ("mup", "ntk", "mf", "sp"))
    assert mup.r() == 0 and mup.is_feature_learning() and not mup.is_kernel_regime()
    assert ntk.r() == 0.5 and ntk.is_kernel_regime() and not ntk.is_feature_learning()
    assert mf.r() == 0 and mf.is_feature_learning()
    assert sp.r() == -1 and not sp.is_stable()
    sp_small_lr = AbcParametrization(sp.a, sp.b, 1.0)  # SP with learning rate 1/width: kernel regime
    assert sp_small_lr.r() == 0.5 and sp_small_lr.is_kernel_regime()
    assert not AbcParametrization(sp.a, sp.b, 0.0).is_stable(num_hidden=1)  # the readout update blows up
    with pytest.raises(ValueError, match="3 entries"):
        AbcParametrization((0.0, 0.0), (0.0, 0.0, 0.0), 0.0)


@pytest.mark.parametrize(
    ("optimizer", "lr_mults"),
    [("sgd", {"input": 4.0, "hidden": 1.0, "output": 0.25}), ("adam", {"input": 1.0, "hidden": 0.25, "output": 0.25})],
)
def test_mup_scalings_at_four_times_the_base_width(optimizer, lr_mults, device):
    torch.manual_seed(0)
    model, base = _mlp(256).to(device), _mlp(64)
    plan = parametrize(model, base, parametrization="mup", optimizer=optimizer)
    kinds = {name: s.kind for name, s in plan.scalings.items()}
    assert kinds["0.weight"] == "input" and kinds["2.weight"] == "hidden" and kinds["6.weight"] == "output"
    assert kinds["0.bias"] == "bias" and kinds["6.bias"] == "fixed"
    for name, kind in (("0.weight", "input"), ("2.weight", "hidden"), ("6.weight", "output")):
        assert plan.scalings[name].lr_mult == pytest.approx(lr_mults[kind])
    assert plan.scalings["0.bias"].lr_mult == pytest.approx(lr_mults["input"])
    # init: input N(0, 1/8), hidden N(0, 1/256), readout N(0, 1/(64 * 4²)) (μP: variance ∝ 1/width²)
    for name, std in (("0.weight", 1 / math.sqrt(8)), ("2.weight", 1 / 16), ("6.weight", 1 / (8 * 4))):
        assert float(dict(model.named_parameters())[name].detach().std()) == pytest.approx(std, rel=0.1)
    groups = plan.param_groups(lr=0.1, weight_decay=0.0)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert {round(g["lr"], 12) for g in groups} >= {round(0.1 * m, 12) for m in lr_mults.values()}
    # at the base width every parametrisation is SP: learning-rate multipliers 1
    same = parametrize(_mlp(64), base, parametrization="mup", optimizer=optimizer, reinit=False)
    assert all(s.lr_mult == 1.0 for s in same.scalings.values())
    by_width = parametrize(_mlp(256), width=256, base_width=64, parametrization="mup", optimizer=optimizer)
    assert {k: v.lr_mult for k, v in by_width.scalings.items()} == {k: v.lr_mult for k, v in plan.scalings.items()}


@pytest.mark.parametrize(
    ("optimizer", "widths"), [("adam", [64, 128, 256, 512, 1024, 2048]), ("sgd", [64, 128, 256, 512])]
)
def test_coordinate_check_flat_under_mup_and_blowing_up_under_sp(optimizer, widths, device):
    """3 steps on one batch: under μP the log-log slope of every layer's RMS change against width
    is ~0 (measured |slope| <= 0.1); under SP hidden layers and logits grow (measured 0.9-6)."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 8, device=device), torch.randn(32, 1, device=device)
    lr = 1e-2 if optimizer == "adam" else 0.1
    mup = coord_check(_mlp, widths, x, y, parametrization="mup", optimizer=optimizer, lr=lr)
    sp = coord_check(_mlp, widths, x, y, parametrization="sp", optimizer=optimizer, lr=lr)
    assert max(abs(s) for s in mup.slopes().values()) < 0.25
    assert min(sp.slopes()[layer] for layer in ("2", "4", "6")) > 0.5
    assert mup.change["6"].shape == (len(widths), 4)
    fig = mup.plot()
    assert len(fig.axes) == 3


def test_critical_initialisations():
    assert critical_init("relu").C_W == 2.0 and critical_init("relu").C_b == 0.0
    assert critical_init("leaky_relu").C_W == pytest.approx(2 / (1 + 0.01**2))
    assert critical_init("tanh").C_W == pytest.approx(1.0) and critical_init("tanh").K_star == 0.0
    assert critical_init("erf").C_W == pytest.approx(math.pi / 4)
    for name in ("gelu", "silu"):
        crit = critical_init(name)
        assert crit.universality == "K*>0" and crit.C_b > 0
        # fixed point of the variance map, with both susceptibilities 1
        k_next = kernel_recursion(name, crit.C_W, crit.C_b, 1, crit.K_star)[-1]
        assert float(k_next) == pytest.approx(crit.K_star, rel=1e-8)
        chi_par, chi_perp = susceptibilities(name, crit.K_star, crit.C_W)
        assert float(chi_par) == pytest.approx(1.0, abs=1e-8) and float(chi_perp) == pytest.approx(1.0, abs=1e-8)
    # GELU's critical C_W = 1.98305 (arXiv 2106.10165, §5.3.4)
    assert critical_init("gelu").C_W == pytest.approx(1.98305, abs=1e-4)
    with pytest.raises(ValueError, match="no critical initialisation"):
        critical_init("sigmoid")


def test_signal_neither_explodes_nor_vanishes_over_50_layers_at_criticality(tkwargs):
    """Infinite width: ReLU at C_W = 2 keeps K exactly; off-critical C_W = 1.8 / 2.2 changes it by
    0.9^50 ≈ 5e-3 / 1.1^50 ≈ 117; tanh at criticality decays only as 1/(2l); GELU stays at K*.

    Finite width (n = 256, 32 nets): log(‖z^50‖²/‖z^1‖²) is a sum of 49 independent layer factors
    with mean -5/(2n) and variance 5/n each (second order in 1/n), so its mean over nets is
    z-tested against -49·5/(2n) = -0.48 at false-failure rate 1e-3 (nets' sd ~1; off-critical
    C_W = 1.8 or 2.2 would shift it by ∓4.7)."""
    ks = kernel_recursion("relu", 2.0, 0.0, 50, 1.0)
    assert torch.allclose(ks, torch.ones_like(ks))
    assert float(kernel_recursion("relu", 1.8, 0.0, 50)[-1]) == pytest.approx(0.9**50)
    assert float(kernel_recursion("relu", 2.2, 0.0, 50)[-1]) == pytest.approx(1.1**50)
    tanh = kernel_recursion("tanh", 1.0, 0.0, 50)
    assert 2 * 50 * float(tanh[-1]) == pytest.approx(1.0, abs=0.05)
    gelu = critical_init("gelu")
    kg = kernel_recursion("gelu", gelu.C_W, gelu.C_b, 50, gelu.K_star)
    assert torch.allclose(kg, torch.full_like(kg, gelu.K_star), rtol=1e-6)

    torch.manual_seed(1)
    width, depth, nets, d = 256, 50, 32, 4
    kw = {"device": tkwargs["device"], "dtype": torch.float32}  # a statistical check: float32 suffices
    crit = critical_init("relu")
    z = torch.randn(nets, width, d, **kw) @ torch.randn(d, **kw) * math.sqrt(crit.C_W / d)
    first = z.square().mean(-1)
    for _ in range(depth - 1):
        w = torch.randn(nets, width, width, **kw) * math.sqrt(crit.C_W / width)
        z = (w @ torch.relu(z).unsqueeze(-1)).squeeze(-1)
    log_ratio = (z.square().mean(-1) / first).log().double()
    expected = -(depth - 1) * 5 / (2 * width)
    se = log_ratio.std() / math.sqrt(nets)
    assert (log_ratio.mean() - expected).abs() / se < z_critical(1)


def test_init_critical_draws_the_critical_variances(tkwargs):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(400, 300), nn.GELU(), nn.Linear(300, 200)).to(**tkwargs)
    crit = init_critical_(net, "gelu")
    for layer in (net[0], net[2]):
        # 60k+ weights: the sample variance is within 2% of C_W / fan_in with overwhelming probability
        assert float(layer.weight.detach().var() * layer.in_features) == pytest.approx(crit.C_W, rel=0.02)
    assert float(net[0].bias.detach().var()) == pytest.approx(crit.C_b, rel=0.3)  # only 300 draws


def test_deep_relu_output_kurtosis_matches_depth_to_width_prediction(tkwargs):
    """20,000 random critical ReLU nets (3 hidden layers of 32 units, Gaussian weights), one output each.

    The exact finite-width excess kurtosis 3[(1 + 5/32)^3 - 1] = 1.64 is checked by a z-test with
    the delta-method standard error (false-failure rate 1e-3); the depth-to-width prediction
    15 L / n = 1.41 is its leading order, so it must agree within the O((L/n)²) remainder
    (here 0.23) plus the same Monte Carlo allowance."""
    torch.manual_seed(2)
    depth, width, nets, d = 3, 32, 20_000, 2
    x = torch.randn(d, **tkwargs)
    h = (torch.randn(nets, width, d, **tkwargs) @ x) * math.sqrt(2.0 / d)
    for _ in range(depth - 1):
        h = (torch.randn(nets, width, width, **tkwargs) @ torch.relu(h).unsqueeze(-1)).squeeze(-1)
        h = h * math.sqrt(2.0 / width)
    out = (torch.randn(nets, width, **tkwargs) * torch.relu(h)).sum(-1) * math.sqrt(2.0 / width)
    m2, m4 = out.square().mean(), out.pow(4).mean()
    kurt = m4 / m2**2 - 3
    # delta method for g(m2, m4) = m4 / m2² - 3
    grad = torch.stack([-2 * m4 / m2**3, 1 / m2**2])
    cov = torch.cov(torch.stack([out.square(), out.pow(4)]))
    se = torch.sqrt(grad @ cov @ grad / nets)
    exact = relu_output_kurtosis(depth, width, exact=True)
    leading = relu_output_kurtosis(depth, width)
    assert leading == pytest.approx(15 * depth / width)
    assert output_kurtosis("relu", 2.0, 0.0, depth, width) == pytest.approx(leading)
    assert abs(float(kurt) - exact) < z_critical(1) * float(se)
    assert abs(float(kurt) - leading) < (exact - leading) + z_critical(1) * float(se)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="base_model"):
        parametrize(_mlp(64))
    with pytest.raises(ValueError, match="parametrization must be one of"):
        parametrize(_mlp(64), _mlp(32), parametrization="xp")
    with pytest.raises(ValueError, match="optimizer"):
        parametrize(_mlp(64), _mlp(32), optimizer="rmsprop")
    with pytest.raises(ValueError, match="built for"):
        parametrize(_mlp(64), _mlp(32), parametrization=AbcParametrization.mup("sgd"), optimizer="adam")
    with pytest.raises(ValueError, match="depth"):
        kernel_recursion("relu", 2.0, 0.0, 0)
    with pytest.raises(ValueError, match="C_W"):
        kernel_recursion("relu", -2.0, 0.0, 3)
    with pytest.raises(ValueError, match="C_b"):
        kernel_recursion("relu", 2.0, -0.1, 3)
    with pytest.raises(ValueError, match="width"):
        relu_output_kurtosis(3, 0)
    with pytest.raises(ValueError, match="at least two widths"):
        coord_check(_mlp, [64], torch.randn(4, 8), torch.randn(4, 1))
