"""A fit's data, checked once and made ready for the residuals: concrete data that fail a check
raise an error naming it; traced data (inside `jit`/`vmap`, e.g. a sweep's point) give the member a
`valid = False` instead, and a harmless curve in its place (its results are masked afterwards)."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool

from .._validation import is_concrete

MIN_SAMPLES = 8
"""The fewest samples a trajectory may have: two rates (plus up to four initial values) need more
points than parameters, and the integral starting point needs a few intervals."""


class Data(eqx.Module):
    """A flat batch of trajectories, ready for the residuals."""

    ts: Array  # (n, times)
    observed: Array  # (n, times, 3)
    sqrt_weights: Array  # (n, times, 3)
    scale: Array  # (n, 3)
    dx2: Array  # (n,)
    dy2: Array  # (n,)
    m: Array  # (n, times); zeros when not fitted
    m_scale: Array  # (n,)


def _checked_shapes(arrays: dict[str, Any], ts) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """The observed curves' shape, batch shape and number of samples; `ValueError` if the curves or
    `ts` do not match, or there are too few samples."""
    shape = arrays["h"].shape
    for name, value in arrays.items():
        if value.shape != shape:
            raise ValueError(
                f"`{name}` has shape {value.shape} but `h` has {shape}; the observed curves must match."
            )
    if len(shape) < 1:
        raise ValueError("`h`, `y`, `w` must be 1-d trajectories (or batches of them), got scalars.")
    batch_shape, n_times = shape[:-1], shape[-1]
    if ts.shape not in ((n_times,), shape):
        raise ValueError(
            f"`ts` must have shape ({n_times},) or {shape} to match the observed curves, got {ts.shape}."
        )
    if n_times < MIN_SAMPLES:
        raise ValueError(f"A fit needs at least {MIN_SAMPLES} samples per trajectory, got {n_times}.")
    return shape, batch_shape, n_times


def _per_variable(weights, shape: tuple[int, ...]):
    """Weights per sample `shape` or per sample and variable `shape + (3,)`, as the latter."""
    if weights.shape == shape:
        weights = weights[..., None]
    try:
        return jnp.broadcast_to(weights, shape + (3,))
    except ValueError:
        raise ValueError(
            f"`weights` must have shape {shape} (per sample) or {shape + (3,)} (per sample and "
            f"variable), got {weights.shape}."
        ) from None


def _moves(x, axis) -> Array:
    """Not flat to rounding along `axis`."""
    return (x.max(axis) - x.min(axis)) > 1e-12 * jnp.maximum(jnp.abs(x).max(axis), 1e-300)


def prepare(ts, h, y, w, dx2, dy2, m, weights) -> tuple[Data, tuple[int, ...], Bool[Array, " n"]]:
    """Check the data and flatten any batch axes into one: `(data, batch_shape, valid)`.

    Shape errors raise, concrete or traced. Each value check is one predicate per batch member:
    on concrete data the first that fails raises its message; traced, they make `valid`."""
    dtype = jnp.result_type(float)  # float64 with jax_enable_x64, else float32
    arrays = {"h": h, "y": y, "w": w} | ({} if m is None else {"m": m})
    concrete = is_concrete((ts, h, y, w, dx2, dy2, m, weights))
    arrays = {k: jnp.asarray(v, dtype) for k, v in arrays.items()}
    ts = jnp.asarray(ts, dtype)
    shape, batch_shape, n_times = _checked_shapes(arrays, ts)
    dists = {"dx2": jnp.asarray(dx2, dtype), "dy2": jnp.asarray(dy2, dtype)}
    for name, value in dists.items():
        try:
            np.broadcast_to(np.empty(value.shape), batch_shape)
        except ValueError:
            raise ValueError(f"`{name}` must be a scalar or have the batch shape {batch_shape}.") from None
    weights = jnp.ones(shape + (3,), dtype) if weights is None else _per_variable(jnp.asarray(weights, dtype), shape)
    ts = jnp.broadcast_to(ts, shape)
    dx2, dy2 = (jnp.broadcast_to(v, batch_shape) for v in dists.values())
    observed = jnp.stack([arrays["h"], arrays["y"], arrays["w"]], axis=-1)
    every = lambda c: jnp.all(c, axis=-1)  # noqa: E731  (over the samples)

    checks: list[tuple[Array, str | Callable[[Array], str]]] = [
        (every(jnp.isfinite(ts)), "`ts` must be finite (no inf or NaN)."),
        *[(every(jnp.isfinite(v)), f"`{k}` must be finite (no inf or NaN).") for k, v in arrays.items()],
        (every(jnp.diff(ts, axis=-1) > 0), "`ts` must be strictly increasing."),
        (every(arrays["h"] > 0), "`h` = ‖dh‖² must be > 0 at every sample (the theory is singular at h = 0)."),
        (every(arrays["y"] >= 0), "`y` = ‖dŷ‖² must be ≥ 0."),
        (jnp.isfinite(dx2) & (dx2 > 0), lambda bad: f"`dx2` must be finite and > 0, got {dists['dx2']}."),
        (jnp.isfinite(dy2) & (dy2 >= 0), lambda bad: f"`dy2` must be finite and ≥ 0, got {dists['dy2']}."),
        (_any_moves(observed),
         lambda bad: "The data never move: `h`, `y` and `w` are constant"
         + (f" in batch member {np.argwhere(bad)[0].tolist()}" if batch_shape else "")
         + "; there are no dynamics to fit."),
    ]
    if m is not None:
        checks += [(every(arrays["m"] >= 0), "`m` = ‖ȳ − ȳ*‖² must be ≥ 0."),
                   (_moves(arrays["m"], -1), "`m` never moves: the mean's rate cannot be fitted; leave `m` out.")]
    checks += [
        (jnp.all(jnp.isfinite(weights) & (weights >= 0), axis=(-2, -1)), "`weights` must be finite and ≥ 0."),
        # Every variable needs weight on at least two samples: otherwise there is nothing to fit to
        # (all-zero weights would 'converge' to any rates with standard error 0).
        (jnp.all(jnp.sum(weights > 0, axis=-2) >= 2, axis=-1),
         "`weights` must be > 0 on at least two samples of each of h, y, w."),
    ]
    valid = jnp.ones(batch_shape, bool)
    for ok, message in checks:
        if concrete and not np.all(ok):
            raise ValueError(message if isinstance(message, str) else message(~np.asarray(ok)))
        valid &= ok

    if not concrete:  # invalid members: a harmless moving curve in their place
        grid = jnp.linspace(0.0, 1.0, n_times, dtype=dtype)
        keep = valid[..., None]
        ts = jnp.where(keep, ts, grid)
        observed = jnp.where(keep[..., None], observed, jnp.stack([1.0 + grid, 0.5 * grid, -0.5 * grid], axis=-1))
        weights = jnp.where(keep[..., None], weights, 1.0)
        dx2, dy2 = jnp.where(valid, dx2, 1.0), jnp.where(valid, dy2, 0.5)
        if m is not None:
            arrays["m"] = jnp.where(keep, arrays["m"], 1.0 - 0.5 * grid)
    span = observed.max(axis=-2) - observed.min(axis=-2)  # (*batch, 3)
    # A variable that barely moves (e.g. h of a lazy network) is normalised by a floor of 1e-6 of
    # the largest range, so that rounding noise is not amplified.
    scale = jnp.maximum(span, 1e-6 * span.max(axis=-1, keepdims=True))
    m_arr = arrays["m"] if m is not None else jnp.zeros(shape, dtype)
    m_span = m_arr.max(-1) - m_arr.min(-1) if m is not None else jnp.ones(batch_shape, dtype)
    n = int(np.prod(batch_shape))
    flat = lambda x, tail: x.reshape((n,) + tail)  # noqa: E731
    data = Data(
        ts=flat(ts, (n_times,)),
        observed=flat(observed, (n_times, 3)),
        sqrt_weights=flat(jnp.sqrt(weights), (n_times, 3)),
        scale=flat(scale, (3,)),
        dx2=flat(dx2, ()),
        dy2=flat(dy2, ()),
        m=flat(m_arr, (n_times,)),
        m_scale=flat(jnp.maximum(m_span, 1e-300), ()),
    )
    return data, batch_shape, valid.reshape(n)


def _any_moves(observed) -> Array:
    """Some of h, y, w moves (relative to the largest of the three)."""
    span = observed.max(-2) - observed.min(-2)
    return jnp.any(span > 1e-12 * jnp.maximum(jnp.abs(observed).max((-2, -1)), 1e-300)[..., None], axis=-1)
