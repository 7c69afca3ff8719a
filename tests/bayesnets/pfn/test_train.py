"""PFNTrainer / train_pfn: it learns (beats the prior predictive), resumes bit-exactly after a
SIGKILL, trains data-parallel (2 gloo processes end with identical parameters), and returns a
PFNFit that saves and loads without a module."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bayesnets.pfn import PFN, PFNConfig, PFNFit, PFNTrainer, train_pfn
from bayesnets.pfn.train import load_checkpoint_model, lr_factor
from inference.seeding import seeded
from priors.tasks import BNNPrior, GPPrior
from priors.tasks.gp import gp_predictive

REPO = Path(__file__).resolve().parents[3]
TINY = dict(max_features=1, emsize=16, nlayers=1, nhead=2, nhid=32, num_buckets=20, dropout=0.1)
TINY_RUN = dict(batch_size=4, seq_len=10, lr=1e-3, seed=3, border_datasets=16, progress=False)


@contextlib.contextmanager
def one_thread():
    """Bit-exact comparisons across processes need the same CPU reduction order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def test_tiny_pfn_learns_the_fixed_gp_posterior(device: torch.device) -> None:
    """A few hundred steps on a 1-D fixed-hyperparameter GP prior: held-out NLL far below the
    prior predictive's (the PFN uses the training data) and approaching the exact GP's."""
    prior = GPPrior(max_features=1, lengthscale=0.3, outputscale=1.0, noise=0.01).to(device)
    config = PFNConfig(max_features=1, emsize=32, nlayers=2, nhead=4, nhid=64, num_buckets=50)
    with one_thread():
        fit = train_pfn(prior, config, 250, batch_size=16, seq_len=30, lr=3e-3, seed=0, border_datasets=64,
                        progress=False)
    model = fit.module
    x, y, h = prior.sample_with_hyperparameters(256, 30, 1, torch.Generator(device=device).manual_seed(99))
    n = 15
    with torch.no_grad():
        pfn_nll = -model.predict(x[:, :n], y[:, :n], x[:, n:]).log_prob(y[:, n:]).mean().item()
    prior_nll = 0.5 * math.log(2 * math.pi * 1.01) + 0.5 * float((y[:, n:] ** 2).mean()) / 1.01
    mean, var = gp_predictive(x[:, :n].double(), y[:, :n].double(), x[:, n:].double(), h["lengthscale"].double(),
                              h["outputscale"].double(), h["noise"].double(), "rbf")
    exact_nll = float(-torch.distributions.Normal(mean, var.sqrt()).log_prob(y[:, n:].double()).mean())
    # Measured on CPU (deterministic seeds): prior predictive 1.41, exact GP -0.68, PFN 0.27 after
    # 250 steps (0.63 after 120). The bar, a full nat below the prior predictive, needs the PFN
    # to use the training data; it is not a claim of closeness to the exact GP.
    assert pfn_nll < prior_nll - 1.0, (pfn_nll, prior_nll, exact_nll)
    assert fit.history["loss"].shape == (250,)
    assert model.metadata["training"]["datasets"] == 250 * 16
    assert model.metadata["training"] == fit.attrs["training"]


_KILLED = """
import os, signal, sys, torch
torch.set_num_threads(1)
from bayesnets.pfn import PFNConfig, train_pfn
from priors.tasks import GPPrior

def die(step, loss):
    if step == {kill_at}:  # after the checkpoint at step {every} and one more, unsaved, step
        os.kill(os.getpid(), signal.SIGKILL)

train_pfn(GPPrior(max_features=1), PFNConfig(**{config}), {steps}, checkpoint_path=sys.argv[1],
          checkpoint_every={every}, callback=die, **{run})
raise SystemExit("not killed")
"""


def test_resume_after_kill_is_bit_exact(tmp_path: Path) -> None:
    steps, every = 6, 3
    with one_thread():
        whole = train_pfn(GPPrior(max_features=1), PFNConfig(**TINY), steps, checkpoint_path=tmp_path / "a.st",
                          checkpoint_every=every, **TINY_RUN)
    script = tmp_path / "killed.py"
    script.write_text(_KILLED.format(kill_at=every + 1, every=every, steps=steps, config=TINY, run=TINY_RUN))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "b.st")], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # really killed by SIGKILL
    assert load_file(str(tmp_path / "b.st"))["history.loss"].shape == (every,)
    with one_thread():
        resumed = train_pfn(GPPrior(max_features=1), PFNConfig(**TINY), steps, checkpoint_path=tmp_path / "b.st",
                            checkpoint_every=every, **TINY_RUN)
    assert resumed.attrs["resumed_from"] == every
    for (name, a), (_, b) in zip(whole.module.state_dict().items(), resumed.module.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(whole.history["loss"], resumed.history["loss"])
    ta, tb = load_file(str(tmp_path / "a.st")), load_file(str(tmp_path / "b.st"))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)  # optimizer and RNG states too
    assert any(k.startswith("optim.") for k in ta) and "rng.rank0" in ta
    torch.testing.assert_close(load_checkpoint_model(tmp_path / "a.st").state_dict(), whole.module.state_dict())
    with pytest.raises(ValueError, match="different settings"):
        train_pfn(GPPrior(max_features=1), PFNConfig(**TINY), steps + 1, checkpoint_path=tmp_path / "a.st",
                  **TINY_RUN)


