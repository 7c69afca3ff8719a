"""Seeding: every random stream a fit uses, seeded by one number, the caller's state untouched.

Engines and trainers draw from torch's global generators (dropout, Pyro's samplers, task
priors) and sometimes from Python's and NumPy's legacy global generators (Pyro seeds all
three). :func:`seeded` seeds them for the length of a block and then restores whatever the
caller had, so a fit with ``seed=s`` gives the same numbers wherever it is called from and
leaves the surrounding program's random sequence as it was. :func:`rng_state` and
:func:`set_rng_state` carry all of these streams (and a fit's own generators) through a
checkpoint as one byte vector, which is what makes a resumed run continue bit-exactly.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import pyro
import torch
from torch import Tensor

__all__ = ["base_seed", "rng_state", "seeded", "set_rng_state"]


def base_seed(seed: int | None) -> int:
    """``seed`` as an int, or one drawn from torch's global generator when ``None`` (so that
    seeding torch makes every engine and trainer reproducible)."""
    if seed is not None:
        return int(seed)
    return int(torch.randint(0, 2**31 - 1, ()).item())


@contextlib.contextmanager
def seeded(seed: int, like: Tensor | torch.device | None = None) -> Iterator[None]:
    """Run a block with torch's (CPU and, for a CUDA ``like``, that device's), Python's and
    NumPy's global generators seeded by ``seed``; restore the caller's states afterwards.

    Args:
        seed: the seed (torch's streams are then exactly those of ``torch.manual_seed(seed)``).
        like: a tensor or device whose CUDA generator is also forked and seeded.
    """
    device = like.device if isinstance(like, Tensor) else like
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        # Pyro seeds the legacy global NumPy and Python generators too; put them back.
        py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
        try:
            pyro.set_rng_seed(seed)
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


# Python's Mersenne Twister state: 624 words and the index, then the cached Gaussian.
_PY_WORDS = 625


def _python_state() -> Tensor:
    _, words, gauss = random.getstate()
    extra = np.array([0.0 if gauss is None else gauss, float(gauss is not None)], dtype=np.float64)
    return torch.from_numpy(np.concatenate([np.asarray(words, dtype=np.uint32).view(np.uint8), extra.view(np.uint8)]))


def _set_python_state(vec: Tensor) -> None:
    raw = vec.numpy()
    words = raw[:4 * _PY_WORDS].view(np.uint32)
    gauss, has_gauss = raw[4 * _PY_WORDS:].view(np.float64)
    random.setstate((3, tuple(int(w) for w in words), float(gauss) if has_gauss else None))


def _numpy_state() -> Tensor:
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    tail = np.array([pos, has_gauss], dtype=np.int64).view(np.uint8), np.array([gauss], dtype=np.float64).view(np.uint8)
    return torch.from_numpy(np.concatenate([np.asarray(keys, dtype=np.uint32).view(np.uint8), *tail]))


def _set_numpy_state(vec: Tensor) -> None:
    raw = vec.numpy()
    keys = raw[:2496].view(np.uint32)
    pos, has_gauss = raw[2496:2512].view(np.int64)
    (gauss,) = raw[2512:2520].view(np.float64)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(gauss)))  # noqa: NPY002


def _parts(generators: list[torch.Generator], device: torch.device | None) -> list[int]:
    """Byte lengths of the pieces of :func:`rng_state`'s vector, in order."""
    cuda = device is not None and torch.device(device).type == "cuda"
    return ([g.get_state().numel() for g in generators] + [torch.get_rng_state().numel()]
            + ([torch.cuda.get_rng_state(device).numel()] if cuda else []) + [2520, 4 * _PY_WORDS + 16])


def rng_state(generators: list[torch.Generator] = (), device: torch.device | None = None) -> Tensor:  # type: ignore[assignment]
    """Every random stream of this process as one ``uint8`` vector (on the CPU): the given
    generators (in order), torch's CPU generator, the CUDA generator of ``device`` (when it is a
    CUDA device), NumPy's and Python's legacy global generators."""
    parts = [g.get_state().cpu() for g in generators] + [torch.get_rng_state()]
    if device is not None and torch.device(device).type == "cuda":
        parts.append(torch.cuda.get_rng_state(device))
    return torch.cat([*parts, _numpy_state(), _python_state()])


def set_rng_state(vec: Tensor, generators: list[torch.Generator] = (),  # type: ignore[assignment]
                  device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` returned (same generators, same device kind).

    Raises:
        ValueError: ``vec`` was written for other generators or another device kind.
    """
    sizes = _parts(list(generators), device)
    if vec.dtype != torch.uint8 or vec.numel() != sum(sizes):
        raise ValueError(f"the saved random state ({vec.numel()} bytes) does not match this run's generators "
                         f"({sum(sizes)} bytes): was it written on another device kind or with other generators?")
    pieces = list(vec.cpu().split(sizes))
    for g, piece in zip(generators, pieces):
        g.set_state(piece.clone())
    rest = pieces[len(generators):]
    torch.set_rng_state(rest.pop(0).clone())
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(rest.pop(0).clone(), device)
    _set_numpy_state(rest.pop(0).clone())
    _set_python_state(rest.pop(0).clone())
