"""Surrogate names for the BO loop: ``make_surrogate(name, train_X, train_Y)`` builds and fits one.

Every builder takes ``train_X`` ``[n, d]`` (already scaled to the unit cube by the loop) and raw
``train_Y`` ``[n, m]``; surrogates standardise outcomes themselves. Li, Rudner & Wilson,
arXiv 2305.20028, compare these surrogates against the ``"gp"`` baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botorch.models.model import Model
from torch import Tensor

from bayesnets.surrogates.bnn import BNNSurrogate
from bayesnets.surrogates.data import check_train_data
from bayesnets.surrogates.dkl import DKLSurrogate
from bayesnets.surrogates.ensemble import DeepEnsembleSurrogate
from bayesnets.surrogates.gp import fit_legacy_gp, fit_single_task_gp
from bayesnets.surrogates.ibnn import IBNNSurrogate
from bayesnets.surrogates.pfn import fit_pfn
from bayesnets.surrogates.tprocess import fit_tprocess

__all__ = ["SURROGATES", "make_surrogate"]

Builder = Callable[..., Model]



def _bnn(inference: str) -> Builder:
    def build(train_X: Tensor, train_Y: Tensor, *, seed: int = 0, **options: Any) -> Model:
        return BNNSurrogate(train_X, train_Y, inference=inference, seed=seed, **options)

    build.__name__ = f"fit_bnn_{inference}"
    build.__doc__ = f"A :class:`BNNSurrogate` fitted by ``inference={inference!r}``."
    return build


#: name -> builder ``(train_X, train_Y, *, seed, **options) -> fitted Model``.
SURROGATES: dict[str, Builder] = {
    "gp": fit_single_task_gp,
    "gp_legacy": fit_legacy_gp,
    "ibnn": IBNNSurrogate,
    "hmc": _bnn("hmc"),
    "nuts": _bnn("nuts"),
    "sghmc": _bnn("sghmc"),
    "svi": _bnn("svi"),
    "ensemble": DeepEnsembleSurrogate,
    "dkl": DKLSurrogate,
    "tprocess": fit_tprocess,
    "pfn": fit_pfn,
}


def make_surrogate(name: str, train_X: Tensor, train_Y: Tensor, *, seed: int = 0, **options: Any) -> Model:
    """Build the surrogate called ``name`` and fit it to ``(train_X, train_Y)``.

    Args:
        name: one of ``SURROGATES``.
        train_X: inputs ``[n, d]`` in the unit cube.
        train_Y: raw objective values ``[n, m]``.
        seed: seeds every random choice of the fit (initialisation, MCMC, bootstraps).
        **options: forwarded to the builder (e.g. ``num_samples`` for the MCMC ones).

    Returns:
        A fitted BoTorch ``Model``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones) or bad data.
    """
    if name not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; valid names: {', '.join(SURROGATES)}")
    check_train_data(train_X, train_Y)
    return SURROGATES[name](train_X, train_Y, seed=seed, **options)
