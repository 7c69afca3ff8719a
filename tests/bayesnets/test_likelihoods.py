"""Likelihoods: shapes, fixed vs latent noise, target validation."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

from bayesnets import Bernoulli, Categorical, Gaussian, HeteroscedasticGaussian, StudentT


def test_gaussian_fixed_and_latent(tkwargs):
    f = torch.randn(4, 6, 1, **tkwargs)  # 4 draws, 6 observations
    lik = Gaussian(scale=0.5)
    d = lik.dist(f, {})
    assert d.batch_shape == (4, 6)
    torch.testing.assert_close(d.scale, torch.full((4, 6), 0.5, **tkwargs))
    lat = Gaussian(scale=dist.HalfNormal(1.0))
    assert list(lat.hyper_sites(f)) == ["likelihood.scale"]
    s = torch.rand(4, **tkwargs) + 0.1
    d = lat.dist(f, {"likelihood.scale": s})
    torch.testing.assert_close(d.scale[:, 0], s)


def test_multi_output_gaussian(tkwargs):
    lik = Gaussian(scale=0.2, num_outputs=3)
    f = torch.randn(5, 3, **tkwargs)
    assert lik.dist(f, {}).batch_shape == (5,)
    assert lik.check_target(torch.randn(5, 3, **tkwargs), 5).shape == (5, 3)
    with pytest.raises(ValueError, match="y must have shape"):
        lik.check_target(torch.randn(5, **tkwargs), 5)


def test_target_shapes_and_labels(tkwargs):
    assert Gaussian().check_target(torch.randn(5, 1, **tkwargs), 5).shape == (5,)
    with pytest.raises(ValueError, match="0 and 1"):
        Bernoulli().check_target(torch.tensor([0.0, 2.0], **tkwargs), 2)
    with pytest.raises(ValueError, match=r"labels in \[0, 2\]"):
        Categorical(3).check_target(torch.tensor([0, 3]), 2)
    assert Categorical(3).check_target(torch.tensor([0.0, 2.0]), 2).dtype == torch.long


def test_student_t_and_heteroscedastic(tkwargs):
    f = torch.randn(6, 1, **tkwargs)
    assert StudentT(df=3.0, scale=0.5).dist(f, {}).batch_shape == (6,)
    h = HeteroscedasticGaussian()
    f2 = torch.randn(6, 2, **tkwargs)
    assert (h.dist(f2, {}).scale > 0).all()


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="scale"):
        Gaussian(scale=-1.0)
    with pytest.raises(ValueError, match="positive support"):
        Gaussian(scale=dist.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="num_classes"):
        Categorical(1)
