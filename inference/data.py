"""Input checks shared by every model and engine."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_data"]


def check_data(x: Tensor, y: Tensor | None = None) -> None:
    """Shape and value checks shared by every model: ``x`` is ``[N, ...]`` with N >= 1,
    ``y`` (when given) has N rows, and neither holds NaN or infinity.

    Raises:
        TypeError: ``x`` or ``y`` is not a tensor.
        ValueError: a shape or value problem, naming the argument.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape [N, ...features], got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(
            f"x must have shape [N, ...features] (at least 2-D), got shape {tuple(x.shape)}; "
            "for one feature use x.unsqueeze(-1)"
        )
    if x.shape[0] == 0:
        raise ValueError("x is empty: the dataset needs at least one observation (N >= 1)")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite values")
    if y is None:
        return
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor with {x.shape[0]} rows, got {type(y).__name__}")
    if y.dim() == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y must have one row per row of x: x has {x.shape[0]} rows, y has shape {tuple(y.shape)}"
        )
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or infinite values; drop or impute those observations")
    if y.device != x.device:
        raise ValueError(f"x and y must be on the same device, got x on {x.device} and y on {y.device}")
