"""Scale mixtures of NNGPs as models (Lee et al., ICLR 2022, arXiv 2107.01408; P12).

* :mod:`~bayesnets.tprocess.regression` — Student-t process, NNGP and Burr XII regression as
  BoTorch models, ML-II fitting, the paper's synthetic data;
* :mod:`~bayesnets.tprocess.posterior` — their BoTorch posteriors (multivariate t, scale mixtures);
* :mod:`~bayesnets.tprocess.classification` — the sparse variational t-process classifier.

The processes themselves (the prior) are :mod:`priors.processes`.
"""

from bayesnets.tprocess.classification import SparseTProcessClassifier, fit_classifier, inducing_points_by_class
from bayesnets.tprocess.posterior import MultivariateTPosterior, ScaleMixturePosterior
from bayesnets.tprocess.regression import (
    BurrXIIRegression,
    NNGPRegression,
    ScaleMixtureRegression,
    TProcessRegression,
    fit_marginal_likelihood,
    synthetic_regression,
)

__all__ = [
    "BurrXIIRegression",
    "MultivariateTPosterior",
    "NNGPRegression",
    "ScaleMixturePosterior",
    "ScaleMixtureRegression",
    "SparseTProcessClassifier",
    "TProcessRegression",
    "fit_classifier",
    "fit_marginal_likelihood",
    "inducing_points_by_class",
    "synthetic_regression",
]
