"""The training recipes are consistent with train_pfn and their priors."""

from __future__ import annotations

import inspect

from bayesnets.pfn.recipes import RECIPES, gp_prior
from bayesnets.pfn.train import train_pfn
from priors.tasks import GPHyperPrior


def test_recipes_are_well_formed() -> None:
    accepted = set(inspect.signature(train_pfn).parameters)
    for sizes in RECIPES.values():
        for recipe in sizes.values():
            prior = recipe.prior()
            assert recipe.model.max_features >= prior.max_features
            assert set(recipe.train) <= accepted
            if recipe.train.get("num_test") is not None:  # GP recipes; LC recipes censor whole curves
                assert recipe.train["seq_len"] - recipe.train["num_test"] >= 200  # covers the benchmark's n = 200
    p = gp_prior()
    assert isinstance(p, GPHyperPrior) and (p.min_features, p.max_features) == (1, 5) and p.kernel == "matern52"
