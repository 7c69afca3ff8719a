"""Deprecated: the flat views and batched potentials moved to :mod:`inference.density` in 0.2.

This module goes in 0.3. Its names still work, each with a ``DeprecationWarning``:
``FlatView``, ``ELEMENTWISE_ACTIVATIONS`` and ``autograd_value_and_grad`` (now
``autograd_grad_and_value``) are those of :mod:`inference.density`, and the two potential
builders return ``(view, fn)`` from a :class:`~inference.density.Potential`, with the same
numbers as before.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import Tensor

from inference.checks import renamed_attributes
from inference.density import make_potential

if TYPE_CHECKING:  # not bound at run time, so that inference.flat.FlatView warns
    from inference.density import FlatView

__all__: list[str] = []

__getattr__ = renamed_attributes(__name__, {
    "FlatView": "inference.density:FlatView",
    "ELEMENTWISE_ACTIVATIONS": "inference.density:ELEMENTWISE_ACTIVATIONS",
    "autograd_value_and_grad": "inference.density:autograd_grad_and_value",
})

_Built = tuple["FlatView", Callable[[Tensor], tuple[Tensor, Tensor]]]


def _built(old: str, new: str, model: Any, x: Tensor, y: Tensor | None, view: FlatView | None,
           num_data: int | None, **options: Any) -> tuple[Any, _Built]:
    warnings.warn(f"inference.flat.{old} is deprecated; use inference.density.{new}", DeprecationWarning,
                  stacklevel=3)
    potential = make_potential(model, x, y, num_data, **options)
    if view is not None:
        potential.view = view
    return potential, (potential.view, potential.bind(x, y))


def batched_potential(model: Any, x: Tensor, y: Tensor | None, view: FlatView | None = None,
                      num_data: int | None = None) -> _Built:
    """Deprecated: ``make_potential(model, x, y, num_data, mlp=False, gradient="vmap")``, then its
    ``view`` and ``bind(x, y)``."""
    return _built("batched_potential", 'make_potential(model, x, y, mlp=False, gradient="vmap").bind(x, y)',
                  model, x, y, view, num_data, mlp=False, gradient="vmap")[1]


def mlp_potential(model: Any, x: Tensor, y: Tensor | None, view: FlatView | None = None,
                  num_data: int | None = None) -> _Built | None:
    """Deprecated: ``make_potential(model, x, y, num_data)`` (its ``path`` is ``"mlp"`` for an MLP
    BayesianNet), then its ``view`` and ``bind(x, y)``; ``None`` for any other model."""
    if not all(hasattr(model, a) for a in ("log_density", "init_params", "constrain", "latent_shapes")):
        warnings.warn("inference.flat.mlp_potential is deprecated; use inference.density.make_potential",
                      DeprecationWarning, stacklevel=2)
        return None
    potential, built = _built("mlp_potential", "make_potential(model, x, y).bind(x, y)", model, x, y, view,
                              num_data)
    return built if potential.path == "mlp" else None
