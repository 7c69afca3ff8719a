"""Diagnostics: R-hat/ESS/MCSE through ArviZ and actionable warnings."""

from __future__ import annotations

import pytest
import torch

from inference import Posterior, diagnostics


def test_iid_draws_pass_checks():
    draws = {"a": torch.randn(4, 1000), "b": torch.randn(4, 1000, 3)}
    # R-hat of 4x1000 i.i.d. normals has sd ~ 1e-3, so 1.01 is > 5 sd away.
    assert diagnostics.check(draws, warn=False) == []
    r = diagnostics.rhat(draws)
    assert r["b"].shape == (3,)
    e = diagnostics.ess(draws)
    assert float(e["a"]) > 2000
    se = diagnostics.mcse(draws)
    assert abs(float(se["a"]) - 1 / 4000**0.5) < 0.005


def test_disagreeing_chains_warn_with_advice():
    draws = torch.randn(2, 500)
    draws[1] += 3.0
    with pytest.warns(RuntimeWarning, match="R-hat of 'x'.*Run longer"):
        msgs = diagnostics.check({"x": draws})
    assert len(msgs) >= 1


def test_divergences_and_low_ess_are_flagged():
    samples = {"x": torch.randn(1, 50).cumsum(-1)}  # a random walk: tiny ESS
    stats = {"diverging": torch.zeros(1, 50, dtype=torch.bool)}
    stats["diverging"][0, :3] = True
    post = Posterior(samples, stats, attrs={"target_accept": 0.8})
    msgs = diagnostics.check(post, warn=False)
    assert any("3 of 50 draws" in m and "target_accept (now 0.8)" in m for m in msgs)
    assert any("bulk ESS" in m for m in msgs)
    assert diagnostics.divergences(post) == 3


def test_summary_table_and_bad_names():
    table = diagnostics.summary({"a": torch.randn(2, 200)})
    assert list(table.index) == ["a"]
    with pytest.raises(ValueError, match="var_names"):
        diagnostics.summary({"a": torch.randn(2, 200)}, var_names=["b"])
    with pytest.raises(ValueError, match="chain, draw"):
        diagnostics.rhat({"a": torch.randn(5)})
