"""MgNO (arXiv:2310.19809): the multigrid V-cycle layer and the network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bayesnets import BayesianNet, Gaussian
from bayesnets.nn import MgConv2d, MgNO
from bayesnets.nn.pde_data import darcy_data, laplacian_5pt, poisson_data
from inference import SVI
from priors import LayerwiseGaussian

#: Parameters of the official Darcy model (6 levels, width 24, 4 layers, iterations
#: [[1,0]]*5 + [[2,0]], 1 input channel), counted from xlliu2017/MgNO models.py (MgNO_DC).
OFFICIAL_DARCY_PARAMS = 572_661


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one CPU thread: these convolutions are tiny (channels <= 4, grids <= 64^2), so
    threading only adds barriers, and on a busy 2-core machine each barrier can stall for
    tens of milliseconds (measured: 0.4 ms per conv on one thread, 40 ms on two under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_darcy_configuration_has_the_official_parameter_count():
    net = MgNO(in_channels=1, out_channels=1, width=24, num_layers=4, levels=6)
    assert sum(p.numel() for p in net.parameters()) == OFFICIAL_DARCY_PARAMS


def test_classical_weights_cut_the_poisson_residual_5x_per_v_cycle(tkwargs):
    # 64 x 64 cells = 63^2 interior nodes, 6 levels down to one node; V(3,3) damped-Jacobi
    # cycles used as corrections u <- u + V(r). Observed: 7.3x per cycle on every sample and
    # every cycle (V(2,2) gives 5.1x, V(1,1) 2.8x, as Jacobi's smoothing factor 0.6 predicts).
    n = 63
    f, _ = poisson_data(4, n, generator=_generator(), like=torch.zeros((), **tkwargs))
    b = f / (n + 1) ** 2  # right-hand side of the unscaled stencil L u = h^2 f
    mg = MgConv2d(1, 1, levels=6, iters=(3, 3), use_res=True, grid="vertex").to(**tkwargs).load_poisson_multigrid_()
    u, r = torch.zeros_like(b), b
    with torch.no_grad():
        for _ in range(4):
            u = u + mg(r)
            r_new = b - laplacian_5pt(u)
            ratio = r.flatten(1).norm(dim=1) / r_new.flatten(1).norm(dim=1)
            assert bool((ratio >= 5).all()), ratio
            r = r_new
    assert float(r.norm() / b.norm()) < 5.0**-4


def test_classical_weights_need_the_nested_vertex_grid():
    with pytest.raises(ValueError, match="grid='vertex'"):
        MgConv2d(1, 1, levels=3, use_res=True).load_poisson_multigrid_()
    with pytest.raises(ValueError, match="use_res=True"):
        MgConv2d(1, 1, levels=3, grid="vertex").load_poisson_multigrid_()


@pytest.mark.parametrize(("grid", "side"), [("cell", 16), ("vertex", 15)])
def test_v_cycle_keeps_the_grid_and_maps_channels(grid, side, tkwargs):
    conv = MgConv2d(c_u=5, c_f=2, levels=3, iters=[(1, 1), (2, 1), (2, 0)], use_res=True,
                    grid=grid).to(**tkwargs)
    f = torch.randn(3, 2, side, side, **tkwargs)
    out = conv(f)
    assert out.shape == (3, 5, side, side) and torch.isfinite(out).all()
    # Linear in f (no biases, no activation): V(a f + g) = a V(f) + V(g).
    g = torch.randn_like(f)
    torch.testing.assert_close(conv(2.0 * f + g), 2.0 * out + conv(g))


def test_v_cycle_rejects_bad_grids(tkwargs):
    with pytest.raises(ValueError, match="multiple of 8"):
        MgConv2d(1, 1, levels=4).to(**tkwargs)(torch.zeros(1, 1, 20, 16, **tkwargs))
    with pytest.raises(ValueError, match=r"m \* 8 - 1"):
        MgConv2d(1, 1, levels=4, grid="vertex").to(**tkwargs)(torch.zeros(1, 1, 16, 16, **tkwargs))
    with pytest.raises(ValueError, match=r"f must have shape \[N, 2, H, W\]"):
        MgConv2d(1, 2).to(**tkwargs)(torch.zeros(1, 1, 16, 16, **tkwargs))
    with pytest.raises(ValueError, match="at least one pre-smoothing step"):
        MgConv2d(1, 1, levels=2, iters=[(0, 1), (1, 0)])


def test_mgno_in_bayesian_net_with_svi_on_darcy(tkwargs):
    n = 8
    a, u = darcy_data(16, n, generator=_generator(4), like=torch.zeros((), **tkwargs))
    x = (a - 7.5) / 4.5  # coefficients standardised to +-1
    y = (u / u.std()).flatten(1)  # [N, 64]
    net = nn.Sequential(MgNO(1, 1, width=4, num_layers=1, levels=2, iters=(1, 0)), nn.Flatten()).to(**tkwargs)
    model = BayesianNet(net, LayerwiseGaussian(1.0), Gaussian(scale=0.3, num_outputs=n * n))
    post = SVI(num_steps=100, lr=0.02, num_samples=8, seed=0).fit(model, x, y, progress=False)
    elbo = post.stats["elbo"]
    assert torch.isfinite(elbo).all()
    # A real improvement, not noise: the last 20 steps' mean ELBO beats the first 20's by 25%
    # of its size (observed: about 80%).
    assert elbo[-20:].mean() > elbo[:20].mean() + 0.25 * elbo[:20].mean().abs(), elbo
    pred = post.predict(x)
    assert pred.f.shape == (1, 8, 16, n * n) and torch.isfinite(pred.f).all()
    assert pred.f.device.type == tkwargs["device"].type
