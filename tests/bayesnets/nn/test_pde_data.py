"""The Poisson and Darcy data generators used to test and train neural operators."""

from __future__ import annotations

import pytest
import torch

from bayesnets.nn.pde_data import (
    darcy_data,
    darcy_operator,
    gaussian_random_field,
    laplacian_5pt,
    poisson_data,
    sine_transform,
)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_poisson_and_darcy_data_solve_their_equations(tkwargs):
    like = torch.zeros((), **tkwargs)
    n = 16
    f, u = poisson_data(3, n, generator=_generator(1), like=like)
    assert f.shape == u.shape == (3, 1, n, n) and f.device.type == tkwargs["device"].type
    torch.testing.assert_close(laplacian_5pt(u), f / (n + 1) ** 2, rtol=0, atol=1e-13)
    a, u = darcy_data(3, n, tol=1e-10, generator=_generator(2), like=like)
    assert set(a.unique().tolist()) == {3.0, 12.0}
    residual = darcy_operator(a, u) - 1.0 / (n + 1) ** 2
    assert float(residual.abs().max()) < 1e-9 / (n + 1) ** 2 * n
    assert bool((u > 0).all())  # maximum principle: positive source, zero boundary
    field = gaussian_random_field(256, n, generator=_generator(3), like=like)
    # Scaled to unit pointwise variance on average. The estimate pools 256 fields of ~10
    # correlation areas each (length scale ~1/tau), so its relative sd is ~3%: the 20% window
    # is over 6 sd wide on each side (false-failure rate < 1e-9).
    assert 0.8 < float(field.var()) < 1.2


def test_sine_transform_is_an_involution(tkwargs):
    x = torch.randn(2, 9, 9, **tkwargs)
    torch.testing.assert_close(sine_transform(sine_transform(x)), x, rtol=1e-12, atol=1e-12)


def test_generators_reject_bad_sizes(tkwargs):
    like = torch.zeros((), **tkwargs)
    with pytest.raises(ValueError, match="n \\(grid size\\) must be >= 2"):
        poisson_data(2, 1, like=like)
    with pytest.raises(ValueError, match="num \\(number of samples\\) must be >= 1"):
        darcy_data(0, 8, like=like)
    with pytest.raises(ValueError, match="contrast values must be positive"):
        darcy_data(1, 8, contrast=(1.0, 0.0), like=like)
