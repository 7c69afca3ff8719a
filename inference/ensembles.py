"""Deep ensembles: independently fitted MAP (or maximum-likelihood) members, each on a random subset.

As in the BNN-surrogate study of Li, Rudner & Wilson (ICLR 2024, arXiv:2305.20028; P24),
every member starts from its own prior draw and is fitted on its own random
``bootstrap_fraction`` (80%) of the rows, drawn without replacement (their ``train_prop``;
not a with-replacement bootstrap). Lakshminarayanan et al. (2017, arXiv:1612.01474)
introduced deep ensembles.

All members are trained at once: their parameters are the rows of one ``[members, D]``
tensor, the per-member objectives come from one ``vmap``-ed call (each member on its own
rows), and one torch optimiser steps the whole tensor. Elementwise optimisers (SGD, Adam,
RMSprop, ...) then update each member exactly as if it were trained alone; optimisers that
mix coordinates (LBFGS) would couple the members and are refused.

The result is a :class:`~inference.posterior.Posterior` with one chain whose draws are the
members: draws ``[1, num_members, ...]`` (members are exchangeable samples, like draws of a
single chain, and ArviZ's ESS then counts them as independent draws).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from inference.checks import (
    check_choice,
    check_float,
    check_init,
    check_int,
    check_name_or_callable,
    positive_float,
    renamed_kwargs,
)
from inference.data import minibatch_indices
from inference.density import make_potential
from inference.engine import Engine, base_seed, float_like, prepare_data, seeded
from inference.posterior import Posterior

__all__ = ["OPTIMIZERS", "DeepEnsemble"]

#: Optimisers by name; all are elementwise, so members train independently.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


class DeepEnsemble(Engine):
    """An ensemble of MAP (or maximum-likelihood) fits on random subsets of the data.

    Args:
        num_members: ensemble size (P24 used 10).
        bootstrap_fraction: share of the rows each member sees, in (0, 1] (P24: 0.8); the
            subsets are drawn without replacement, independently per member.
        optimizer: ``"adam"``, ``"sgd"``, ``"rmsprop"`` or a callable
            ``params -> torch.optim.Optimizer`` (e.g. ``functools.partial(torch.optim.Adam,
            lr=1e-3)``); it gets one ``[num_members, D]`` tensor.
        lr: learning rate for a named optimiser.
        num_epochs: passes over each member's subset (one step per pass when ``batch_size`` is
            None: P24 used 1000 full-batch Adam steps); ``epochs`` before 0.2, accepted with a
            ``DeprecationWarning`` until 0.3.
        batch_size: rows per step (``None``: the whole subset); minibatch log-likelihoods are
            rescaled to the subset size.
        objective: ``"map"`` (log joint in unconstrained space: log-likelihood + log prior +
            log-Jacobians) or ``"ml"`` (log-likelihood only; latent sites that the likelihood
            does not see, such as hierarchical prior scales, then stay at their start values).
        init: start points: ``"prior"``, ``"module"`` (the module's weights, the same for
            all members: only the subsets then differ) or ``"zeros"``.
        seed: base seed; ``None`` draws one from torch's global generator.

    The loss minimised is ``-objective / n_subset`` per member (a per-row scale, so
    learning rates do not depend on the data size).
    """

    @renamed_kwargs(epochs="num_epochs")
    def __init__(self, num_members: int = 10, bootstrap_fraction: float = 0.8,
                 optimizer: str | Callable[[Iterable[Tensor]], torch.optim.Optimizer] = "adam", lr: float = 1e-2,
                 num_epochs: int = 1000, batch_size: int | None = None, objective: str = "map",
                 init: str = "prior", seed: int | None = None) -> None:
        self.num_members = check_int(num_members, "num_members")
        self.bootstrap_fraction = check_float(bootstrap_fraction, "bootstrap_fraction", 0.0, 1.0, low_open=True)
        self.optimizer = check_name_or_callable(optimizer, "optimizer", OPTIMIZERS, "params -> Optimizer")
        self._optimizer = optimizer
        self.lr = positive_float(lr, "lr")
        self.num_epochs = check_int(num_epochs, "num_epochs")
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size")
        self.objective = check_choice(objective, "objective", ("map", "ml"))
        self.init = check_init(init)
        self.seed = seed

    def _make_optimizer(self, z: Tensor) -> torch.optim.Optimizer:
        if isinstance(self._optimizer, str):
            opt = OPTIMIZERS[self._optimizer]([z], lr=self.lr)
        else:
            opt = self._optimizer([z])
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optimizer must build a torch.optim.Optimizer, got {type(opt).__name__}")
        if isinstance(opt, torch.optim.LBFGS):
            raise ValueError("LBFGS mixes coordinates and would couple the ensemble members; use an elementwise "
                             "optimiser (Adam, SGD, RMSprop)")
        return opt

    def fit(self, model: Any, x: Tensor, y: Tensor | None = None, progress: bool = True) -> Posterior:
        """Fit ``num_members`` members on their own random subsets of ``(x, y)``.

        Args:
            model: a model with ``log_density`` (e.g. ``BayesianNet``) or any Pyro model
                (through its trace; members then run one after another each step).
            x: inputs ``[N, ...]`` (tensors; a DataLoader cannot be subset per member).
            y: targets for ``x``.

        Returns:
            Posterior with draws ``[1, num_members, ...]``; ``stats["lp"]`` ``[1, num_members]``
            (each member's final objective on its subset), ``stats["loss"]``
            ``[1, num_members, num_epochs]`` (the per-row loss after each epoch) and
            ``stats["subsets"]`` ``[1, num_members, n_subset]`` (the rows each member saw).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor [N, ...] (DeepEnsemble draws per-member row subsets), got "
                            f"{type(x).__name__}")
        x, y = prepare_data(model, x, y)
        n = x.shape[0]
        n_sub = max(1, round(self.bootstrap_fraction * n))
        b = n_sub if self.batch_size is None else self.batch_size
        if b > n_sub:
            raise ValueError(f"batch_size ({b}) must not exceed each member's subset size "
                             f"({n_sub} = {self.bootstrap_fraction} of N={n})")
        like = float_like(x)
        seed = base_seed(self.seed)
        m = self.num_members
        start = time.perf_counter()
        with seeded(seed, like):
            subsets = torch.rand(m, n, device=x.device).argsort(dim=1)[:, :n_sub]
            xs = x[subsets]
            ys = y[subsets] if y is not None else None
            # 0.1's numerics (same members): vmapped forward, one backward pass, no MLP form.
            potential = make_potential(model, xs[0, :b], ys[0, :b] if ys is not None else None, n_sub,
                                       likelihood_only=self.objective == "ml", mlp=False)
            z = potential.init(m, self.init, like).clone().requires_grad_(True)
            opt = self._make_optimizer(z)
            loss = torch.empty(m, self.num_epochs, dtype=z.dtype, device=z.device)
            per_epoch = n_sub // b
            batches = minibatch_indices(n_sub, b, m, x.device) if b < n_sub else None
            rows = torch.arange(m, device=x.device).unsqueeze(-1)
            bar = tqdm(range(self.num_epochs), desc="DeepEnsemble", disable=not progress, leave=False)
            for epoch in bar:
                total = torch.zeros(m, dtype=z.dtype, device=z.device)
                for _ in range(per_epoch):
                    if batches is None:
                        xb, yb = xs, ys
                    else:
                        idx = next(batches)
                        xb, yb = xs[rows, idx], (ys[rows, idx] if ys is not None else None)
                    grad, value = potential(z.detach(), xb, yb, per_chain=True)
                    opt.zero_grad(set_to_none=True)
                    z.grad = -grad / n_sub
                    opt.step()
                    total += value
                loss[:, epoch] = -total / (per_epoch * n_sub)
                if not bool(torch.isfinite(total).all()):  # once per epoch: each check syncs a GPU
                    raise FloatingPointError(f"a member's objective became non-finite in epoch {epoch}: lower lr "
                                             f"(now {self.lr}) or check the model's priors")
                if progress and epoch % 50 == 0:
                    bar.set_postfix(loss=f"{float(loss[:, epoch].mean()):.4g}")
            _, final = potential(z.detach(), xs, ys, per_chain=True)
        draws = potential.constrain(z.detach().unsqueeze(0))
        stats = {"lp": final.unsqueeze(0), "loss": loss.unsqueeze(0), "subsets": subsets.unsqueeze(0)}
        attrs = {"engine": "DeepEnsemble", **self.settings(), "seed": seed, "seconds": time.perf_counter() - start,
                 "subset_size": n_sub}
        return Posterior({k: v.detach() for k, v in draws.items()}, stats, model=model, data=(x, y), attrs=attrs)
