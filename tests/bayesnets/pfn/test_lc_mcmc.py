"""The MCMC baseline's model: its hand-written log density is Pyro's potential of the Pyro model,
the parameter maps invert each other, starts lie in the support, mixture quantiles invert the CDF.
(NUTS itself runs in tests/bayesnets/pfn/test_lcpfn.py, against the shipped LC-PFN.)"""

from __future__ import annotations

import math

import pytest
import torch
from pyro.infer.mcmc.util import initialize_model

from bayesnets.pfn.lc_mcmc import UNCONSTRAINED, LearningCurveModel, extrapolate_mcmc, mixture_quantile
from priors.tasks import LearningCurvePrior
from priors.tasks.learning_curves import PARAMETERS, epochs


def _curve(tkwargs: dict, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=tkwargs["device"]).manual_seed(3)
    _, y = LearningCurvePrior().to(**tkwargs).sample(1, 100, generator=gen)
    return epochs(n, y).unsqueeze(-1), y[0, :n]


def test_log_density_is_pyros_potential(tkwargs: dict) -> None:
    model = LearningCurveModel(init_candidates=64)
    x, y = _curve(tkwargs)
    _, potential_fn, _, _ = initialize_model(model, model_args=(x, y))
    gen = torch.Generator(device=tkwargs["device"]).manual_seed(0)
    z0 = model.init_params(x)[UNCONSTRAINED]
    finite = 0
    for scale in (0.0, 0.01, 0.03, 0.1, 1.0):
        z = z0 + scale * torch.randn(z0.shape, generator=gen, **tkwargs)
        ours = model.log_density({UNCONSTRAINED: z}, x, y)
        pyro_value = -potential_fn(dict(zip(PARAMETERS, z.unbind(-1), strict=True)))
        if math.isfinite(float(ours)):
            finite += 1
            assert torch.allclose(ours, pyro_value, rtol=1e-9, atol=1e-9)
        else:  # outside the rejection rule's support: zero density for both
            assert float(ours) == -math.inf and float(pyro_value) == -math.inf
    assert finite >= 3
    batch = z0 + 0.01 * torch.randn((5, *z0.shape), generator=gen, **tkwargs)
    each = torch.stack([model.log_density({UNCONSTRAINED: b}, x, y) for b in batch])
    assert torch.allclose(model.log_density({UNCONSTRAINED: batch}, x, y), each)


def test_parameter_maps_and_starts(tkwargs: dict) -> None:
    model = LearningCurveModel(init_candidates=32)
    x, y = _curve(tkwargs)
    gen = torch.Generator(device=tkwargs["device"]).manual_seed(1)
    z = torch.randn(7, len(PARAMETERS), generator=gen, **tkwargs)
    named = model.constrain({UNCONSTRAINED: z})
    assert list(named) == list(PARAMETERS) and named["w_pow3"].shape == (7,)
    for name, spec in PARAMETERS.items():
        v = named[name]
        assert bool((v > spec.a).all() and (v < spec.b).all()) if spec.kind == "uniform" else bool((v > 0).all())
    assert torch.allclose(model.unconstrain(named)[UNCONSTRAINED], z)
    plain = model.init_params(x)
    model.init_data = (x, y)
    fitted = model.init_params(x)
    assert plain[UNCONSTRAINED].shape == fitted[UNCONSTRAINED].shape == (len(PARAMETERS),)
    assert math.isfinite(float(model.log_density(fitted, x, y)))
    assert math.isfinite(float(model.log_density(plain, x, y)))
    with pytest.raises(ValueError, match="init='prior'"):
        model.init_params(x, strategy="zeros")
    with pytest.raises(ValueError, match=r"epochs in \[1, length=100\]"):
        model.check_data(x + 100, y)


def test_mixture_quantiles_invert_the_cdf(tkwargs: dict) -> None:
    loc = torch.tensor([[0.1, 0.5, 0.52], [0.3, 0.3, 0.9]], **tkwargs)
    scale = torch.tensor([[0.02, 0.1, 0.01], [0.05, 0.2, 0.01]], **tkwargs)
    mix = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=torch.zeros_like(loc)),
                                                torch.distributions.Normal(loc, scale))
    qs = torch.tensor([0.01, 0.25, 0.5, 0.9, 0.999], **tkwargs)
    quant = mixture_quantile(mix, qs)
    assert quant.shape == (5, 2) and bool((quant[1:] > quant[:-1]).all())
    assert torch.allclose(mix.cdf(quant), qs[:, None].expand(5, 2), atol=1e-10)
    assert mixture_quantile(mix, 0.5).shape == (2,)


def test_extrapolate_mcmc_rejects_bad_input(tkwargs: dict) -> None:
    _, y = _curve(tkwargs, 20)
    with pytest.raises(ValueError, match="horizon"):
        extrapolate_mcmc(y, horizon=20)
    with pytest.raises(ValueError, match="1-D"):
        extrapolate_mcmc(y[None], horizon=50)
