"""Priors: what we believe before data — over weights, over functions, over tasks."""

from priors.empirical_ntk import empirical_ntk, linearize, ntk_regression
from priors.infinite_depth import HermiteActivation, NTKClassifier, deep_kernel, limit_regime
from priors.kernels import NNGPKernel, NTKKernel
from priors.weights import GaussianWeightPrior, HierarchicalGaussian, IIDGaussian, LayerwiseGaussian, WeightPrior

__all__ = [
    "GaussianWeightPrior",
    "HermiteActivation",
    "HierarchicalGaussian",
    "IIDGaussian",
    "LayerwiseGaussian",
    "NNGPKernel",
    "NTKClassifier",
    "NTKKernel",
    "WeightPrior",
    "deep_kernel",
    "empirical_ntk",
    "limit_regime",
    "linearize",
    "ntk_regression",
]
