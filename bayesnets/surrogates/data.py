"""Checks on the training data every surrogate gets at the BoTorch boundary."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_train_data"]


def check_train_data(train_X: Tensor, train_Y: Tensor) -> None:
    """``train_X`` must be a finite floating ``[n, d]``, ``train_Y`` a finite ``[n, m]`` of its dtype and device.

    Raises:
        TypeError: not tensors, or not floating point.
        ValueError: a shape, dtype, device or value problem, naming the argument.
    """
    for name, t in (("train_X", train_X), ("train_Y", train_Y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point (float32 or float64), got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D ([n, d] for train_X, [n, m] for train_Y), got shape {tuple(t.shape)}")
    if train_X.shape[0] == 0:
        raise ValueError("train_X is empty: a surrogate needs at least one observation")
    if train_Y.shape[0] != train_X.shape[0]:
        raise ValueError(f"train_Y must have one row per row of train_X ([{train_X.shape[0]}, m]), "
                         f"got shape {tuple(train_Y.shape)}")
    if train_X.dtype != train_Y.dtype or train_X.device != train_Y.device:
        raise ValueError(f"train_X and train_Y must share dtype and device, got {train_X.dtype} on {train_X.device} "
                         f"and {train_Y.dtype} on {train_Y.device}")
    if not bool(torch.isfinite(train_X).all()):
        raise ValueError("train_X contains NaN or infinite values")
    if not bool(torch.isfinite(train_Y).all()):
        raise ValueError("train_Y contains NaN or infinite values; drop those observations before fitting")
