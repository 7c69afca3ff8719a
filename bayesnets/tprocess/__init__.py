"""Scale mixtures of NNGPs as models (Lee et al., ICLR 2022, arXiv 2107.01408; P12).

* :mod:`~bayesnets.tprocess.regression` — Student-t process, NNGP and Burr XII regression as
  BoTorch models, ML-II fitting (:class:`MarginalLikelihoodTrainer`), the paper's synthetic data;
* :mod:`~bayesnets.tprocess.posterior` — their BoTorch posteriors (multivariate t, scale mixtures);
* :mod:`~bayesnets.tprocess.classification` — the sparse variational t-process classifier and
  its trainer (:class:`SparseTProcessTrainer`).

The processes themselves (the prior) are :mod:`priors.processes`.
"""

from bayesnets.tprocess.classification import (
    SparseTProcessClassifier,
    SparseTProcessTrainer,
    fit_classifier,
    inducing_points_by_class,
)
from bayesnets.tprocess.posterior import MultivariateTPosterior, ScaleMixturePosterior
from bayesnets.tprocess.regression import (
    BurrXIIRegression,
    MarginalLikelihoodFit,
    MarginalLikelihoodTrainer,
    NNGPRegression,
    ScaleMixtureRegression,
    TProcessRegression,
    fit_marginal_likelihood,
    synthetic_regression,
)

__all__ = [
    "BurrXIIRegression",
    "MarginalLikelihoodFit",
    "MarginalLikelihoodTrainer",
    "MultivariateTPosterior",
    "NNGPRegression",
    "ScaleMixturePosterior",
    "ScaleMixtureRegression",
    "SparseTProcessClassifier",
    "SparseTProcessTrainer",
    "TProcessRegression",
    "fit_classifier",
    "fit_marginal_likelihood",
    "inducing_points_by_class",
    "synthetic_regression",
]
