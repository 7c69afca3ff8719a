"""Priors: what we believe before data — over weights, over functions, over tasks."""

from priors.weights import HierarchicalGaussian, IIDGaussian, LayerwiseGaussian, WeightPrior

__all__ = ["HierarchicalGaussian", "IIDGaussian", "LayerwiseGaussian", "WeightPrior"]
