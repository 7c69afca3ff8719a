"""Settings checks shared by every engine, trainer, model and prior.

One function per kind of setting, each raising a ``ValueError`` (``TypeError`` for the wrong
kind of object) that names the argument and what it must be, and returning the value in
its canonical Python type, so a constructor reads ``self.num_steps = check_int(num_steps,
"num_steps")``. Tensors holding one number are accepted wherever a number is.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = [
    "INIT_STRATEGIES",
    "check_choice",
    "check_float",
    "check_init",
    "check_int",
    "positive_float",
    "renamed_kwargs",
]

#: Start points every sampler and optimiser over a model's latent sites understands: a prior
#: draw, the wrapped module's current weights (prior draws for the other sites), or zeros in
#: unconstrained space.
INIT_STRATEGIES = ("prior", "module", "zeros")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _number(value: Any) -> Any:
    """A one-element tensor or array as a Python number; anything else unchanged."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: getattr(value, "size", 2))() == 1:
        return value.item()
    return value


def check_int(value: Any, name: str, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (either bound ``None``: open).

    Integral floats (``1e3``) are accepted; booleans and fractional numbers are not, since
    ``int()`` would silently truncate them.

    Raises:
        ValueError: not an integer, or out of range.
    """
    v = _number(value)
    if isinstance(v, bool) or not (isinstance(v, numbers.Integral)
                                   or (isinstance(v, float) and math.isfinite(v) and v.is_integer())):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def check_float(value: Any, name: str, low: float = -math.inf, high: float = math.inf, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite ``float`` in the interval from ``low`` to ``high``.

    Args:
        low, high: the bounds (infinite: none on that side).
        low_open, high_open: exclude the bound itself (``(0, 1]`` is ``low=0, high=1, low_open=True``).

    Raises:
        ValueError: not a finite real number, or outside the interval (the message shows it).
    """
    v = _number(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    v = float(v)
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if below or above:
        if math.isinf(high):
            want = ("positive" if low == 0 else f"> {low:g}") if low_open else f">= {low:g}"
        elif math.isinf(low):
            want = f"< {high:g}" if high_open else f"<= {high:g}"
        else:
            want = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {want}, got {v!r}")
    return v


def positive_float(value: Any, name: str) -> float:
    """``value`` as a finite ``float > 0`` (learning rates, scales, variances)."""
    return check_float(value, name, 0.0, low_open=True)


def check_choice(value: T, name: str, choices: Iterable[T]) -> T:
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: listing the choices.
    """
    options = tuple(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in options)}; got {value!r}")
    return value


def check_init(init: str, name: str = "init") -> str:
    """A start-point strategy from :data:`INIT_STRATEGIES`."""
    return check_choice(init, name, INIT_STRATEGIES)


def renamed_kwargs(**renames: str) -> Callable[[F], F]:
    """Decorator: keep old keyword names of a function or ``__init__`` working for one release.

    ``@renamed_kwargs(num_burnin="num_warmup")`` maps ``num_burnin=`` to ``num_warmup=`` with a
    ``DeprecationWarning`` naming the new keyword; passing both is a ``TypeError``. The new
    names are the one vocabulary of ``docs/design.md``; the old ones go in the next release.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__qualname__}() got {old!r} (deprecated) and {new!r}; pass only {new!r}")
                    warnings.warn(f"{fn.__qualname__}: {old!r} is deprecated, use {new!r} (the old name goes in the "
                                  "next release)", DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