_DDP = """
import os, sys, torch
from safetensors.torch import save_file
torch.set_num_threads(1)
torch.distributed.init_process_group("gloo")
from bayesnets.pfn import PFNConfig, train_pfn
from priors.tasks import GPPrior
out = sys.argv[1]
fit = train_pfn(GPPrior(max_features=1), PFNConfig(**{config}), 4, checkpoint_path=os.path.join(out, "ckpt.st"),
                checkpoint_every=2, **{run})
rank = torch.distributed.get_rank()
assert fit.attrs["training"]["world_size"] == 2
save_file({{k: v.contiguous() for k, v in fit.module.state_dict().items()}}, os.path.join(out, f"rank{{rank}}.st"))
torch.distributed.destroy_process_group()
"""


def test_ddp_two_gloo_processes_agree(tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(_DDP.format(config=TINY, run=TINY_RUN))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(tmp_path / "rank0.st")), load_file(str(tmp_path / "rank1.st"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    with seeded(TINY_RUN["seed"]):  # how the trainer initialises the weights
        init = PFN(PFNConfig(**TINY))
    assert any(not torch.equal(r0[k], v) for k, v in init.named_parameters())  # training moved the weights
    ckpt = load_file(str(tmp_path / "ckpt.st"))
    assert not torch.equal(ckpt["rng.rank0"], ckpt["rng.rank1"])  # each rank draws its own datasets
    assert ckpt["history.loss"].shape == (4,)


def test_classification_and_bad_arguments() -> None:
    prior = BNNPrior(max_features=2, num_classes=3)
    fit = train_pfn(prior, PFNConfig(max_features=2, emsize=16, nlayers=1, nhead=2, nhid=16, num_classes=3), 3,
                    batch_size=4, seq_len=8, border_datasets=4, progress=False)
    x, y = prior.sample(1, 8)
    assert fit.module.predict(x[0, :5], y[0, :5], x[0, 5:]).probs.shape == (3, 3)
    with pytest.raises(ValueError, match="num_classes"):
        train_pfn(prior, PFNConfig(max_features=2), 1)
    with pytest.raises(ValueError, match="max_features"):
        train_pfn(GPPrior(max_features=3), PFNConfig(max_features=2), 1)
    with pytest.raises(ValueError, match="max_train"):
        train_pfn(GPPrior(max_features=1), PFNConfig(max_features=1), 1, seq_len=10, num_test=4, max_train=8)
    with pytest.raises(TypeError, match="TaskPrior"):
        train_pfn("gp", PFNConfig(), 1)


def test_lr_schedule() -> None:
    f = [lr_factor(s, 100, 10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:])) and f[-1] < 1e-3


TRAINER_RUN = {k: v for k, v in TINY_RUN.items() if k != "progress"}


def test_trainer_on_a_pfn_instance_trains_it_in_place(tmp_path: Path) -> None:
    """A PFN instance is trained in place; initialised as the trainer would, it ends as a
    config run does. The fit saves and loads without a module (rebuilt from its attrs)."""
    prior = GPPrior(max_features=1)
    trainer = PFNTrainer(4, **TRAINER_RUN)
    from_config = trainer.fit(PFNConfig(**TINY), prior, progress=False)
    with seeded(TRAINER_RUN["seed"]):
        pfn = PFN(PFNConfig(**TINY))
    fit = trainer.fit(pfn, prior, progress=False)
    assert isinstance(fit, PFNFit) and fit.module is pfn and not pfn.training
    sa, sb = from_config.module.state_dict(), pfn.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(from_config.history["loss"], fit.history["loss"])
    assert fit.attrs["trainer"] == "PFNTrainer" and fit.attrs["model_config"] == {**PFNConfig().__dict__, **TINY}
    fit.save(tmp_path / "fit.safetensors")
    loaded = PFNFit.load(tmp_path / "fit.safetensors")
    assert isinstance(loaded.module, PFN) and not loaded.module.training
    assert loaded.module.metadata == pfn.metadata and loaded.attrs == fit.attrs
    x, y = prior.sample(2, 10, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded.module(x[:, :6], y[:, :6], x[:, 6:]), pfn(x[:, :6], y[:, :6], x[:, 6:]))
    # border_datasets=0 keeps the instance's borders (e.g. to fine-tune a trained PFN).
    borders = pfn.borders.clone()
    PFNTrainer(2, **{**TRAINER_RUN, "border_datasets": 0}).fit(pfn, GPPrior(max_features=1, outputscale=9.0),
                                                               progress=False)
    assert torch.equal(pfn.borders, borders)


def test_train_pfn_keeps_its_old_calling_conventions() -> None:
    """``steps=`` (the old name of ``num_steps``) works with a DeprecationWarning, the callback
    gets ``(step, loss)``, and the deprecated ``training_losses`` is still set."""
    prior = GPPrior(max_features=1)
    seen: list[tuple[int, float]] = []
    new = train_pfn(prior, PFNConfig(**TINY), 3, callback=lambda step, loss: seen.append((step, loss)), **TINY_RUN)
    with pytest.warns(DeprecationWarning, match="num_steps"):
        old = train_pfn(prior, TINY, steps=3, **TINY_RUN)  # the config as a dict
    assert torch.equal(new.history["loss"], old.history["loss"])
    assert seen == list(zip(range(1, 4), new.history["loss"].tolist()))
    assert torch.equal(new.module.training_losses, new.history["loss"].float())


def test_trainer_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="split_weighting"):
        PFNTrainer(1, split_weighting="inverse")
    with pytest.raises(ValueError, match="batch_size"):
        PFNTrainer(1, batch_size=None)
    with pytest.raises(ValueError, match="border_datasets"):
        PFNTrainer(1, border_datasets=-1)
    with pytest.raises(TypeError, match="PFNConfig"):
        PFNTrainer(1).fit("small", GPPrior(max_features=1))
    assert PFNTrainer(50).warmup_steps == 5 and PFNTrainer(50, warmup_steps=0).warmup_steps == 1
