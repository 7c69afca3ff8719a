"""IBNNSurrogate: learned NNGP variances, fantasies."""

from __future__ import annotations

import torch
from botorch.sampling import SobolQMCNormalSampler

from bayesnets.surrogates.ibnn import PAPER_BIAS_VARIANCE, PAPER_WEIGHT_VARIANCE, IBNNSurrogate


def test_variances_are_learned_or_fixed(tkwargs, objective):
    X = torch.rand(12, 2, **tkwargs)
    Y = objective(X)
    learned = IBNNSurrogate(X, Y)
    wv, bv = learned.covar_module.weight_variance.item(), learned.covar_module.bias_variance.item()
    assert abs(wv - PAPER_WEIGHT_VARIANCE) > 1e-3 or abs(bv - PAPER_BIAS_VARIANCE) > 1e-3
    fixed = IBNNSurrogate(X, Y, learn_variances=False)
    # unchanged up to the rounding of softplus(inverse_softplus(10))
    assert abs(fixed.covar_module.weight_variance.item() - PAPER_WEIGHT_VARIANCE) < 1e-6
    # the learned kernel is at least as likely as the paper's fixed one (the fit maximises it)
    from gpytorch.mlls import ExactMarginalLogLikelihood

    def mll(m):
        m.train()
        out = ExactMarginalLogLikelihood(m.likelihood, m)(m(*m.train_inputs), m.train_targets).item()
        m.eval()
        return out
    assert mll(learned) >= mll(fixed) - 1e-6


def test_fantasize_and_condition(fit, device):
    model = fit("ibnn", torch.float64, device)
    Xf = torch.rand(3, 2, 2, dtype=torch.float64, device=device)
    fant = model.fantasize(Xf, sampler=SobolQMCNormalSampler(torch.Size([4])))
    assert fant.posterior(torch.rand(5, 2, dtype=torch.float64, device=device)).mean.shape == (4, 3, 5, 1)
    Xn = torch.rand(2, 2, dtype=torch.float64, device=device)
    cond = model.condition_on_observations(model.transform_inputs(Xn), torch.zeros(2, 1, dtype=torch.float64,
                                                                                   device=device))
    assert isinstance(cond, IBNNSurrogate)
    # conditioning on an observation pulls the mean there towards it and shrinks the variance
    assert cond.posterior(Xn).variance.sum() < model.posterior(Xn).variance.sum()
