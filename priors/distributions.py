"""Small helpers for torch/Pyro distributions shared by priors and likelihoods."""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor
from torch.distributions import Distribution


def move_distribution(d: Distribution, like: Tensor) -> Distribution:
    """Rebuild ``d`` with its parameters on ``like``'s device and dtype.

    Distributions are not ``nn.Module``s, so ``module.to(device)`` does not move the
    hyperpriors a user hands us. Rebuilding from ``arg_constraints`` covers the
    torch and Pyro distributions with tensor parameters (Normal, HalfNormal, Gamma,
    LogNormal, HalfCauchy, InverseGamma, Exponential, ...).

    Args:
        d: any distribution whose constructor takes its ``arg_constraints`` by name.
        like: a tensor whose device and floating dtype the result should use.

    Returns:
        The same distribution (not a copy) when nothing needs to move.
    """
    params = {}
    moved = False
    for name in _rebuild_args(type(d)):
        value = getattr(d, name)
        if isinstance(value, Tensor):
            target_dtype = like.dtype if value.is_floating_point() else value.dtype
            moved = moved or value.device != like.device or value.dtype != target_dtype
            value = value.to(device=like.device, dtype=target_dtype)
        params[name] = value
    if not moved:
        return d
    return type(d)(**params, validate_args=False)


@functools.cache
def _rebuild_args(cls: type) -> tuple[str, ...]:
    """Constructor arguments of a distribution class that are among its ``arg_constraints``."""
    accepted = inspect.signature(cls.__init__).parameters
    names = [n for n in cls.arg_constraints if n in accepted] if isinstance(cls.arg_constraints, dict) else []
    if "probs" in names and "logits" in names:  # one parameterisation suffices
        names.remove("probs")
    return tuple(names)


def as_tensor_like(value: float | Tensor, like: Tensor) -> Tensor:
    """``value`` as a tensor on ``like``'s device with ``like``'s floating dtype."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)
