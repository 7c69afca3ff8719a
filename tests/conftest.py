"""Shared fixtures: the device under test, seeding, and a clean Pyro state per test.

``BAYESNETS_DEVICE=cuda pytest`` runs the same tests on a GPU (default: cpu).
"""

from __future__ import annotations

import os
import warnings

import matplotlib
import pyro
import pytest
import torch

matplotlib.use("Agg")  # tests never open windows

# The tests use small tensors, where intra-op threads cost more than they give: measured
# on the 2-core CI machine, one thread ran the kernel tests in 31 s against 83 s with two.
torch.set_num_threads(1)

DEVICE = torch.device(os.environ.get("BAYESNETS_DEVICE", "cpu"))


@pytest.fixture
def device() -> torch.device:
    """The device every test's tensors and models go to."""
    return DEVICE


@pytest.fixture
def tkwargs(device: torch.device) -> dict:
    """float64 on the test device: statistical tests compare against closed forms."""
    return {"device": device, "dtype": torch.float64}


@pytest.fixture(autouse=True)
def _seed_and_reset():
    """Every test starts from the same random state and an empty Pyro param store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        yield
