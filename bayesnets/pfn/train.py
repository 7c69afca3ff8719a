"""Training a PFN on a task prior (Müller et al., arXiv:2112.10510, Algorithm 1 and App. E).

Each step draws a fresh batch of datasets from the prior, splits every dataset into
``n`` train points and the rest as test points, and minimises the test points' negative
log-likelihood under the network's predictive — the prior-data NLL, which equals the
expected KL from the true posterior predictive up to a constant (paper, Corollary 1.1).

:class:`PFNTrainer` is a :class:`~inference.training.trainer.Trainer`:
``PFNTrainer(**settings).fit(model, prior) -> PFNFit``. What is PFN-specific lives here — the
split of each dataset, the fitted bucket borders, the loss, the per-rank data streams; the
optimisation itself is the shared loop (:func:`inference.training.loop.optimize`):

* AdamW, linear warm-up then cosine decay to zero, gradient-norm clipping, mixed precision
  on CUDA (bf16 autocast where supported, else fp16 with a gradient scaler); the loss is
  computed in float32 outside autocast.
* Safetensors checkpoints (never pickle), written atomically, from which a run killed at any
  moment resumes bit-exactly: the model (``model.*``), every optimiser state tensor, every
  rank's random streams (the data generator among them) and the loss history.
* Data parallelism across GPUs/nodes with ``torch.distributed`` (DDP): launch the same
  script with ``torchrun --nproc_per_node=G script.py``; every rank draws its own datasets
  (its own generator), gradients are averaged, rank 0 writes checkpoints. ``batch_size`` is
  the global batch, split evenly across ranks. On CPU the ``gloo`` backend is used.

:func:`train_pfn` is the functional form, ``train_pfn(prior, config, num_steps, **settings)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from bayesnets.pfn.bar import BarDistribution
from bayesnets.pfn.model import PFN, PFNConfig
from inference.checks import check_choice, check_int, renamed_kwargs
from inference.seeding import base_seed, seeded
from inference.training.checkpoint import FORMAT as CHECKPOINT_FORMAT
from inference.training.checkpoint import distributed_context
from inference.training.fit import Fit
from inference.training.loop import lr_factor
from inference.training.trainer import Trainer
from priors.tasks import TaskPrior

__all__ = ["SPLIT_WEIGHTINGS", "PFNFit", "PFNTrainer", "load_checkpoint_model", "lr_factor", "sample_split",
           "train_pfn"]

#: How the number of train points of a step is drawn (see :func:`sample_split`).
SPLIT_WEIGHTINGS = ("inverse_test", "uniform")
# Checkpoints written before training moved onto the shared loop: same "model.*" keys and
# JSON-encoded "model_config", so load_checkpoint_model still reads them (they cannot be resumed).
_OLD_CHECKPOINT_FORMAT = "bayesnets.pfn.checkpoint"
# Seed offset between ranks' data generators (a large prime keeps the streams apart).
_RANK_SEED_STRIDE = 1_000_003
# Datasets per chunk when drawing the prior sample the bucket borders are fitted to.
_BORDER_CHUNK = 64


def sample_split(seq_len: int, num_test: int | None, min_train: int, max_train: int, weighting: str,
                 generator: torch.Generator, like: Tensor) -> tuple[int, int]:
    """Draw the number of train points ``n`` and the dataset length for one step.

    With ``num_test=None`` every dataset has ``seq_len`` points and ``n`` is drawn with weight
    ``1 / (seq_len - n)`` (``"inverse_test"``, the paper's sampler: every ``n`` gets about the
    same number of test points) or uniformly (``"uniform"``, LC-PFN's right-censoring). With
    ``num_test`` set, ``n`` is uniform and the dataset has ``n + num_test`` points, which makes
    short training sets cheap (a GP draw costs ``O(len^3)``).

    Returns:
        ``(n, length)``.
    """
    ns = torch.arange(min_train, max_train + 1, device=like.device)
    if num_test is None and weighting == "inverse_test":
        w = 1.0 / (seq_len - ns).to(torch.float64)
    else:
        w = torch.ones(len(ns), dtype=torch.float64, device=like.device)
    n = int(ns[torch.multinomial(w, 1, generator=generator)])
    return n, (seq_len if num_test is None else n + num_test)


def _loss(model: PFN, logits: Tensor, target: Tensor) -> Tensor:
    """Mean test-point NLL (bar distribution or cross-entropy), computed in float32."""
    logits = logits.float()
    if model.regression:
        return -BarDistribution(logits, model.borders.float()).log_prob(target.float()).mean()
    return F.cross_entropy(logits.flatten(0, 1), target.flatten().long())


def _agree_finite(loss: Tensor, device: torch.device) -> Tensor:
    """``loss``, or NaN on every rank when it is not finite on some rank.

    The loop stops at a non-finite loss before backward; a rank stopping alone would leave the
    others waiting forever in DDP's gradient all-reduce, so the ranks decide together.
    """
    comm = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    bad = (~torch.isfinite(loss.detach())).to(comm, torch.float32).reshape(1)
    torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    return loss.detach() * math.nan if bool(bad.item()) else loss


def _as_config(model: Any) -> PFNConfig:
    if isinstance(model, PFN):
        return model.config
    if isinstance(model, PFNConfig):
        return model
    if isinstance(model, Mapping):
        return PFNConfig.from_dict(dict(model))
    raise TypeError(f"model must be a PFNConfig, its dict or a PFN, got {type(model).__name__}")


class PFNFit(Fit):
    """What :meth:`PFNTrainer.fit` returns: the trained :class:`~bayesnets.pfn.model.PFN`
    (``module``, in eval mode), the per-step ``history["loss"]`` ``[num_steps]`` (this rank's
    test-point NLL) and ``attrs``: the trainer's settings and seed, plus

    * ``model_config`` — the architecture (``PFNConfig`` as a dict), from which :meth:`load`
      rebuilds the network, so ``PFNFit.load(path)`` needs no module;
    * ``training`` — the training record, the same dict as ``module.metadata["training"]``
      (the settings under their recorded names — ``steps``, ``batch_size``, ``seq_len``, ...,
      ``border_datasets`` — then ``world_size``, ``device``, ``final_loss`` (mean of the last
      1% of steps), ``seconds``, ``datasets`` and the ``prior``'s config), which
      :meth:`PFN.save <bayesnets.pfn.model.PFN.save>` stores with shipped weights.
    """

    @classmethod
    def build_module(cls, attrs: Mapping[str, Any]) -> nn.Module:
        """A fresh PFN of the saved architecture, carrying the saved training record."""
        pfn = PFN(PFNConfig.from_dict(dict(attrs["model_config"])))
        pfn.metadata = {"training": dict(attrs["training"])}
        return pfn.eval()


class PFNTrainer(Trainer):
    """Train a PFN on datasets drawn from a task prior (arXiv:2112.10510, Algorithm 1).

    The model and the data live on the prior's device (``prior.to("cuda")``); under DDP each
    rank uses ``cuda:LOCAL_RANK`` when the prior is on CUDA.

    Args:
        num_steps: optimiser steps.
        batch_size: datasets per step (global; split evenly across DDP ranks).
        seq_len: points per dataset (with ``num_test=None``), else the most train points plus
            ``num_test`` bound ``max_train``.
        num_test: fixed number of test points per dataset, or ``None`` (see :func:`sample_split`).
        min_train, max_train: range of train-set sizes ``n`` (default max: all but the test points).
        split_weighting: ``"inverse_test"`` (paper) or ``"uniform"`` (LC-PFN's right-censoring).
        border_datasets: prior datasets (drawn with ``seed`` on every rank) whose targets the
            bucket borders and input standardisations are fitted to before training; 0 keeps
            the model's own (e.g. to fine-tune a trained PFN instance).
        optimizer, lr, schedule, clip, amp, seed: as for
            :class:`~inference.training.trainer.Trainer`, with the PFN's defaults: AdamW, peak
            lr 1e-3, ``"warmup_cosine"`` (linear warm-up over ``warmup_steps``, default 10% of
            ``num_steps``, then cosine to 0), gradient norm clipped at 1.0, mixed precision on
            CUDA (bf16 where supported, else fp16 with a gradient scaler), seed 0. ``seed``
            seeds the model's initialisation, the bucket borders and the data stream (rank
            ``r`` draws from ``seed + r * 1_000_003``); the caller's random state is untouched.
        **loop: the other :class:`~inference.training.trainer.Trainer` settings
            (``weight_decay``, ``warmup_steps``, ``checkpoint_path``, ``checkpoint_every``,
            ``resume``, ``callback(step, metrics)``).

    Example:
        >>> fit = PFNTrainer(2000, batch_size=32, seq_len=50).fit(PFNConfig(max_features=1), GPPrior(1))
        >>> fit.module.predict(train_x, train_y, test_x)       # the trained PFN
        >>> fit.history["loss"]                                # [2000]
    """

    def __init__(self, num_steps: int = 1000, *, batch_size: int = 64, seq_len: int = 100,
                 num_test: int | None = None, min_train: int = 1, max_train: int | None = None,
                 split_weighting: str = "inverse_test", border_datasets: int = 512,
                 optimizer: str | Callable[..., Any] = "adamw", lr: float = 1e-3,
                 schedule: str | Callable[..., Any] | None = "warmup_cosine", clip: float | None = 1.0,
                 amp: bool = True, seed: int | None = 0, **loop: Any) -> None:
        super().__init__(num_steps, optimizer=optimizer, lr=lr, schedule=schedule, clip=clip, amp=amp,
                         batch_size=batch_size, seed=seed, **loop)
        if self.batch_size is None:
            raise ValueError("batch_size must be an integer >= 1 (datasets per step), got None")
        self.seq_len = check_int(seq_len, "seq_len")
        self.num_test = None if num_test is None else check_int(num_test, "num_test")
        self.min_train = check_int(min_train, "min_train")
        top = self.seq_len - 1 if self.num_test is None else self.seq_len - self.num_test
        self.max_train = top if max_train is None else check_int(max_train, "max_train")
        if not 1 <= self.min_train <= self.max_train <= top:
            raise ValueError(f"need 1 <= min_train ({self.min_train}) <= max_train ({self.max_train}) <= {top}")
        self.split_weighting = check_choice(split_weighting, "split_weighting", SPLIT_WEIGHTINGS)
        self.border_datasets = check_int(border_datasets, "border_datasets", 0)
        # Resolved here so that the training record names the warm-up that was run.
        self.warmup_steps = max(1, self.num_steps // 10 if self.warmup_steps is None else self.warmup_steps)

    def fit(self, model: PFNConfig | Mapping[str, Any] | PFN, prior: TaskPrior,  # type: ignore[override]
            progress: bool = True) -> PFNFit:
        """Train a PFN on datasets drawn from ``prior``.

        Args:
            model: a :class:`PFNConfig` (or its dict) for a new PFN initialised from ``seed``,
                or a :class:`PFN` to train in place (its initialisation is the caller's). Its
                ``max_features`` must cover the prior's.
            prior: the task prior the datasets are drawn from.
            progress: tqdm bar with the running loss (rank 0 only).

        Returns:
            A :class:`PFNFit`. The PFN also gets ``metadata = {"training": fit.attrs["training"]}``
            (stored by ``PFN.save``) and, deprecated (use ``fit.history["loss"]``; it goes in the
            next release), ``training_losses`` (the loss history as a float tensor).

        Raises:
            TypeError: ``prior`` is not a TaskPrior, or ``model`` none of the above.
            ValueError: the model does not fit the prior, or ``batch_size`` is not a multiple of
                the DDP world size.
            FloatingPointError: the loss became non-finite (the message names the fix).
        """
        if not isinstance(prior, TaskPrior):
            raise TypeError(f"prior must be a TaskPrior, got {type(prior).__name__}")
        config = _as_config(model)
        if config.max_features < prior.max_features:
            raise ValueError(f"model_config.max_features ({config.max_features}) < prior.max_features "
                             f"({prior.max_features})")
        if (config.num_classes is None) != (prior.task == "regression"):
            raise ValueError(f"a {prior.task} prior needs "
                             f"{'num_classes=None' if prior.task == 'regression' else 'num_classes set'} in "
                             "model_config")
        rank, world, local_rank = distributed_context()
        batch_size = int(self.batch_size)  # type: ignore[arg-type]  # never None, see __init__
        if batch_size % world:
            raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of the world size ({world})")
        device = prior.device
        if device.type == "cuda" and world > 1:
            device = torch.device("cuda", local_rank)
            prior = prior.to(device)
        local_batch = batch_size // world
        seed = base_seed(self.seed)
        stream = seed + rank * _RANK_SEED_STRIDE

        with seeded(stream, like=device):  # dropout draws from torch's stream, different on each rank
            if isinstance(model, PFN):
                pfn = model.to(device)
            else:
                with seeded(seed, like=device):  # the same initial weights on every rank
                    pfn = PFN(config).to(device)
            generator = torch.Generator(device=device).manual_seed(stream)
            if self.border_datasets and not self._resuming():  # a resumed run gets them from its checkpoint
                self._fit_borders(pfn, prior, seed, device)
            net: nn.Module = pfn
            if world > 1:
                net = nn.parallel.DistributedDataParallel(pfn, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
            pfn.train()

            def draw(step: int) -> tuple[int, Tensor, Tensor]:
                n, length = sample_split(self.seq_len, self.num_test, self.min_train, self.max_train,
                                         self.split_weighting, generator, prior._anchor)
                x, y = prior.sample(local_batch, length, generator=generator)
                return n, x, y

            def loss(batch: tuple[int, Tensor, Tensor]) -> Tensor:
                n, x, y = batch
                logits = net(x[:, :n], y[:, :n], x[:, n:])
                with torch.autocast(device.type, enabled=False):  # the NLL in float32, outside mixed precision
                    value = _loss(pfn, logits, y[:, n:])
                return value if world == 1 else _agree_finite(value, device)

            result = self._optimize({"model": pfn}, loss, batches=draw, progress=progress,
                                    generators={"data": generator},
                                    meta={"model_config": asdict(config), "prior": prior.config()})
        pfn.eval()
        losses = result.history["loss"].tolist()
        tail = losses[-max(1, len(losses) // 100):]
        record = {"steps": self.num_steps, "batch_size": batch_size, "seq_len": self.seq_len,
                  "num_test": self.num_test, "min_train": self.min_train, "max_train": self.max_train,
                  "split_weighting": self.split_weighting, "lr": self.lr, "weight_decay": self.weight_decay,
                  "warmup_steps": self.warmup_steps, "clip": self.clip, "amp": self.amp, "seed": seed,
                  "border_datasets": self.border_datasets, "world_size": world, "device": str(device),
                  "final_loss": sum(tail) / len(tail), "seconds": result.seconds,
                  "datasets": self.num_steps * batch_size, "prior": prior.config()}
        # Through JSON, so the attrs equal those of the saved and reloaded fit.
        attrs = json.loads(json.dumps(self._record(result, seed, model_config=asdict(config), training=record)))
        pfn.metadata = {"training": attrs["training"]}
        pfn.training_losses = result.history["loss"].to(torch.get_default_dtype())  # deprecated
        return PFNFit(pfn, result.history, attrs)

    def _resuming(self) -> bool:
        return self.checkpoint_path is not None and self.resume and Path(self.checkpoint_path).exists()

    def _fit_borders(self, pfn: PFN, prior: TaskPrior, seed: int, device: torch.device) -> None:
        """Fit ``pfn``'s bucket borders and standardisations to ``border_datasets`` prior datasets,
        drawn from ``seed`` so that every rank fits the same ones."""
        border_gen = torch.Generator(device=device).manual_seed(seed)
        xs, ys = [], []
        for i in range(0, self.border_datasets, _BORDER_CHUNK):
            x, y = prior.sample(min(_BORDER_CHUNK, self.border_datasets - i), self.seq_len, generator=border_gen)
            xs.append(x.flatten(0, 1).flatten())  # feature counts differ between chunks
            ys.append(y.flatten())
        pfn.fit_to_prior_sample(torch.cat(xs), torch.cat(ys))


def load_checkpoint_model(path: str | Path) -> PFN:
    """The model stored in a training checkpoint (e.g. to evaluate a run in progress).

    Raises:
        ValueError: the file is not a PFN training checkpoint.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") not in (CHECKPOINT_FORMAT, _OLD_CHECKPOINT_FORMAT) or "model_config" not in meta:
        raise ValueError(f"{path} is not a PFN training checkpoint (format {meta.get('format')!r})")
    model = PFN(PFNConfig.from_dict(json.loads(meta["model_config"])))
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    return model


@renamed_kwargs(steps="num_steps")
def train_pfn(prior: TaskPrior, model_config: PFNConfig | Mapping[str, Any] | PFN, num_steps: int, *,
              progress: bool = True, callback: Callable[[int, float], None] | None = None,
              **settings: Any) -> PFNFit:
    """Train a PFN on datasets drawn from ``prior``: ``PFNTrainer(num_steps, **settings).fit(model_config, prior)``.

    Args:
        prior: the task prior datasets are drawn from.
        model_config: :class:`PFNConfig` (or its dict, or a :class:`PFN` to train in place);
            ``max_features`` must cover the prior's.
        num_steps: optimiser steps (``steps=``, its old name, works for one release).
        progress: tqdm bar with the running loss (rank 0 only).
        callback: ``callback(step, loss)`` after every step (and after its checkpoint), with the
            step's loss as a float (:class:`PFNTrainer`'s ``callback`` gets ``(step, metrics)``).
        **settings: :class:`PFNTrainer`'s settings (``batch_size``, ``seq_len``, ``num_test``,
            ``min_train``, ``max_train``, ``split_weighting``, ``lr``, ``weight_decay``,
            ``warmup_steps``, ``clip``, ``amp``, ``seed``, ``border_datasets``,
            ``checkpoint_path``, ``checkpoint_every``, ``resume``, ...).

    Returns:
        A :class:`PFNFit`: ``fit.module`` is the trained :class:`PFN` (unwrapped, in eval mode,
        with its ``metadata["training"]`` record), ``fit.history["loss"]`` the ``[num_steps]``
        per-step losses of this rank.
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (step, loss) -> None, got {type(callback).__name__}")
    on_step = None if callback is None else (lambda step, metrics: callback(step, metrics["loss"]))
    return PFNTrainer(num_steps, callback=on_step, **settings).fit(model_config, prior, progress=progress)
