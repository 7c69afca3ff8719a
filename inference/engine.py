"""The engine contract: ``Engine(**settings).fit(model, x, y, progress=True) -> Posterior``.

Shared plumbing lives here: data checks (the model's own ``check_data`` when it has
one), the model-kind tests engines branch on and the settings every sampler shares; seeding
is :mod:`inference.seeding`, settings checks :mod:`inference.checks`, and the model-to-density
adapter :mod:`inference.density`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from inference.checks import Configurable, check_init, check_int
from inference.data import check_data
from inference.posterior import Posterior
from inference.seeding import base_seed, seeded

__all__ = ["Engine", "base_seed", "chain_settings", "float_like", "has_fast_density", "prepare_data", "seeded"]


def has_fast_density(model: Any) -> bool:
    """Whether ``model`` exposes the functional form engines can use without Pyro tracing."""
    return all(hasattr(model, a) for a in ("log_density", "init_params", "constrain"))


def prepare_data(model: Any, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Validate data for ``model``; returns ``(x, y)`` in the model's canonical form."""
    if hasattr(model, "check_data"):
        return model.check_data(x, y)
    check_data(x, y)
    return x, y


def float_like(x: Tensor) -> Tensor:
    """The dtype and device reference for new parameters: ``x`` itself when it is floating
    point, else a 0-d tensor of the default dtype on ``x``'s device (integer inputs, e.g. tokens)."""
    return x if x.is_floating_point() else torch.zeros((), device=x.device)


def chain_settings(num_warmup: Any, num_samples: Any, num_chains: Any, init: str) -> tuple[int, int, int, str]:
    """The settings every sampler shares, checked: ``self.num_warmup, self.num_samples,
    self.num_chains, self.init = chain_settings(num_warmup, num_samples, num_chains, init)``.

    Raises:
        ValueError: ``num_warmup < 0``, ``num_samples < 1``, ``num_chains < 1`` or an unknown
            ``init`` (:data:`~inference.checks.INIT_STRATEGIES`).
    """
    return (check_int(num_warmup, "num_warmup", 0), check_int(num_samples, "num_samples"),
            check_int(num_chains, "num_chains"), check_init(init))


class Engine(Configurable, ABC):
    """Base class of inference engines: settings in ``__init__``, data in :meth:`fit`.

    Engines never print; they report through a tqdm bar (``progress=False`` turns it
    off), warnings, and :attr:`Posterior.stats`.
    """

    @abstractmethod
    def fit(self, model: Any, x: Tensor, y: Tensor | None = None, progress: bool = True) -> Posterior:
        """Condition ``model`` on ``(x, y)`` and return its posterior."""


