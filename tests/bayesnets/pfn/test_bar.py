"""Bar distribution: a proper density whose cdf, quantile, mean, variance and samples agree."""

from __future__ import annotations

import math

import pytest
import torch
from scenarios import z_critical

from bayesnets.pfn.bar import BarDistribution, fit_borders


def _dist(tkwargs: dict, batch: tuple[int, ...] = (3,), k: int = 12) -> BarDistribution:
    g = torch.Generator(device=tkwargs["device"]).manual_seed(0)
    borders = torch.sort(torch.randn(k + 1, generator=g, **tkwargs) * 2).values
    logits = torch.randn(*batch, k, generator=g, **tkwargs) * 2
    return BarDistribution(logits, borders)


def _midpoints(d: BarDistribution, tail: int = 20000, inner: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoint-rule nodes and weights, one segment per piece where the density is smooth:
    each inner bucket (constant density) and each half-normal tail cut 14 scales out
    (mass beyond < 1e-40; midpoint error ~ h^2 on the tails)."""
    s = d.tail_scales
    lo, hi = (d.borders[1] - 14 * s[0]).reshape(1), (d.borders[-2] + 14 * s[1]).reshape(1)

    def seg(a: torch.Tensor, b: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = (torch.arange(n, dtype=a.dtype, device=a.device) + 0.5) / n
        return (a[:, None] + t * (b - a)[:, None]).flatten(), ((b - a) / n)[:, None].expand(-1, n).flatten()

    parts = [seg(lo, d.borders[1:2], tail), seg(d.borders[1:-2], d.borders[2:-1], inner),
             seg(d.borders[-2:-1], hi, tail)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def test_density_integrates_to_one_and_moments_agree(tkwargs: dict) -> None:
    d = _dist(tkwargs)
    y, w = _midpoints(d)
    dens = d.log_prob(y[:, None]).exp() * w[:, None]  # [points, 3]
    torch.testing.assert_close(dens.sum(0), torch.ones(3, **tkwargs), atol=1e-7, rtol=0)
    torch.testing.assert_close((dens * y[:, None]).sum(0), d.mean, atol=1e-6, rtol=0)
    torch.testing.assert_close((dens * y[:, None] ** 2).sum(0) - d.mean**2, d.variance, atol=1e-5, rtol=0)
    # The cdf is the running integral of the density (checked at segment ends, i.e. at the borders).
    ends = torch.arange(20000 - 1, y.numel() - 20000, 1000)  # last node of the left tail and of each inner bucket
    torch.testing.assert_close(dens.cumsum(0)[ends], d.cdf(d.borders[1:-1, None]), atol=1e-7, rtol=0)


def test_quantile_inverts_cdf_everywhere_including_tails(tkwargs: dict) -> None:
    d = _dist(tkwargs)
    q = torch.tensor([1e-6, 1e-3, 0.02, 0.3, 0.5, 0.77, 0.98, 0.999, 1 - 1e-6], **tkwargs)[:, None]
    y = d.quantile(q)
    assert y.shape == (9, 3) and bool((y[1:] > y[:-1]).all())
    torch.testing.assert_close(d.cdf(y), q.expand(9, 3), atol=1e-9, rtol=1e-6)
    ys = torch.linspace(-8, 8, 50, **tkwargs)[:, None]
    torch.testing.assert_close(d.quantile(d.cdf(ys).clamp(1e-12, 1 - 1e-12)), ys.expand(50, 3), atol=1e-6, rtol=0)


def test_half_of_each_tail_lies_in_its_bucket(tkwargs: dict) -> None:
    """Full support with the paper's tail scale: half of the outer buckets' mass is inside them."""
    d = _dist(tkwargs)
    p = d.probs
    torch.testing.assert_close(d.cdf(d.borders[0].expand(3)), 0.5 * p[:, 0])
    torch.testing.assert_close(1 - d.cdf(d.borders[-1].expand(3)), 0.5 * p[:, -1])
    assert bool(torch.isfinite(d.log_prob(torch.tensor(1e3, **tkwargs))).all())


def test_samples_match_mean_and_gradients_flow(tkwargs: dict) -> None:
    d = _dist(tkwargs)
    torch.manual_seed(0)
    s = d.sample((20000,))
    assert s.shape == (20000, 3)
    z = (s.mean(0) - d.mean) / (d.variance / 20000).sqrt()
    assert bool((z.abs() < z_critical(3, 1e-4)).all())  # false-failure rate 1e-4
    logits = d.logits.clone().requires_grad_(True)
    BarDistribution(logits, d.borders).rsample((5,)).sum().backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_fit_borders_equal_mass(tkwargs: dict) -> None:
    g = torch.Generator(device=tkwargs["device"]).manual_seed(0)
    ys = torch.randn(100_000, generator=g, **tkwargs)
    b = fit_borders(ys, 50)
    assert b.shape == (51,) and float(b[0]) == float(ys.min()) and float(b[-1]) == float(ys.max())
    counts = torch.bincount(torch.bucketize(ys, b[1:-1], right=True), minlength=50)
    assert int(counts.min()) >= 1999 and int(counts.max()) <= 2001


def test_bad_input(tkwargs: dict) -> None:
    with pytest.raises(ValueError, match="borders"):
        BarDistribution(torch.zeros(2, 5, **tkwargs), torch.linspace(0, 1, 5, **tkwargs))
    with pytest.raises(ValueError, match="distinct"):
        fit_borders(torch.tensor([0.0, 1.0] * 100, **tkwargs), 10)
    with pytest.raises(ValueError, match="at least"):
        fit_borders(torch.randn(10, **tkwargs), 10)
    assert math.isfinite(float(_dist(tkwargs).log_prob(torch.tensor(-1e3, **tkwargs)).sum()))
