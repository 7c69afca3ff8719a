"""PV-RNN with error regression (Ahmadi & Tani 2019, arXiv 1811.01339), its synthetic data and a VRNN baseline.

- :mod:`~bayesnets.pvrnn.model`: the multiple-timescale stochastic RNN, adaptive vectors, training
  (:class:`PVRNNTrainer` -> :class:`PVRNNFit`; :func:`train_pvrnn` in one call).
- :mod:`~bayesnets.pvrnn.error_regression`: online inference and prediction.
- :mod:`~bayesnets.pvrnn.data`: a probabilistic finite-state machine over 2-D movement primitives.
- :mod:`~bayesnets.pvrnn.vrnn`: the variational RNN (Chung et al. 2015, arXiv 1506.02216) used as the
  baseline, and :class:`VRNNTrainer` -> :class:`VRNNFit`.
"""

from bayesnets.pvrnn.data import DEFAULT_TRANSITIONS, PRIMITIVES, PFSMTrajectories
from bayesnets.pvrnn.error_regression import ErrorRegressionResult, error_regression, online_prediction_error
from bayesnets.pvrnn.model import (
    PVRNN,
    AdaptiveVectors,
    MTRNNLayer,
    PVRNNFit,
    PVRNNTrainer,
    Rollout,
    State,
    gaussian_kl,
    reconstruction_error,
    train_pvrnn,
)
from bayesnets.pvrnn.vrnn import VRNN, VRNNFit, VRNNTrainer, train_vrnn

__all__ = [
    "DEFAULT_TRANSITIONS",
    "PRIMITIVES",
    "PVRNN",
    "VRNN",
    "AdaptiveVectors",
    "ErrorRegressionResult",
    "MTRNNLayer",
    "PFSMTrajectories",
    "PVRNNFit",
    "PVRNNTrainer",
    "Rollout",
    "State",
    "VRNNFit",
    "VRNNTrainer",
    "error_regression",
    "gaussian_kl",
    "online_prediction_error",
    "reconstruction_error",
    "train_pvrnn",
    "train_vrnn",
]
