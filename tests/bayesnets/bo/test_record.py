"""BO records: JSON round trip (NaN included, no pickle) and mean ± standard error over seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bayesnets.bo.record import BORecord, aggregate, load_records, save_records


def _record(surrogate: str, seed: int, trace: list[float], *, nan: bool = False, regret: bool = True) -> BORecord:
    X = torch.rand(4, 2, dtype=torch.float64)
    Y = torch.randn(4, 1, dtype=torch.float64)
    if nan:
        Y[2, 0] = math.nan
    return BORecord(problem="branin", surrogate=surrogate, seed=seed, X=X, Y=Y, F=Y.clone(), iteration=[0, 0, 1, 2],
                    best=[-t for t in trace], regret=trace if regret else None, fit_time=[0.1 * seed, 0.2],
                    acq_time=[0.3, 0.4], settings={"iterations": 2, "acquisition": "qlogei", "noise_std": None},
                    fit_warnings=[[], [f"RuntimeWarning: {seed} of 80 draws diverged"]])


def test_json_round_trip_keeps_everything_including_nan(tmp_path: Path) -> None:
    recs = [_record("gp", 0, [3.0, 2.0, 1.0], nan=True), _record("hmc", 1, [3.0, 2.5, 0.5], regret=False)]
    path = save_records(recs, tmp_path / "r.json")
    text = path.read_text()
    json.loads(text)  # standard JSON: no NaN literal
    assert "NaN" not in text and "null" in text
    back = load_records(path)
    assert len(back) == 2
    for a, b in zip(recs, back):
        for name in ("X", "Y", "F"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), equal_nan=True, rtol=0, atol=0)
        for name in ("problem", "surrogate", "seed", "iteration", "best", "regret", "fit_time", "acq_time",
                     "settings", "fit_warnings"):
            assert getattr(b, name) == getattr(a, name), name
    assert back[0].num_nan == 1 and back[1].metric == "best value" and back[0].metric == "simple regret"


def test_loading_a_foreign_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match="not a BO results file"):
        load_records(path)


def test_aggregate_gives_mean_and_standard_error_per_surrogate() -> None:
    recs = [_record("gp", 0, [4.0, 2.0, 1.0]), _record("gp", 1, [2.0, 2.0, 3.0]), _record("hmc", 2, [1.0, 1.0, 1.0])]
    agg = aggregate(recs)
    assert list(agg) == ["gp", "hmc"]
    gp = agg["gp"]
    assert gp.mean == pytest.approx([3.0, 2.0, 2.0])
    # Two values a, b: sample std |a - b| / sqrt(2), standard error |a - b| / 2.
    assert gp.se == pytest.approx([1.0, 0.0, 1.0])
    assert gp.final == pytest.approx((2.0, 1.0)) and gp.seeds == [0, 1]
    # Time per iteration: seed 0 (0.0 + 0.2 + 0.3 + 0.4) / 2 = 0.45, seed 1 (0.1 + 0.2 + 0.7) / 2 = 0.5.
    assert gp.time_per_iteration[0] == pytest.approx(0.475)
    assert gp.time_per_iteration[1] == pytest.approx(0.025)
    assert gp.fit_time == pytest.approx(0.125) and gp.acq_time == pytest.approx(0.35)
    assert all(math.isnan(s) for s in agg["hmc"].se)  # one seed: no standard error


def test_aggregate_rejects_mixed_inputs() -> None:
    with pytest.raises(ValueError, match="records is empty"):
        aggregate([])
    other = _record("gp", 1, [1.0, 1.0, 1.0])
    other.problem = "hartmann6"
    with pytest.raises(ValueError, match="mix problems"):
        aggregate([_record("gp", 0, [1.0, 1.0, 1.0]), other])
    with pytest.raises(ValueError, match="differ in length"):
        aggregate([_record("gp", 0, [1.0, 1.0, 1.0]), _record("gp", 1, [1.0, 1.0])])
