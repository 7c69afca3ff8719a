"""Small, fast settings for every registered surrogate, and a cache of fitted models.

The shared machine has 2 cores: the networks are tiny and the runs short. The settings shrink
cost, not the code paths (same engines, same posterior classes).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from bayesnets.surrogates import make_surrogate

#: Per-surrogate options for the tests: small nets, short runs.
FAST = {
    "gp": {},
    "gp_legacy": {},
    "ibnn": {},
    "hmc": {"width": 16, "depth": 1, "engine_options": {"num_warmup": 60, "num_samples": 10, "num_chains": 2}},
    "nuts": {"width": 16, "depth": 1, "engine_options": {"num_warmup": 40, "num_samples": 20, "max_tree_depth": 5}},
    # SGHMC needs its default 1000 burn-in steps; on a 16 x 1 net it did not reach a fit at the
    # default step size, on 32 x 2 it did (relative training RMSE 0.05 in the 1-D test).
    "sghmc": {"width": 32, "depth": 2, "engine_options": {"num_warmup": 1000, "num_samples": 10, "thinning": 5,
                                                          "num_chains": 2}},
    "svi": {"width": 16, "depth": 1, "engine_options": {"num_steps": 600, "num_samples": 20}},
    "ensemble": {"width": 16, "depth": 1, "engine_options": {"num_members": 5, "num_epochs": 300, "lr": 0.05}},
    "dkl": {"width": 16},
    "tprocess": {},
    "pfn": {},
}


def objective(X: torch.Tensor) -> torch.Tensor:
    """A smooth test function on the unit cube, ``[n, d] -> [n, 1]``."""
    return torch.sin(2 * math.pi * X[:, :1]) + 0.5 * X.sum(-1, keepdim=True)


_CACHE: dict[tuple, object] = {}


def fitted(name: str, dtype: torch.dtype, device: torch.device, d: int = 2, m: int = 1, n: int = 12):
    """A surrogate fitted once per (name, dtype, device, d, m, n) in this test session."""
    key = (name, dtype, str(device), d, m, n)
    if key not in _CACHE:
        gen = torch.Generator().manual_seed(0)
        X = torch.rand(n, d, generator=gen, dtype=torch.float64)
        Y = torch.cat([objective(X) * (j + 1) + j for j in range(m)], -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # float32 input warnings, rare divergences of the short runs
            _CACHE[key] = make_surrogate(name, X.to(device, dtype), Y.to(device, dtype), seed=0, **FAST[name])
    return _CACHE[key]


@pytest.fixture
def fit():
    """``fit(name, dtype, device, d=2, m=1, n=12)``: a cached fitted surrogate."""
    return fitted


@pytest.fixture
def fast() -> dict:
    """The per-surrogate test options."""
    return FAST


@pytest.fixture(name="objective")
def objective_fixture():
    """The smooth test function ``[n, d] -> [n, 1]``."""
    return objective
