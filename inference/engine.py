"""The engine contract: ``Engine(**settings).fit(model, x, y, progress=True) -> Posterior``.

Shared plumbing lives here: data checks (the model's own ``check_data`` when it has
one), per-chain seeding that does not clobber the caller's random state, and the
model-kind tests engines branch on.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import pyro
import torch
from torch import Tensor

from inference.data import check_data
from inference.posterior import Posterior

__all__ = ["Engine", "has_fast_density", "prepare_data", "seeded"]


def has_fast_density(model: Any) -> bool:
    """Whether ``model`` exposes the functional form engines can use without Pyro tracing."""
    return all(hasattr(model, a) for a in ("log_density", "init_params", "constrain"))


def prepare_data(model: Any, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Validate data for ``model``; returns ``(x, y)`` in the model's canonical form."""
    if hasattr(model, "check_data"):
        return model.check_data(x, y)
    check_data(x, y)
    return x, y


def base_seed(seed: int | None) -> int:
    """The engine's seed, or one drawn from torch's global generator (so that seeding
    torch makes every engine reproducible)."""
    if seed is not None:
        return int(seed)
    return int(torch.randint(0, 2**31 - 1, ()).item())


@contextlib.contextmanager
def seeded(seed: int, like: Tensor | None = None) -> Iterator[None]:
    """Run a block with every RNG Pyro uses seeded by ``seed``, then restore the
    caller's random state."""
    devices = [like.device] if like is not None and like.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        import random

        import numpy as np

        # Pyro seeds the legacy global NumPy and Python generators too; put them back.
        py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
        try:
            pyro.set_rng_seed(seed)
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


class Engine(ABC):
    """Base class of inference engines: settings in ``__init__``, data in :meth:`fit`.

    Engines never print; they report through a tqdm bar (``progress=False`` turns it
    off), warnings, and :attr:`Posterior.stats`.
    """

    @abstractmethod
    def fit(self, model: Any, x: Tensor, y: Tensor | None = None, progress: bool = True) -> Posterior:
        """Condition ``model`` on ``(x, y)`` and return its posterior."""

    def settings(self) -> dict[str, Any]:
        """JSON-friendly settings recorded in ``Posterior.attrs``."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"
