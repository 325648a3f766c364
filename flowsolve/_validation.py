"""Checks at the public boundary.

Every check runs only on *concrete* values (NumPy arrays, Python numbers, JAX arrays
that are not tracers); traced values inside `jax.jit`/`jax.vmap` are checked at run time
by the callers with `eqx.error_if` or reported through a `result` field instead.
"""

from typing import Any

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
    """`True` when every leaf of `x` has a value now (is not a JAX tracer)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def concrete_array(x: Any) -> np.ndarray | None:
    """`x` as a NumPy float array when it is concrete, else `None`."""
    if not is_concrete(x):
        return None
    return np.asarray(x, dtype=np.float64)


def check_real(name: str, x: Any) -> None:
    """A concrete `x` must be a real number or an array of them (not a string, a bool or an object)."""
    if not is_concrete(x):
        return
    kind = "U" if isinstance(x, (str, bytes)) else np.asarray(x).dtype.kind
    if kind not in "iuf":
        raise ValueError(f"`{name}` must be a real number or an array of real numbers, got {x!r}.")


def check_finite(name: str, x: Any) -> None:
    check_real(name, x)
    value = concrete_array(x)
    if value is not None and not np.all(np.isfinite(value)):
        raise ValueError(f"`{name}` must be finite, got {_show(value)}.")


def check_positive(name: str, x: Any, *, allow_zero: bool = False) -> None:
    check_real(name, x)
    value = concrete_array(x)
    if value is None:
        return
    check_finite(name, value)
    bad = value < 0 if allow_zero else value <= 0
    if np.any(bad):
        allowed = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be {allowed}, got {_show(value)}.")


def check_shape(name: str, x: Any, shape: tuple[int, ...]) -> None:
    got = np.shape(x)
    if got != shape:
        raise ValueError(f"`{name}` must have shape {shape}, got shape {got}.")


def _show(value: np.ndarray) -> str:
    if value.ndim == 0:
        return repr(float(value))
    return np.array2string(value, precision=6, threshold=8)
