"""Inference engines and the common Posterior: ``Engine(...).fit(model, x, y) -> Posterior``."""

from inference import diagnostics
from inference.engine import Engine
from inference.ensembles import DeepEnsemble
from inference.hmc import HMC, NUTS, BatchedHMC
from inference.posterior import Posterior, Prediction
from inference.sgmcmc import SGHMC, SGLD, AdaptiveSGHMC, CyclicalSGMCMC
from inference.vi import SVI

__all__ = [
    "HMC",
    "NUTS",
    "SGHMC",
    "SGLD",
    "SVI",
    "AdaptiveSGHMC",
    "BatchedHMC",
    "CyclicalSGMCMC",
    "DeepEnsemble",
    "Engine",
    "Posterior",
    "Prediction",
    "diagnostics",
]
