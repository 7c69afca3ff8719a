"""Spatial learning through time (SLTT) for spiking networks, and the BPTT step it replaces.

Meng, Xiao, Yan, Wang, Lin and Luo, "Towards Memory- and Time-Efficient Backpropagation
for Training Spiking Neural Networks", ICCV 2023, arXiv:2302.14311 (P43).

Backpropagation through time (BPTT) keeps the whole unrolled graph of ``T`` steps, so
memory grows linearly with ``T``. SLTT observes that the temporal paths (through the
membrane potential ``v[t-1]``) carry little of the gradient for LIF neurons and drops them:
each step's loss ``l_t = ((1 - lambda) CE(o_t, y) + lambda MSE(o_t, onehot(y))) / T`` is
backpropagated *at that step*, through the step's spatial graph only, and the graph is
freed before the next step. Peak memory is one step's graph, whatever ``T``. SLTT-K
backpropagates only at ``K`` randomly chosen steps (the others run without a graph), which
also cuts time.

The model protocol (e.g. :class:`bayesnets.nn.spiking.SpikingMLP`):

* ``model.step(x_t, state) -> (out_t, state)``; ``state`` is ``None`` at ``t = 0`` and a
  list of tensors afterwards;
* optionally ``model.sequence(x) -> [T, N, ...]`` (static inputs repeated, or sequences
  made time-major); without it ``x`` must already be time-major ``[T, N, ...]``.

:class:`SavedTensorMeter` measures the bytes autograd keeps alive for backward, which is
how the tests check that SLTT's memory does not grow with ``T`` on any device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from inference.checks import check_int
from inference.seeding import base_seed, seeded
from inference.training.fit import Fit
from inference.training.loop import Minibatches
from inference.training.trainer import Trainer

__all__ = ["LOSS_LAMBDA", "SLTTTrainer", "SavedTensorMeter", "bptt_step", "sltt_loss", "sltt_step"]

#: Weight of the MSE term in the per-step loss (official default ``-loss_lambda 0.05``).
LOSS_LAMBDA = 0.05

Loss = Callable[[Tensor, Tensor], Tensor]


def sltt_loss(out: Tensor, y: Tensor, loss_lambda: float = LOSS_LAMBDA) -> Tensor:
    """``(1 - lambda) CE(out, y) + lambda MSE(out, onehot(y))`` for logits ``[N, C]`` and labels ``[N]``."""
    if out.dim() != 2 or y.shape != out.shape[:1]:
        raise ValueError(f"out must be [N, C] logits and y [N] labels, got {tuple(out.shape)} and {tuple(y.shape)}")
    onehot = F.one_hot(y.long(), out.shape[-1]).to(out.dtype)
    return (1 - loss_lambda) * F.cross_entropy(out, y.long()) + loss_lambda * F.mse_loss(out, onehot)


def _time_major(model: nn.Module, x: Tensor) -> Tensor:
    if not callable(getattr(model, "step", None)):
        raise TypeError(f"model must have a step(x_t, state) -> (out, state) method, {type(model).__name__} has none")
    return model.sequence(x) if hasattr(model, "sequence") else x


def _chosen_steps(num_steps: int, k: int | None, generator: torch.Generator | None) -> set[int]:
    if k is None:
        return set(range(num_steps))
    if not 1 <= int(k) <= num_steps:
        raise ValueError(f"K must be in [1, T = {num_steps}], got {k}")
    return set(torch.randperm(num_steps, generator=generator)[: int(k)].tolist())


def sltt_step(model: nn.Module, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer | None = None,
              K: int | None = None, loss_fn: Loss | None = None, loss_lambda: float = LOSS_LAMBDA,
              generator: torch.Generator | None = None) -> Tensor:
    """One SLTT (or SLTT-K) training step: per-step losses, backpropagated online.

    The model's gradients are reset first, then accumulate the spatial-only gradient of
    ``sum_t l_t`` (``t`` over the chosen steps); the state passed between steps is
    detached, so no temporal path exists. With an ``optimizer`` its ``step()`` is taken.

    Args:
        model: a step model (see the module docstring).
        x: inputs (``model.sequence`` form, or time-major ``[T, N, ...]``).
        y: targets for ``loss_fn`` (default: labels ``[N]`` for :func:`sltt_loss`).
        optimizer: optional optimizer to step after the gradients are in place.
        K: SLTT-K: backpropagate at ``K`` random steps only (default: every step).
        loss_fn: ``(out_t, y) -> scalar``; divided by ``T`` per step.
        loss_lambda: MSE weight of the default loss.
        generator: torch generator for SLTT-K's choice of steps.

    Returns:
        The detached total loss ``sum_t l_t`` over all ``T`` steps.
    """
    seq = _time_major(model, x)
    num_steps = seq.shape[0]
    train = _chosen_steps(num_steps, K, generator)
    loss_fn = (lambda out, target: sltt_loss(out, target, loss_lambda)) if loss_fn is None else loss_fn
    model.zero_grad(set_to_none=True)
    state: Any = None
    total = torch.zeros((), dtype=seq.dtype if seq.is_floating_point() else torch.get_default_dtype(),
                        device=seq.device)
    for t in range(num_steps):
        with torch.set_grad_enabled(t in train):
            out, state = model.step(seq[t], state)
            loss = loss_fn(out, y) / num_steps
        if t in train:
            loss.backward()  # frees this step's graph before the next step is built
        state = [s.detach() for s in state]  # spatial-only: nothing links step t+1 to step t
        total = total + loss.detach()
    if optimizer is not None:
        optimizer.step()
    return total


def bptt_step(model: nn.Module, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer | None = None,
              loss_fn: Loss | None = None, loss_lambda: float = LOSS_LAMBDA) -> Tensor:
    """The BPTT baseline: the same per-step losses, one backward through the unrolled graph.

    Temporal paths are kept (unless the model's neurons detach them), so memory grows with
    ``T``. Same arguments and return value as :func:`sltt_step`.
    """
    seq = _time_major(model, x)
    num_steps = seq.shape[0]
    loss_fn = (lambda out, target: sltt_loss(out, target, loss_lambda)) if loss_fn is None else loss_fn
    model.zero_grad(set_to_none=True)
    state: Any = None
    total = None
    for t in range(num_steps):
        out, state = model.step(seq[t], state)
        loss = loss_fn(out, y) / num_steps
        total = loss if total is None else total + loss
    total.backward()  # type: ignore[union-attr]
    if optimizer is not None:
        optimizer.step()
    return total.detach()  # type: ignore[union-attr]


class SLTTTrainer(Trainer):
    """Train a spiking step model with SLTT (or SLTT-K) on minibatches: :func:`sltt_step` in the
    shared loop (optimiser, schedule, clipping, checkpoints, history) instead of a hand loop.

    Args:
        num_steps: optimiser steps (one minibatch each).
        K: SLTT-K: backpropagate at ``K`` random time steps per batch (default: every step).
        loss_lambda: MSE weight of the default per-step loss :func:`sltt_loss`.
        loss_fn: ``(out_t, y) -> scalar`` instead of the default loss.
        Other arguments as for :class:`~inference.training.trainer.Trainer` (default: Adam, lr
        1e-3; the paper trains with SGD or Adam and a cosine schedule, ``schedule="cosine"``).

    Example:
        >>> fit = SLTTTrainer(num_steps=200, batch_size=32).fit(SpikingMLP(4, [64], 3), (x, y))
        >>> fit.history["loss"]        # [200]
    """

    def __init__(self, num_steps: int = 1000, *, K: int | None = None, loss_lambda: float = LOSS_LAMBDA,
                 loss_fn: Loss | None = None, **loop: Any) -> None:
        super().__init__(num_steps, **loop)
        self.K = None if K is None else check_int(K, "K")
        self.loss_lambda = float(loss_lambda)
        self._loss_fn = loss_fn

    def fit(self, model: nn.Module, data: tuple[Tensor, Tensor] | DataLoader, progress: bool = True) -> Fit:
        """Train ``model`` (in place) on ``data``: ``(x, y)`` tensors (minibatches of
        ``batch_size`` rows, default all) or a ``DataLoader`` of ``(x, y)`` batches.

        Returns:
            A :class:`~inference.training.fit.Fit` with ``history["loss"]`` (``sum_t l_t`` per step).
        """
        if not callable(getattr(model, "step", None)):
            raise TypeError(f"model must have a step(x_t, state) -> (out, state) method, {type(model).__name__} "
                            "has none")
        seed = base_seed(self.seed)
        with seeded(seed):
            if isinstance(data, DataLoader):
                batches: Any = data
            elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
                gen = torch.Generator().manual_seed(seed)
                batches = Minibatches(*data, batch_size=self.batch_size, generator=gen)
            else:
                raise TypeError(f"data must be (x, y) tensors or a DataLoader of (x, y) batches, got "
                                f"{type(data).__name__}")
            step_gen = torch.Generator().manual_seed(seed + 1)  # SLTT-K's choice of time steps
            model.train()

            def loss(batch: tuple[Tensor, Tensor]) -> Tensor:
                x, y = batch
                return sltt_step(model, x, y, K=self.K, loss_fn=self._loss_fn, loss_lambda=self.loss_lambda,
                                 generator=step_gen)

            result = self._optimize(model, loss, batches=batches, backward=False, progress=progress,
                                    generators={"time_steps": step_gen})
        model.eval()
        return Fit(model, result.history, self._record(result, seed))


class _Held:
    """A tensor autograd saved for backward, counted while the graph keeps it alive."""

    __slots__ = ("meter", "nbytes", "tensor")

    def __init__(self, tensor: Tensor, meter: SavedTensorMeter) -> None:
        self.tensor, self.meter = tensor, meter
        self.nbytes = tensor.numel() * tensor.element_size()
        meter.current += self.nbytes
        meter.peak = max(meter.peak, meter.current)

    def __del__(self) -> None:
        self.meter.current -= self.nbytes


class SavedTensorMeter:
    """Peak bytes of tensors that autograd graphs hold for backward at the same time.

    A context manager over ``torch.autograd.graph.saved_tensors_hooks``: each saved tensor
    is counted from the moment it is saved until its graph is freed (after ``backward``, or
    when the graph is dropped). Device-independent and deterministic, unlike allocator
    statistics; it measures the activation memory that BPTT and SLTT differ in (tensors
    saved more than once are counted each time).

    Example:
        >>> with SavedTensorMeter() as meter:
        ...     sltt_step(model, x, y)
        >>> meter.peak
    """

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self._hooks: Any = None

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: _Held(t, self), lambda h: h.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
