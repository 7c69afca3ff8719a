"""Input checks shared by every model and engine, and minibatch streams for the stochastic ones."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader

__all__ = ["check_data", "loader_batches", "minibatch_indices"]


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


def minibatch_indices(num_data: int, batch_size: int, num_chains: int,
                      device: torch.device | str | None = None) -> Iterator[Tensor]:
    """Endless per-chain minibatch indices, ``[num_chains, batch_size]`` each.

    Every chain walks through its own random permutation of ``range(num_data)`` in
    consecutive blocks and reshuffles when fewer than ``batch_size`` indices are left
    (those few are skipped for that epoch, as ``drop_last=True`` does). Each block is a
    uniform random subset drawn without replacement, so ``N / B`` times its log-likelihood
    is unbiased for the full-data term; chains draw independent subsets, so their gradient
    noise is independent too.

    Args:
        num_data: dataset size ``N``.
        batch_size: ``B`` with ``1 <= B <= N``.
        num_chains: independent index streams.
        device: where the indices live (the data's device).
    """
    if not 1 <= batch_size <= num_data:
        raise ValueError(f"batch_size must be between 1 and the number of observations ({num_data}), "
                         f"got {batch_size}")
    per_epoch = num_data // batch_size
    while True:
        # argsort of uniform noise gives an independent permutation per row, in one call.
        perm = torch.rand(num_chains, num_data, device=device).argsort(dim=1)
        for i in range(per_epoch):
            yield perm[:, i * batch_size:(i + 1) * batch_size]


def loader_batches(loader: DataLoader, count: int) -> Iterator[list[tuple[Tensor, Tensor | None]]]:
    """Endless groups of ``count`` consecutive batches from a ``DataLoader`` (one per chain).

    The loader is restarted whenever it runs out, so its own shuffling gives each epoch a
    fresh order. Batches must be ``x`` or ``(x, y)`` tensors. Batches smaller than the
    loader's first batch (the last one of an epoch when ``N`` is not a multiple of the
    batch size) are skipped, as with ``drop_last=True``, so a group can be stacked.

    Raises:
        TypeError: a batch is not ``x`` or ``(x, y)``.
        ValueError: the loader yields no batch.
    """
    size: int | None = None
    group: list[tuple[Tensor, Tensor | None]] = []  # may span the end of an epoch
    while True:
        empty = True
        for batch in loader:
            empty = False
            if isinstance(batch, Tensor):
                xb, yb = batch, None
            elif isinstance(batch, (tuple, list)) and len(batch) in (1, 2) and all(
                    isinstance(t, Tensor) for t in batch):
                xb, yb = batch[0], (batch[1] if len(batch) == 2 else None)
            else:
                raise TypeError("a DataLoader given as data must yield x or (x, y) tensors, got a batch of type "
                                f"{type(batch).__name__}")
            size = xb.shape[0] if size is None else size
            if xb.shape[0] != size:
                continue
            group.append((xb, yb))
            if len(group) == count:
                yield group
                group = []
        if empty:
            raise ValueError("the DataLoader yielded no batches")
