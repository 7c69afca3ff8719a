"""Flat views of a model's latent sites, for engines that work on ``[chains, D]`` vectors.

Samplers and optimisers are simplest on one flat vector per chain; models speak in
dicts of named tensors. :class:`FlatView` converts between the two (with any leading
batch dims), and :func:`batched_potential` turns a model's ``log_density`` into a
function of ``[chains, D]`` that returns the log density and its gradient for every
chain in one vectorised call (``torch.func.vmap`` over ``grad_and_value``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

__all__ = ["FlatView", "batched_potential"]


class FlatView:
    """Ravel a dict of tensors ``name -> [*batch, *shape]`` into ``[*batch, D]`` and back.

    Args:
        shapes: site name -> event shape, in a fixed order (the order of the flat vector).
    """

    def __init__(self, shapes: Mapping[str, torch.Size]) -> None:
        if not shapes:
            raise ValueError("shapes must name at least one site")
        self.shapes = {n: torch.Size(s) for n, s in shapes.items()}
        self.sizes = [math.prod(s) for s in self.shapes.values()]
        self.size = sum(self.sizes)

    def ravel(self, params: Mapping[str, Tensor]) -> Tensor:
        """``{name: [*batch, *shape]}`` -> ``[*batch, D]`` (sites in this view's order)."""
        parts = []
        for name, shape in self.shapes.items():
            if name not in params:
                raise ValueError(f"params lacks site {name!r}")
            v = params[name]
            batch = v.shape[: v.dim() - len(shape)]
            if v.shape[v.dim() - len(shape):] != shape:
                raise ValueError(f"site {name!r} must end in shape {tuple(shape)}, got {tuple(v.shape)}")
            parts.append(v.reshape((*batch, -1)))
        return torch.cat(parts, -1)

    def unravel(self, flat: Tensor) -> dict[str, Tensor]:
        """``[*batch, D]`` -> ``{name: [*batch, *shape]}`` (views, no copies)."""
        if flat.shape[-1] != self.size:
            raise ValueError(f"flat must have last dimension {self.size}, got shape {tuple(flat.shape)}")
        batch = flat.shape[:-1]
        out = {}
        for (name, shape), piece in zip(self.shapes.items(), flat.split(self.sizes, -1)):
            out[name] = piece.reshape(batch + shape)
        return out


def batched_potential(model: Any, x: Tensor, y: Tensor | None, view: FlatView | None = None,
                      num_data: int | None = None) -> tuple[FlatView, Callable[[Tensor], tuple[Tensor, Tensor]]]:
    """Log density and gradient of a model for many chains at once.

    Args:
        model: a model with ``log_density(params, x, y, num_data=None)`` and
            ``latent_shapes(like)`` (e.g. :class:`bayesnets.bnn.BayesianNet`).
        x, y: the (already checked) data.
        view: the flat layout to use (default: the model's latent sites in order).
        num_data: passed to ``log_density`` for minibatch rescaling.

    Returns:
        ``(view, fn)`` where ``fn(z)`` takes ``z`` of shape ``[chains, D]`` (unconstrained)
        and returns ``(grad [chains, D], log_density [chains])``.
    """
    if view is None:
        like = x if x.is_floating_point() else torch.zeros(())
        view = FlatView(model.latent_shapes(like))

    def one(z: Tensor) -> Tensor:
        return model.log_density(view.unravel(z), x, y, num_data=num_data)

    return view, vmap(grad_and_value(one))
