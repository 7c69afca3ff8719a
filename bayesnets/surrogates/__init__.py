"""BoTorch surrogates for Bayesian optimisation (Li, Rudner & Wilson, arXiv 2305.20028; P24).

``make_surrogate(name, train_X, train_Y)`` builds and fits any of ``SURROGATES``; see
docs/surrogates.md.
"""

from bayesnets.surrogates.bnn import BNNSurrogate, NetEnsembleModel
from bayesnets.surrogates.data import check_train_data
from bayesnets.surrogates.dkl import DKLSurrogate, FeatureKernel
from bayesnets.surrogates.ensemble import DeepEnsembleSurrogate
from bayesnets.surrogates.gp import fit_legacy_gp, fit_single_task_gp
from bayesnets.surrogates.ibnn import IBNNSurrogate
from bayesnets.surrogates.pfn import PFNSurrogate, fit_pfn
from bayesnets.surrogates.registry import SURROGATES, make_surrogate
from bayesnets.surrogates.tprocess import TProcessSurrogate, fit_tprocess

__all__ = [
    "SURROGATES",
    "BNNSurrogate",
    "DKLSurrogate",
    "DeepEnsembleSurrogate",
    "FeatureKernel",
    "IBNNSurrogate",
    "NetEnsembleModel",
    "PFNSurrogate",
    "TProcessSurrogate",
    "check_train_data",
    "fit_legacy_gp",
    "fit_pfn",
    "fit_single_task_gp",
    "fit_tprocess",
    "make_surrogate",
]
