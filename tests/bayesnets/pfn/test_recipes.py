"""The training recipes are consistent with PFNTrainer and their priors, and one runs end to end
writing weights whose training record has the shipped files' format."""

from __future__ import annotations

import inspect
from pathlib import Path

from bayesnets.pfn import PFN
from bayesnets.pfn.recipes import RECIPES, gp_prior, main
from bayesnets.pfn.train import PFNTrainer
from inference.training import Trainer
from priors.tasks import GPHyperPrior


def test_recipes_are_well_formed() -> None:
    accepted = set(inspect.signature(PFNTrainer).parameters) | set(inspect.signature(Trainer).parameters)
    for sizes in RECIPES.values():
        for recipe in sizes.values():
            prior = recipe.prior()
            assert recipe.model.max_features >= prior.max_features
            assert set(recipe.train) <= accepted
            PFNTrainer(**recipe.train)  # the settings pass the trainer's checks
            if recipe.train.get("num_test") is not None:  # GP recipes; LC recipes censor whole curves
                assert recipe.train["seq_len"] - recipe.train["num_test"] >= 200  # covers the benchmark's n = 200
    p = gp_prior()
    assert isinstance(p, GPHyperPrior) and (p.min_features, p.max_features) == (1, 5) and p.kernel == "matern52"


def test_a_recipe_runs_and_writes_the_shipped_record_format(tmp_path: Path) -> None:
    out = tmp_path / "gp.safetensors"
    main(["gp", "--size", "cpu", "--steps", "2", "--batch-size", "2", "--out", str(out),
          "--checkpoint", str(tmp_path / "gp.ckpt.safetensors")])
    record = PFN.load(out).metadata["training"]
    shipped = PFN.pretrained("gp").metadata["training"]
    assert record.keys() == shipped.keys()  # the format of the shipped weights' metadata is unchanged
    assert record["steps"] == 2 and record["datasets"] == 4 and record["recipe"] == "gp/cpu"
    assert {k: record[k] for k in ("seq_len", "num_test", "max_train", "lr", "prior")} == \
        {k: shipped[k] for k in ("seq_len", "num_test", "max_train", "lr", "prior")}
