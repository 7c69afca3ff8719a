"""PFNModel / PFNPosterior: BoTorch's shapes, exact standardisation, MC acquisition with gradients."""

from __future__ import annotations

import pytest
import torch
from botorch.acquisition import LogExpectedImprovement, qLogExpectedImprovement
from botorch.sampling.get_sampler import get_sampler
from botorch.sampling.normal import SobolQMCNormalSampler

from bayesnets.pfn import PFN
from bayesnets.pfn.botorch import PFNModel, PFNPosterior


@pytest.fixture(scope="module")
def pfn() -> PFN:
    return PFN.pretrained("gp")


def _data(tkwargs: dict, n: int = 8, d: int = 2):
    g = torch.Generator(device=tkwargs["device"]).manual_seed(0)
    x = torch.rand(n, d, generator=g, **tkwargs)
    return x, torch.sin(6 * x).sum(-1, keepdim=True)


def test_posterior_shapes_and_standardisation(pfn: PFN, tkwargs: dict) -> None:
    x, y = _data(tkwargs)
    model = PFNModel(x, y, pfn=pfn)
    X = torch.rand(4, 3, 2, **tkwargs)
    post = model.posterior(X)
    assert isinstance(post, PFNPosterior) and post.dtype == tkwargs["dtype"]
    assert post.mean.shape == post.variance.shape == (4, 3, 1)
    assert post.rsample(torch.Size([5])).shape == (5, 4, 3, 1)
    # Standardisation is an exact affine map of the predictive.
    shifted = PFNModel(x, 3 * y + 2, pfn=pfn).posterior(X)
    torch.testing.assert_close(shifted.mean, 3 * post.mean + 2)
    torch.testing.assert_close(shifted.variance, 9 * post.variance)
    # Same as the PFN's own prediction on standardised targets.
    ys = (y.squeeze(-1) - y.mean()) / y.std()
    direct = pfn.predict(x, ys, X[0])
    torch.testing.assert_close(post.mean[0, :, 0], direct.mean * y.std() + y.mean())
    # The zero base sample is the median; quantiles are monotone.
    med = post.rsample_from_base_samples(torch.Size([1]), torch.zeros(1, 4, 3, 1, **tkwargs))
    torch.testing.assert_close(med[0], post.quantile(torch.tensor([0.5], **tkwargs))[0])
    q = post.quantile(torch.tensor([0.1, 0.9], **tkwargs))
    assert bool((q[1] > q[0]).all())


def test_acquisition_functions_and_gradients(pfn: PFN, tkwargs: dict) -> None:
    x, y = _data(tkwargs)
    model = PFNModel(x, y, pfn=pfn)
    X = torch.rand(6, 2, 2, **tkwargs, requires_grad=True)
    assert isinstance(get_sampler(model.posterior(X), torch.Size([16])), SobolQMCNormalSampler)
    acq = qLogExpectedImprovement(model, best_f=y.max())
    val = acq(X)
    assert val.shape == (6,) and bool(torch.isfinite(val).all())
    val.sum().backward()
    assert X.grad is not None and bool(torch.isfinite(X.grad).all()) and float(X.grad.abs().sum()) > 0
    ei = LogExpectedImprovement(model, best_f=y.max())(torch.rand(5, 1, 2, **tkwargs))
    assert ei.shape == (5,) and bool(torch.isfinite(ei).all())


def test_conditioning_and_bad_input(pfn: PFN, tkwargs: dict) -> None:
    x, y = _data(tkwargs)
    model = PFNModel(x, y, pfn=pfn)
    more = model.condition_on_observations(x[:2] * 0.5, y[:2])
    assert more.train_X.shape == (10, 2) and more.train_Y.shape == (10, 1)
    with pytest.raises(ValueError, match="train_Y"):
        PFNModel(x, y.squeeze(-1), pfn=pfn)
    with pytest.raises(ValueError, match=r"X must have shape"):
        model.posterior(torch.rand(3, 5, **tkwargs))
    with pytest.raises(ValueError, match="features"):
        PFNModel(torch.rand(4, 6, **tkwargs), torch.rand(4, 1, **tkwargs), pfn=pfn)
