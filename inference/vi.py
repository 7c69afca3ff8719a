"""Stochastic variational inference with Pyro autoguides.

The guide is optimised by the trainers' loop (:func:`inference.training.loop.optimize`: Adam,
exponential decay to ``final_lr``, a stop at a non-finite ELBO) on Pyro's differentiable ELBO
inside a private scope of Pyro's parameter store, so a fit never reads or overwrites the
caller's parameters (two fits in one session cannot leak into each other). The result is a
:class:`~inference.posterior.Posterior` of ``num_samples`` draws from the fitted guide
(one chain), with the ELBO trace in ``stats["elbo"]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import (
    AutoDelta,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample
from torch import Tensor

from inference.checks import check_float, check_int, check_name_or_callable, positive_float
from inference.engine import Engine, base_seed, prepare_data, seeded
from inference.posterior import Posterior
from inference.training.loop import optimize

__all__ = ["GUIDES", "SVI"]

#: Guide families by name: mean-field normal, low-rank-plus-diagonal normal, full-rank
#: normal, and a point mass (MAP).
GUIDES = {
    "normal": AutoNormal,
    "lowrank": AutoLowRankMultivariateNormal,
    "mvn": AutoMultivariateNormal,
    "delta": AutoDelta,
}


class SVI(Engine):
    """Variational inference: fit an autoguide by maximising the ELBO with Adam.

    Args:
        guide: ``"normal"`` (mean-field), ``"lowrank"``, ``"mvn"`` (full covariance),
            ``"delta"`` (MAP), or a callable ``model -> guide``.
        num_steps: optimisation steps.
        lr: Adam's initial learning rate.
        final_lr: learning rate at the last step (exponential decay from ``lr``); a
            decaying rate removes most of the optimiser's stationary noise.
        num_particles: Monte Carlo samples per ELBO estimate.
        num_samples: draws from the fitted guide kept in the posterior.
        rank: rank of the ``"lowrank"`` guide (default: about sqrt of the latent size).
        init_scale: initial standard deviation of the normal guides.
        seed: base seed; ``None`` draws one from torch's global generator.
    """

    def __init__(self, guide: str | Callable[[Any], Any] = "normal", num_steps: int = 2000, lr: float = 0.01,
                 final_lr: float | None = None, num_particles: int = 1, num_samples: int = 1000,
                 rank: int | None = None, init_scale: float = 0.1, seed: int | None = None) -> None:
        self.guide = check_name_or_callable(guide, "guide", GUIDES, "model -> guide")
        self._guide_fn = guide
        self.num_steps = check_int(num_steps, "num_steps")
        self.lr = positive_float(lr, "lr")
        self.final_lr = self.lr * 0.1 if final_lr is None else check_float(final_lr, "final_lr", 0.0, self.lr,
                                                                          low_open=True)
        self.num_particles = check_int(num_particles, "num_particles")
        self.num_samples = check_int(num_samples, "num_samples")
        self.rank = None if rank is None else check_int(rank, "rank")
        self.init_scale = positive_float(init_scale, "init_scale")
        self.seed = seed

    def _make_guide(self, model: Any) -> Any:
        if callable(self._guide_fn):
            return self._guide_fn(model)
        weights = set(getattr(model, "weight_shapes", {}))

        def init_loc(site: dict[str, Any]) -> Tensor:
            # Network weights start at a prior draw (all-equal weights would keep hidden
            # units symmetric); noise and hyper sites start at their prior median.
            return init_to_sample(site) if site["name"] in weights else init_to_median(site)

        cls = GUIDES[self._guide_fn]
        if cls is AutoDelta:
            return cls(model, init_loc_fn=init_loc)
        if cls is AutoLowRankMultivariateNormal:
            return cls(model, init_loc_fn=init_loc, init_scale=self.init_scale, rank=self.rank)
        return cls(model, init_loc_fn=init_loc, init_scale=self.init_scale)

    def fit(self, model: Any, x: Tensor, y: Tensor | None = None, progress: bool = True) -> Posterior:
        """Fit the guide to ``model`` conditioned on ``(x, y)`` and draw from it.

        Returns:
            Posterior with draws ``[1, num_samples, ...]`` (one draw for ``"delta"``) and
            ``stats["elbo"]`` of shape ``[num_steps]``.
        """
        x, y = prepare_data(model, x, y)
        seed = base_seed(self.seed)
        start = time.perf_counter()
        with seeded(seed, x), pyro.get_param_store().scope():
            guide = self._make_guide(model)
            guide(x, y)  # creates the guide's parameters from the model's sites
            params = [p for p in guide.parameters() if p.requires_grad]
            loss_fn = Trace_ELBO(num_particles=self.num_particles).differentiable_loss
            # A non-finite ELBO stops the loop with the fix named (lower lr; here also init_scale).
            result = optimize(guide, lambda: loss_fn(model, guide, x, y), self.num_steps, params=params,
                              optimizer="adam", lr=self.lr, schedule="exponential", final_lr=self.final_lr,
                              progress=progress, desc="SVI")
            elbo = -result.history["loss"]
            draws = self._draw(guide, x, y)
        attrs = {"engine": "SVI", **self.settings(), "seed": seed, "seconds": time.perf_counter() - start}
        return Posterior(draws, {"elbo": elbo.to(x.device)}, model=model, data=(x, y), attrs=attrs)

    def _draw(self, guide: Any, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        num = 1 if isinstance(guide, AutoDelta) else self.num_samples
        rows: list[dict[str, Tensor]] = []
        with torch.no_grad():
            for _ in range(num):
                rows.append({n: v.detach() for n, v in guide(x, y).items()})
        return {n: torch.stack([r[n] for r in rows]).unsqueeze(0) for n in rows[0]}
