"""Generator-driven Gamma draws (Marsaglia-Tsang) against the exact Gamma CDF."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from priors.tasks.sampling import gamma

# Kolmogorov-Smirnov at alpha = 1e-4 per case (4 cases): false-failure rate < 4e-4.
KS_ALPHA = 1e-4


@pytest.mark.parametrize(("concentration", "rate"), [(3.0, 6.0), (2.0, 0.15), (0.5, 2.0), (1.1, 50.0)])
def test_gamma_matches_cdf(concentration: float, rate: float, tkwargs: dict) -> None:
    g = torch.Generator(device=tkwargs["device"]).manual_seed(1)
    draws = gamma(concentration, rate, (4000,), g, torch.zeros((), **tkwargs))
    assert draws.shape == (4000,) and draws.dtype == tkwargs["dtype"] and bool((draws >= 0).all())
    p = stats.kstest(draws.cpu().numpy(), stats.gamma(concentration, scale=1.0 / rate).cdf).pvalue
    assert p > KS_ALPHA


def test_gamma_reproducible_and_tiny_shape(tkwargs: dict) -> None:
    like = torch.zeros((), **tkwargs)
    a = gamma(2.0, 1.0, (10,), torch.Generator(device=like.device).manual_seed(3), like)
    b = gamma(2.0, 1.0, (10,), torch.Generator(device=like.device).manual_seed(3), like)
    assert torch.equal(a, b)
    tiny = gamma(1e-4, 1.0, (1000,), torch.Generator(device=like.device).manual_seed(3), like)
    assert bool(torch.isfinite(tiny).all()) and float(tiny.median()) < 1e-10  # the paper's ~zero noise prior
    with pytest.raises(ValueError, match="concentration"):
        gamma(0.0, 1.0, (3,), None, like)
