"""The engine contract: ``Engine(**settings).fit(model, x, y, progress=True) -> Posterior``.

Shared plumbing lives here: data checks (the model's own ``check_data`` when it has
one) and the model-kind tests engines branch on; seeding is :mod:`inference.seeding`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor

from inference.data import check_data
from inference.posterior import Posterior
from inference.seeding import base_seed, seeded

__all__ = ["Engine", "base_seed", "has_fast_density", "prepare_data", "seeded"]


def has_fast_density(model: Any) -> bool:
    """Whether ``model`` exposes the functional form engines can use without Pyro tracing."""
    return all(hasattr(model, a) for a in ("log_density", "init_params", "constrain"))


def prepare_data(model: Any, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Validate data for ``model``; returns ``(x, y)`` in the model's canonical form."""
    if hasattr(model, "check_data"):
        return model.check_data(x, y)
    check_data(x, y)
    return x, y


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
