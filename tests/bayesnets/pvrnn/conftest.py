"""Fixtures for the PV-RNN tests: one thread, and small trained models shared within a module."""

from __future__ import annotations

import os

import pytest
import torch

from bayesnets.pvrnn import PVRNN, PFSMTrajectories, train_pvrnn

# The same device the root conftest's `device` fixture gives; module-scoped fixtures cannot use
# that function-scoped fixture, and training once per module keeps these tests inside budget.
DEVICE = torch.device(os.environ.get("BAYESNETS_DEVICE", "cpu"))
TKWARGS = {"device": DEVICE, "dtype": torch.float64}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These RNNs run thousands of tiny sequential ops: intra-op threads only add synchronisation,
    which costs several-fold on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pfsm_data(num_sequences: int, num_steps: int, seed: int) -> torch.Tensor:
    """Trajectories ``[N, T, 2]`` of the default finite-state machine, on the test device in float64."""
    x, _ = PFSMTrajectories().sample(num_sequences, num_steps, generator=torch.Generator().manual_seed(seed))
    return x.to(**TKWARGS)


def trained(meta_prior: float, seed: int = 0, num_steps: int = 300, hidden: int = 16):
    """A one-layer PV-RNN trained on 8 sequences of 40 steps, and its fit."""
    x = pfsm_data(8, 40, seed=100 + seed)
    with torch.random.fork_rng(devices=[DEVICE] if DEVICE.type == "cuda" else []):
        torch.manual_seed(seed)
        model = PVRNN(2, (hidden,), (2,), (2.0,), meta_prior=meta_prior).to(**TKWARGS)
        fit = train_pvrnn(model, x, num_steps=num_steps, lr=1e-2, progress=False)
    return model, fit, x


@pytest.fixture(scope="module")
def pfsm():
    """The data helper :func:`pfsm_data` (fixtures are how test modules share code here)."""
    return pfsm_data


@pytest.fixture(scope="module")
def train_small():
    """The training helper :func:`trained`."""
    return trained


@pytest.fixture(scope="module")
def trained_pvrnn():
    """A PV-RNN trained at an intermediate meta-prior (w = 0.01): ``(model, fit, x_train)``."""
    return trained(0.01, seed=0, num_steps=200)
