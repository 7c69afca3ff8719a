"""Settings checks shared by every engine, trainer, model and prior, and the renames of settings.

One function per kind of setting, each raising a ``ValueError`` (``TypeError`` for the wrong
kind of object) that names the argument and what it must be, and returning the value in
its canonical Python type, so a constructor reads ``self.num_steps = check_int(num_steps,
"num_steps")``. Tensors holding one number are accepted wherever a number is.

Renamed settings keep their old names for one release, with a ``DeprecationWarning``:
:func:`renamed_kwargs` for keyword arguments (with :func:`canonical_kwargs` for option
dicts merged over defaults), :func:`renamed_attributes` for module-level names.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

__all__ = [
    "INIT_STRATEGIES",
    "Configurable",
    "canonical_kwargs",
    "check_choice",
    "check_float",
    "check_init",
    "check_int",
    "check_name_or_callable",
    "positive_float",
    "renamed_attributes",
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
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        if maximum is None:
            want = f">= {minimum}"
        elif minimum is None:
            want = f"<= {maximum}"
        else:
            want = f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {want}, got {v}")
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


def check_name_or_callable(value: Any, name: str, choices: Iterable[str], what: str) -> str:
    """A setting given by name (one of ``choices``) or as a callable (``what`` says its
    signature, e.g. ``"params -> Optimizer"``); returns the label to record: the name, or the
    callable's ``__name__`` (``"custom"`` without one).

    Raises:
        ValueError: an unknown name (listing the choices).
        TypeError: neither a name nor a callable.
    """
    if isinstance(value, str):
        return check_choice(value, name, choices)
    if not callable(value):
        raise TypeError(f"{name} must be a name or a callable {what}, got {type(value).__name__}")
    return getattr(value, "__name__", "custom")


class Configurable:
    """Settings in ``__init__``, recorded: the shared base of engines and trainers.

    :meth:`settings` is every public attribute holding a JSON scalar (what a ``Posterior`` or a
    ``Fit`` records in its ``attrs``, and what a checkpoint is matched on); private attributes
    (``_name``) hold the objects behind them (callables, tensors).
    """

    def settings(self) -> dict[str, Any]:
        """JSON-friendly settings."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


# ================================================================= renamed settings
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _rename(kwargs: dict[str, Any], renames: Mapping[str, str], owner: str,
            positional: Callable[[str], bool], stacklevel: int) -> dict[str, Any]:
    """``kwargs`` with the old names in ``renames`` (old -> new) replaced by the new ones."""
    given_as: dict[str, str] = {}
    for old, new in renames.items():
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if new in kwargs or positional(new):
            first = f"{given_as[new]}=" if new in given_as else (
                f"{new}=" if new in kwargs else "a positional argument")
            raise TypeError(f"{owner}() got {new} twice, as {first} and as {old}= (the deprecated name of "
                            f"{new}); pass only {new}=")
        warnings.warn(f"{owner}: {old} is deprecated; use {new} (the old name goes in the next release)",
                      DeprecationWarning, stacklevel=stacklevel + 1)
        kwargs[new] = value
        given_as[new] = old
    return kwargs


def renamed_kwargs(**renames: str) -> Callable[[F], F]:
    """Decorator: accept the old names of renamed keyword arguments for one release.

    ``@renamed_kwargs(num_burnin="num_warmup")`` on a function, method or ``__init__`` whose
    argument is now called ``num_warmup``: a call with ``num_burnin=v`` emits
    ``DeprecationWarning("SGLD.__init__: num_burnin is deprecated; use num_warmup (...)")``
    pointing at the caller's line and runs as ``num_warmup=v``. Several old names may map to
    one new one (``@renamed_kwargs(steps="num_steps", epochs="num_steps")``). The function
    keeps its signature, defaults and docstring (``inspect.signature`` shows the new names
    only); the map is kept as ``fn.renamed_kwargs`` for :func:`canonical_kwargs`. The new
    names are the one vocabulary of ``docs/design.md``; the old ones go in the next release.

    Args:
        **renames: old name -> new name (a parameter of the decorated function).

    Raises:
        TypeError: at decoration, when a new name is not a keyword parameter of the function or
            an old name still is one; at a call, when the value comes under two names (the old
            and the new one, positionally or by keyword, or two old ones), as Python's own
            "got multiple values for argument" does.
    """

    def decorate(fn: F) -> F:
        params = inspect.signature(fn).parameters
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        for old, new in renames.items():
            if new not in params or params[new].kind not in keyword:
                raise TypeError(f"renamed_kwargs: {new!r} is not a keyword parameter of {fn.__qualname__}")
            if old in params:
                raise TypeError(f"renamed_kwargs: {old!r} is still a parameter of {fn.__qualname__}")
        order = [n for n, p in params.items() if p.kind in _POSITIONAL]
        slot = {new: order.index(new) for new in renames.values() if new in order}

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if kwargs:
                kwargs = _rename(kwargs, renames, fn.__qualname__,
                                 lambda new: slot.get(new, len(args)) < len(args), stacklevel=2)
            return fn(*args, **kwargs)

        wrapper.renamed_kwargs = dict(renames)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def canonical_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` for ``fn`` with the old names it accepts (:func:`renamed_kwargs`) replaced by
    the new ones, warning as a call would.

    For option dicts merged over defaults, where an old name in the user's options would
    otherwise meet the new name in the defaults: ``Engine(**{**DEFAULTS,
    **canonical_kwargs(Engine, options)})``.

    Args:
        fn: a function, or a class whose ``__init__`` is decorated.
        kwargs: keyword arguments for it.

    Raises:
        TypeError: a value under two names.
    """
    target = fn.__init__ if isinstance(fn, type) else fn  # type: ignore[misc]
    renames = getattr(target, "renamed_kwargs", {})
    return _rename(dict(kwargs), renames, getattr(target, "__qualname__", repr(fn)), lambda new: False,
                   stacklevel=2)


def renamed_attributes(module: str, renames: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) that answers old names for one release.

    ``__getattr__ = renamed_attributes(__name__, {"ValueAndGrad": "GradAndValue"})`` makes
    ``from <module> import ValueAndGrad`` return ``GradAndValue`` with a ``DeprecationWarning``
    naming the new place. Targets are looked up on use, so they may live in modules that
    import this one.

    Args:
        module: the module's ``__name__``.
        renames: old name -> new name in the same module, or ``"package.module:name"``.
    """

    def __getattr__(name: str) -> Any:
        target = renames.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        where, _, new = target.rpartition(":")
        where = where or module
        value = getattr(importlib.import_module(where), new)
        warnings.warn(f"{module}.{name} is deprecated; use {where}.{new}", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
