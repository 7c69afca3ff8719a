"""Seeding: every random stream a fit uses, seeded by one number, the caller's state untouched.

Engines and trainers draw from torch's global generators (dropout, Pyro's samplers, task
priors) and sometimes from Python's and NumPy's legacy global generators (Pyro seeds all
three). :func:`seeded` seeds them for the length of a block and then restores whatever the
caller had, so a fit with ``seed=s`` gives the same numbers wherever it is called from and
leaves the surrounding program's random sequence as it was.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import pyro
import torch
from torch import Tensor

__all__ = ["base_seed", "seeded"]


def base_seed(seed: int | None) -> int:
    """``seed`` as an int, or one drawn from torch's global generator when ``None`` (so that
    seeding torch makes every engine and trainer reproducible)."""
    if seed is not None:
        return int(seed)
    return int(torch.randint(0, 2**31 - 1, ()).item())


@contextlib.contextmanager
def seeded(seed: int, like: Tensor | torch.device | None = None) -> Iterator[None]:
    """Run a block with torch's (CPU and, for a CUDA ``like``, that device's), Python's and
    NumPy's global generators seeded by ``seed``; restore the caller's states afterwards.

    Args:
        seed: the seed (torch's streams are then exactly those of ``torch.manual_seed(seed)``).
        like: a tensor or device whose CUDA generator is also forked and seeded.
    """
    device = like.device if isinstance(like, Tensor) else like
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        # Pyro seeds the legacy global NumPy and Python generators too; put them back.
        py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
        try:
            pyro.set_rng_seed(seed)
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002
