"""bayesnets: Bayesian deep learning on PyTorch and Pyro.

``model = prior x likelihood network``; ``posterior = engine(model, data)``. Models live
here, priors in :mod:`priors`, engines and posteriors in :mod:`inference`.
"""

from bayesnets import _moved  # noqa: F401  (old module paths, one release)
from bayesnets.bnn import OBS, BayesianNet
from bayesnets.likelihoods import (
    Bernoulli,
    Categorical,
    Gaussian,
    HeteroscedasticGaussian,
    Likelihood,
    StudentT,
)

__version__ = "0.1.0"

__all__ = [
    "OBS",
    "BayesianNet",
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "HeteroscedasticGaussian",
    "Likelihood",
    "StudentT",
]
