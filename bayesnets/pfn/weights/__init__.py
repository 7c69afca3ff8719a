"""Package data: PFN weights trained by this project (safetensors, no network access).

This leaf module only knows where the files are; :meth:`bayesnets.pfn.model.PFN.pretrained`
reads them and :mod:`bayesnets.pfn.pretrained` documents what each one is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

__all__ = ["available", "weights_file"]


def available() -> list[str]:
    """Names of the shipped PFNs."""
    return sorted(p.name.removesuffix(".safetensors") for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".safetensors"))


@contextlib.contextmanager
def weights_file(name: str) -> Iterator[Path]:
    """The path of shipped PFN ``name`` for the length of the block.

    Raises:
        ValueError: no shipped PFN of that name (the message lists them).
    """
    names = available()
    if name not in names:
        raise ValueError(f"no shipped PFN named {name!r}; available: {names}")
    with resources.as_file(resources.files(__name__) / f"{name}.safetensors") as path:
        yield path
