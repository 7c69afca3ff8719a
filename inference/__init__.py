"""Inference engines and the common Posterior: ``Engine(...).fit(model, x, y) -> Posterior``."""

from inference import diagnostics
from inference.engine import Engine
from inference.hmc import HMC, NUTS
from inference.posterior import Posterior, Prediction
from inference.vi import SVI

__all__ = ["HMC", "NUTS", "SVI", "Engine", "Posterior", "Prediction", "diagnostics"]
