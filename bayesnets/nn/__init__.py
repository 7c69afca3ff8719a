"""Deterministic likelihood-network components from the papers, as ``torch.nn`` modules.

Each works in plain PyTorch, inside :class:`bayesnets.BayesianNet` (its parameters then get
priors like any others) and on CUDA.
"""

from bayesnets.nn.activations import PolyNorm, PolyReLU
from bayesnets.nn.binary import BiPerConv2d, BiPerLinear, TwoStageSchedule, quantization_error, set_stage
from bayesnets.nn.norms import PowerNorm
from bayesnets.nn.operators import MgConv2d, MgNO
from bayesnets.nn.parametrization import (
    AbcParametrization,
    coord_check,
    critical_init,
    init_critical_,
    parametrize,
    relu_output_kurtosis,
)
from bayesnets.nn.random_features import BandlimitedRandomFeatures, bandwidth_error, ridge_solve
from bayesnets.nn.snnk import BundledSNNK, SNNKFeatures, SNNKLinear
from bayesnets.nn.spiking import LIF, SLTTLIF, SpikingMLP

__all__ = [
    "LIF",
    "SLTTLIF",
    "AbcParametrization",
    "BandlimitedRandomFeatures",
    "BiPerConv2d",
    "BiPerLinear",
    "BundledSNNK",
    "MgConv2d",
    "MgNO",
    "PolyNorm",
    "PolyReLU",
    "PowerNorm",
    "SNNKFeatures",
    "SNNKLinear",
    "SpikingMLP",
    "TwoStageSchedule",
    "bandwidth_error",
    "coord_check",
    "critical_init",
    "init_critical_",
    "parametrize",
    "quantization_error",
    "relu_output_kurtosis",
    "ridge_solve",
    "set_stage",
]
