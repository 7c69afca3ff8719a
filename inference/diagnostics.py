"""Convergence diagnostics through ArviZ: summary table, R-hat, ESS, divergences.

Every function takes a :class:`~inference.posterior.Posterior` or a plain dict of draws
``name -> [chain, draw, ...]`` (useful for derived quantities such as a BNN's function
values, which unlike its weights are identifiable across chains).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from inference.posterior import Posterior, import_arviz

__all__ = ["check", "divergences", "ess", "mcse", "rhat", "summary"]

#: R-hat above this flags non-convergence (Vehtari et al. 2021, arXiv:1903.08008).
RHAT_THRESHOLD = 1.01
#: Bulk-ESS per chain below this makes MCSE and R-hat unreliable (same reference).
MIN_ESS_PER_CHAIN = 100

Draws = Posterior | Mapping[str, Tensor]


def _idata(obj: Draws, var_names: Sequence[str] | None = None) -> Any:
    az = import_arviz()
    if isinstance(obj, Posterior):
        samples = obj.samples
    elif isinstance(obj, Mapping):
        samples = obj
    else:
        raise TypeError(f"expected a Posterior or a dict of [chain, draw, ...] tensors, got {type(obj).__name__}")
    names = list(samples) if var_names is None else list(var_names)
    missing = [n for n in names if n not in samples]
    if missing:
        raise ValueError(f"var_names {missing} are not in the draws (have {list(samples)[:10]})")
    for n in names:
        if samples[n].dim() < 2:
            raise ValueError(f"draws of {n!r} must be [chain, draw, ...], got shape {tuple(samples[n].shape)}")
    return az.from_dict(posterior={n: samples[n].detach().cpu().double().numpy() for n in names})


def _to_torch(ds: Any) -> dict[str, Tensor]:
    return {str(n): torch.as_tensor(ds[n].values) for n in ds.data_vars}


def summary(obj: Draws, var_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """ArviZ summary table (mean, sd, HDI, MCSE, ESS, R-hat) as a pandas DataFrame."""
    return import_arviz().summary(_idata(obj, var_names), **kwargs)


def rhat(obj: Draws, var_names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Rank-normalised split R-hat of every element, per site (NaN with one chain of one draw)."""
    return _to_torch(import_arviz().rhat(_idata(obj, var_names)))


def ess(obj: Draws, var_names: Sequence[str] | None = None, method: str = "bulk") -> dict[str, Tensor]:
    """Effective sample size of every element, per site (``method``: bulk, tail, mean, ...)."""
    return _to_torch(import_arviz().ess(_idata(obj, var_names), method=method))


def divergences(posterior: Posterior) -> int:
    """Number of divergent transitions after warm-up (0 when the engine records none)."""
    d = posterior.stats.get("diverging")
    return 0 if d is None else int(d.sum().item())


def check(obj: Draws, var_names: Sequence[str] | None = None, rhat_threshold: float = RHAT_THRESHOLD,
          warn: bool = True) -> list[str]:
    """Look for signs of trouble and say what to do about each.

    Flags R-hat above ``rhat_threshold`` (with two or more chains), bulk ESS under
    ``MIN_ESS_PER_CHAIN`` per chain, and divergent transitions.

    Returns:
        The messages (also issued as ``RuntimeWarning``s when ``warn``).
    """
    messages: list[str] = []
    if isinstance(obj, Posterior):
        n_div = divergences(obj)
        if n_div:
            messages.append(divergence_message(n_div, obj.num_chains * obj.num_draws,
                                               obj.attrs.get("target_accept")))
    idata = _idata(obj, var_names)
    chains = idata.posterior.sizes["chain"]
    az = import_arviz()
    if chains >= 2:
        for name, r in _to_torch(az.rhat(idata)).items():
            worst = float(torch.nan_to_num(r, nan=0.0).max())
            if worst > rhat_threshold:
                messages.append(
                    f"R-hat of {name!r} is {worst:.3f} > {rhat_threshold}: the chains disagree. Run longer "
                    "(more num_warmup and num_samples) or reparameterise. For BNN weights a large R-hat is "
                    "expected (hidden units can swap between chains); judge convergence on function "
                    "values instead: diagnostics.check({'f': posterior.predict(x).f})."
                )
    for name, e in _to_torch(az.ess(idata, method="bulk")).items():
        low = float(torch.nan_to_num(e, nan=float("inf")).min())
        if low < MIN_ESS_PER_CHAIN * chains:
            messages.append(
                f"bulk ESS of {name!r} is {low:.0f} over {chains} chain(s), under {MIN_ESS_PER_CHAIN} per "
                "chain: estimates of its "
                "mean and R-hat are unreliable. Draw more samples or use more chains."
            )
    if warn:
        for m in messages:
            warnings.warn(m, RuntimeWarning, stacklevel=2)
    return messages


def divergence_message(count: int, total: int, target_accept: float | None) -> str:
    """The warning text for divergent transitions, with the usual remedies."""
    now = f" (now {target_accept})" if target_accept is not None else ""
    return (
        f"{count} of {total} draws after warm-up ended in a divergent transition: the sampler "
        f"cannot follow the posterior's curvature there, so estimates may be biased. Raise "
        f"target_accept{now} towards 0.95, tighten the prior (e.g. smaller weight scale), or "
        "reparameterise the model."
    )


def mcse(obj: Draws, var_names: Sequence[str] | None = None, method: str = "mean") -> dict[str, Tensor]:
    """Monte Carlo standard error of every element's posterior mean (or ``method``), per site."""
    return _to_torch(import_arviz().mcse(_idata(obj, var_names), method=method))
