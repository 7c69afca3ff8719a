"""The trainer contract, checked on every trainer: ``Trainer(**settings).fit(model, data) -> Fit``.

A new trainer gets every test here by adding one :class:`Case` to :data:`CASES`: a factory of
the trainer with small settings, a factory of a fresh (seeded) model, and the data. Each test
is deterministic (fixed seeds, float64 where the trainer allows, one torch thread).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bayesnets.nn import SpikingMLP
from bayesnets.pfn import PFN, PFNConfig, PFNFit, PFNTrainer
from bayesnets.processes import CNP, MPNP, GPTaskSampler, NPTrainer
from bayesnets.pvrnn import PVRNN, VRNN, PFSMTrajectories, PVRNNFit, PVRNNTrainer, VRNNFit, VRNNTrainer
from bayesnets.tprocess import SparseTProcessClassifier, SparseTProcessTrainer
from inference.training import Fit, SLTTTrainer, Trainer
from priors.functional import MatchResult, MeasurementSet, PriorMatcher
from priors.tasks import BNNPrior, GPPrior

NUM_STEPS = 6


@dataclass
class Case:
    """One trainer under test.

    Attributes:
        trainer: ``(**overrides) -> Trainer`` with small settings and ``num_steps=NUM_STEPS``.
        model: ``() -> model`` (fresh and identically initialised at every call).
        data: ``tkwargs -> data`` for ``fit``.
        module: the ``nn.Module`` inside ``model`` that training changes (default: ``model``).
        fit_class: the ``Fit`` subclass ``fit`` returns (its ``load`` is tested).
        load_kwargs: ``(model) -> kwargs`` for ``fit_class.load`` besides the path.
    """

    trainer: Callable[..., Trainer]
    model: Callable[[dict], Any]
    data: Callable[[dict], Any]
    module: Callable[[Any], nn.Module] = lambda m: m
    fit_class: type[Fit] = Fit
    load_kwargs: Callable[[Any], dict[str, Any]] = lambda m: {"module": m}


def _spiking(tkwargs: dict) -> SpikingMLP:
    torch.manual_seed(0)
    return SpikingMLP(4, [8], 3, num_steps=3, v_th=0.5).to(**tkwargs)


def _labelled(tkwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(24, 4, generator=g, dtype=torch.float64).to(**tkwargs)
    return x, torch.randint(0, 3, (24,), generator=g).to(tkwargs["device"])


def _pfn_trainer(**kw: Any) -> PFNTrainer:
    return PFNTrainer(**{"num_steps": NUM_STEPS, "batch_size": 4, "seq_len": 10, "border_datasets": 16, "seed": 3,
                         **kw})


def _pfn(num_classes: int | None) -> Callable[[dict], PFN]:
    def make(tkwargs: dict) -> PFN:  # a PFN instance (trained in place), with dropout on
        torch.manual_seed(0)
        config = PFNConfig(max_features=2, emsize=16, nlayers=1, nhead=2, nhid=32, num_buckets=20,
                           num_classes=num_classes, dropout=0.1)
        return PFN(config).to(tkwargs["device"])

    return make


def _seeded_model(make: Callable[[], nn.Module]) -> Callable[[dict], nn.Module]:
    """``tkwargs -> make()`` initialised from seed 0, in float64 on the test device."""

    def build(tkwargs: dict) -> nn.Module:
        torch.manual_seed(0)
        return make().to(**tkwargs)

    return build


def _trajectories(tkwargs: dict) -> torch.Tensor:
    x, _ = PFSMTrajectories().sample(3, 8, generator=torch.Generator().manual_seed(2))
    return x.to(**tkwargs)


def _tprocess_classifier(tkwargs: dict) -> SparseTProcessClassifier:
    from priors.kernels import NNGPKernel

    x, _ = _labelled(tkwargs)
    return SparseTProcessClassifier(x[:6].clone(), 3, kernel=NNGPKernel(depth=1).to(**tkwargs))


def _bnn_prior(tkwargs: dict) -> nn.Module:
    from bayesnets import BayesianNet, Gaussian
    from priors import LayerwiseGaussian

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    return BayesianNet(net, LayerwiseGaussian(3.0), Gaussian(0.1)).to(**tkwargs)


def _gp_at_measurement_sets(tkwargs: dict) -> tuple[Any, MeasurementSet]:
    from gpytorch.kernels import RBFKernel

    x = 4 * torch.rand(20, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 2
    return RBFKernel().to(**tkwargs), MeasurementSet(x.to(**tkwargs), size=10)


CASES: dict[str, Case] = {
    "np-cnp": Case(lambda **kw: NPTrainer(**{"num_steps": NUM_STEPS, "batch_size": 4, "seed": 3, **kw}),
                   _seeded_model(lambda: CNP(hidden=8, encoder_depth=2, decoder_depth=2)),
                   lambda tk: GPTaskSampler(max_points=12)),
    "np-mpnp": Case(lambda **kw: NPTrainer(**{"num_steps": NUM_STEPS, "batch_size": 4, "seed": 3, **kw}),
                    _seeded_model(lambda: MPNP(hidden=8, encoder_depth=2, decoder_depth=2, num_pseudo=4,
                                                 noise_dim=4, num_inducing=4, generator_layers=1, num_heads=2,
                                                 num_train_samples=2)),
                    lambda tk: GPTaskSampler(max_points=12)),
    "pvrnn": Case(lambda **kw: PVRNNTrainer(**{"num_steps": NUM_STEPS, "lr": 1e-2, "weight_decay": 1e-3, "seed": 3,
                                               **kw}),
                  _seeded_model(lambda: PVRNN(2, (6, 4), (2, 1), (2.0, 4.0), meta_prior=0.1)), _trajectories,
                  fit_class=PVRNNFit),
    "vrnn": Case(lambda **kw: VRNNTrainer(**{"num_steps": NUM_STEPS, "lr": 1e-2, "seed": 3, **kw}),
                 _seeded_model(lambda: VRNN(2, hidden_size=6, latent_size=2, feature_size=4, kl_weight=0.1)),
                 _trajectories, fit_class=VRNNFit),
    "pfn-gp": Case(_pfn_trainer, _pfn(None), lambda tk: GPPrior(max_features=2).to(tk["device"]),
                   fit_class=PFNFit, load_kwargs=lambda m: {}),
    "pfn-classification": Case(_pfn_trainer, _pfn(3),
                               lambda tk: BNNPrior(max_features=2, num_classes=3).to(tk["device"]),
                               fit_class=PFNFit, load_kwargs=lambda m: {}),
    "sltt": Case(lambda **kw: SLTTTrainer(**{"num_steps": NUM_STEPS, "batch_size": 8, "lr": 1e-2, "seed": 3, **kw}),
                 _spiking, _labelled),
    "sltt-k": Case(lambda **kw: SLTTTrainer(**{"num_steps": NUM_STEPS, "batch_size": 8, "K": 2, "seed": 3, **kw}),
                   _spiking, _labelled),
    "tprocess-classifier": Case(lambda **kw: SparseTProcessTrainer(**{"num_steps": NUM_STEPS, "batch_size": 8,
                                                                       "num_samples": 2, "seed": 3, **kw}),
                                _tprocess_classifier, _labelled),
    "prior-matcher": Case(lambda **kw: PriorMatcher(**{"num_steps": NUM_STEPS, "num_functions": 16, "seed": 3, **kw}),
                          _bnn_prior, _gp_at_measurement_sets, module=lambda m: m.prior, fit_class=MatchResult,
                          load_kwargs=lambda m: {"module": m.prior}),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _fit(case: Case, tkwargs: dict, **overrides: Any) -> tuple[Any, Fit]:
    model = case.model(tkwargs)
    return model, case.trainer(**overrides).fit(model, case.data(tkwargs), progress=False)


def test_fit_has_history_and_record(case: Case, tkwargs: dict) -> None:
    model, fit = _fit(case, tkwargs)
    assert isinstance(fit, case.fit_class)
    assert fit.module is case.module(model) or isinstance(fit.module, nn.Module)
    assert fit.history["loss"].shape == (NUM_STEPS,)
    assert bool(torch.isfinite(fit.history["loss"]).all())
    assert all(v.shape == (NUM_STEPS,) for v in fit.history.values())
    assert fit.attrs["trainer"] == type(case.trainer()).__name__ and fit.attrs["num_steps"] == NUM_STEPS
    assert isinstance(fit.attrs["seed"], int) and fit.attrs["seconds"] > 0


def test_same_seed_same_fit(case: Case, tkwargs: dict) -> None:
    _, a = _fit(case, tkwargs)
    model, data = case.model(tkwargs), case.data(tkwargs)
    state = torch.get_rng_state()
    b = case.trainer().fit(model, data, progress=False)
    assert torch.equal(state, torch.get_rng_state())  # a seeded fit leaves the caller's random stream alone
    assert _states_equal(a.module, b.module) and torch.equal(a.history["loss"], b.history["loss"])
    _, c = _fit(case, tkwargs, seed=12345)
    assert not torch.equal(a.history["loss"], c.history["loss"])


class _Killed(Exception):
    pass


def test_resume_after_an_interruption_is_bit_exact(case: Case, tkwargs: dict, tmp_path: Path) -> None:
    every = 2
    _, whole = _fit(case, tkwargs, checkpoint_path=tmp_path / "whole.safetensors", checkpoint_every=every)

    def die(step: int, metrics: dict[str, float]) -> None:
        if step == every + 1:  # one step after the checkpoint at `every`, never saved
            raise _Killed

    path = tmp_path / "killed.safetensors"
    with pytest.raises(_Killed):
        _fit(case, tkwargs, checkpoint_path=path, checkpoint_every=every, callback=die)
    path.with_name(path.name + ".tmp").write_bytes(b"half a file")  # as a kill during a write leaves it
    _, resumed = _fit(case, tkwargs, checkpoint_path=path, checkpoint_every=every)
    assert resumed.attrs["resumed_from"] == every
    assert _states_equal(whole.module, resumed.module)
    assert torch.equal(whole.history["loss"], resumed.history["loss"])
    assert not path.with_name(path.name + ".tmp").exists()
    with pytest.raises(ValueError, match="different settings"):
        _fit(case, tkwargs, checkpoint_path=path, checkpoint_every=every, lr=0.5)


def test_non_finite_loss_stops_with_the_fix_named(case: Case, tkwargs: dict) -> None:
    model = case.model(tkwargs)

    def poison(step: int, metrics: dict[str, float]) -> None:
        if step == 1:
            with torch.no_grad():
                for p in case.module(model).parameters():
                    p.fill_(math.nan)

    with pytest.raises(FloatingPointError, match="lower lr"):
        case.trainer(callback=poison).fit(model, case.data(tkwargs), progress=False)


def test_fit_save_load_round_trip(case: Case, tkwargs: dict, tmp_path: Path) -> None:
    _, fit = _fit(case, tkwargs)
    fit.save(tmp_path / "fit.safetensors")
    fresh = case.model(tkwargs)
    loaded = case.fit_class.load(tmp_path / "fit.safetensors", **case.load_kwargs(fresh))
    assert type(loaded) is type(fit)
    assert _states_equal(fit.module, loaded.module)
    assert fit.history.keys() == loaded.history.keys()
    assert all(torch.equal(fit.history[k], loaded.history[k]) for k in fit.history)
    assert loaded.attrs == fit.attrs
    for name in fit.extras:
        a, b = getattr(fit, name), getattr(loaded, name)
        if isinstance(a, nn.Module):
            assert _states_equal(a, b)
        elif isinstance(a, dict):  # a dict of tensors, e.g. a state_dict
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_progress_false_prints_nothing(case: Case, tkwargs: dict, capfd: pytest.CaptureFixture) -> None:
    _fit(case, tkwargs)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_bad_settings_name_the_argument(case: Case) -> None:
    with pytest.raises(ValueError, match="num_steps"):
        case.trainer(num_steps=0)
    with pytest.raises(ValueError, match="lr"):
        case.trainer(lr=-1.0)
