"""Two-point observables of a network and the theory's pairwise prediction for N points."""

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import RealScalarLike
from ._theory import EffectiveTheory
from ._validation import check_finite, check_positive, concrete_array


class TwoPointObservables(NamedTuple):
    """The reduced state of two points (`THEORY.md` §1); unpack as `h, y, w, m = obs`."""

    h: Float[Array, ""]
    """`‖h(x₂) − h(x₁)‖²`, the squared hidden distance."""
    y: Float[Array, ""]
    """`‖ŷ₂ − ŷ₁‖²`, the squared output distance."""
    w: Float[Array, ""]
    """`y − dy*·(ŷ₂ − ŷ₁)`."""
    m: Float[Array, ""]
    """`‖ȳ − ȳ*‖²`, the squared error of the mean prediction."""


def _flat_pairs(name: str, value: ArrayLike, n: int | None = 2) -> Array:
    arr = jnp.asarray(value)
    if arr.ndim < 1 or (n is not None and arr.shape[0] != n):
        want = "a leading axis of length 2 (one entry per point)" if n == 2 else "a leading point axis"
        raise ValueError(f"`{name}` must have {want}, got shape {arr.shape}.")
    if not jnp.issubdtype(arr.dtype, jnp.inexact):
        arr = arr.astype(float)
    check_finite(name, arr)
    return arr.reshape(arr.shape[0], -1)


def squared_error_loss(outputs: Array, targets: Array) -> Array:
    """`½ · mean over points of ‖ŷ − y*‖²` (THEORY.md §1), points on the leading axis: the training
    loss of `mse_loss` and the `loss` the observers record."""
    n = outputs.shape[0]
    return 0.5 * jnp.mean(jnp.sum((outputs - targets).reshape(n, -1) ** 2, axis=1))


def pair_distances(x: Float[ArrayLike, "2 ..."], y_target: Float[ArrayLike, "2 ..."]) -> tuple[Array, Array]:
    """`(dx2, dy2)`: the squared input and target distances of two points (leading axis 2)."""
    x = _flat_pairs("x", x)
    y_target = _flat_pairs("y_target", y_target)
    return jnp.sum((x[1] - x[0]) ** 2), jnp.sum((y_target[1] - y_target[0]) ** 2)


def two_point_observables(
    x: Float[ArrayLike, "2 ..."],
    y_target: Float[ArrayLike, "2 ..."],
    hidden: Float[ArrayLike, "2 ..."],
    y_pred: Float[ArrayLike, "2 ..."],
) -> TwoPointObservables:
    """The effective theory's state `h, y, w, m` read off a network at two points.

    **Arguments:** arrays with a leading axis of length 2 (point 1, point 2); any trailing shape,
    which is flattened (so convolutional feature maps work as they are).

    - `x`: the two inputs (only checked for shape here; `pair_distances` gives `dx2`).
    - `y_target`: the two targets `y₁*, y₂*`.
    - `hidden`: the two hidden representations at the observed layer.
    - `y_pred`: the two network outputs `ŷ₁, ŷ₂`.

    **Returns:** a `TwoPointObservables` `(h, y, w, m)`; see `THEORY.md` §1.

    !!! example

        ```python
        h, y, w, m = two_point_observables(x, y_star, hidden, y_hat)
        theory = EffectiveTheory(eta_h, eta_y, *pair_distances(x, y_star))
        sol = solve_theory(theory, jnp.stack([h, y, w]), t1=100.0)
        ```
    """
    _flat_pairs("x", x)
    y_target = _flat_pairs("y_target", y_target)
    hidden = _flat_pairs("hidden", hidden)
    y_pred = _flat_pairs("y_pred", y_pred)
    if y_pred.shape != y_target.shape:
        raise ValueError(
            f"`y_pred` and `y_target` must have the same shape, got {y_pred.shape} and {y_target.shape}."
        )
    dh = hidden[1] - hidden[0]
    dyhat = y_pred[1] - y_pred[0]
    dystar = y_target[1] - y_target[0]
    h = jnp.sum(dh**2)
    y = jnp.sum(dyhat**2)
    w = y - jnp.sum(dystar * dyhat)
    m = jnp.sum((jnp.mean(y_pred, axis=0) - jnp.mean(y_target, axis=0)) ** 2)
    return TwoPointObservables(h=h, y=y, w=w, m=m)


def _squared_distance_matrix(points: Array) -> Array:
    diff = points[:, None, :] - points[None, :, :]
    return jnp.sum(diff**2, axis=-1)


def predict_distances(
    x: Float[ArrayLike, "n ..."],
    y_target: Float[ArrayLike, "n ..."],
    hidden0: Float[ArrayLike, "n ..."],
    y_pred0: Float[ArrayLike, "n ..."],
    eta_h: RealScalarLike,
    eta_y: RealScalarLike,
) -> Float[Array, "n n"]:
    """Predict the final squared representational distances of N points (`THEORY.md` §4).

    Every pair `(i, j)` is treated as its own two-point problem with its own `dx2`, `dy2`, `h0`,
    `y0`, and its final distance is the closed-form `h(∞)` of `EffectiveTheory.fixed_point`. This
    is a heuristic for N > 2 (the pairs are not independent in a real network); for N = 2 it is
    exactly the theory's fixed point.

    **Arguments:**

    - `x`, `y_target`: inputs and targets, leading axis the N points.
    - `hidden0`, `y_pred0`: the network's hidden representations and outputs at initialisation.
    - `eta_h`, `eta_y`: the effective learning rates.

    **Returns:** the `(N, N)` matrix of predicted `‖h_i(∞) − h_j(∞)‖²` (zero on the diagonal and
    for pairs of identical inputs).

    **Raises:** `ValueError` for mismatched point counts, non-finite data, rates ≤ 0, or two
    distinct inputs whose initial hidden representations coincide (`h0 = 0`: singular).
    """
    x = _flat_pairs("x", x, None)
    n = x.shape[0]
    y_target = _flat_pairs("y_target", y_target, None)
    hidden0 = _flat_pairs("hidden0", hidden0, None)
    y_pred0 = _flat_pairs("y_pred0", y_pred0, None)
    for name, arr in (("y_target", y_target), ("hidden0", hidden0), ("y_pred0", y_pred0)):
        if arr.shape[0] != n:
            raise ValueError(f"`{name}` has {arr.shape[0]} points but `x` has {n}.")
    check_positive("eta_h", eta_h)
    check_positive("eta_y", eta_y)
    dx2 = _squared_distance_matrix(x)
    dy2 = _squared_distance_matrix(y_target)
    h0 = _squared_distance_matrix(hidden0)
    y0 = _squared_distance_matrix(y_pred0)
    distinct = dx2 > 0
    collapsed = concrete_array(distinct & (h0 <= 0))
    if collapsed is not None and collapsed.any():
        i, j = np.argwhere(collapsed)[0]
        raise ValueError(
            f"Points {i} and {j} have distinct inputs but identical initial hidden representations "
            "(h0 = 0), where the theory is singular."
        )
    theory = EffectiveTheory(eta_h, eta_y, jnp.where(distinct, dx2, 1.0), dy2)
    safe_h0 = jnp.where(distinct, h0, 1.0)
    _, _, h_inf = theory.fixed_point(safe_h0, jnp.where(distinct, y0, 0.0))
    return jnp.where(distinct, h_inf, 0.0)


class PairwiseObservables(NamedTuple):
    """The two-point state of every pair `i < j` of N points (`pairwise_observables`)."""

    pairs: Array
    """`(P, 2)` indices `(i, j)`, `i < j`, in row-major order; `P = N(N−1)/2`."""
    dx2: Array
    """`(P,)` squared input distances."""
    dy2: Array
    """`(P,)` squared target distances."""
    h: Array
    """`(P, *times)` squared hidden distances."""
    y: Array
    """`(P, *times)` squared output distances."""
    w: Array
    """`(P, *times)`: `y − dy*·dŷ` of each pair."""


def pairwise_observables(
    x: Float[ArrayLike, "n ..."],
    y_target: Float[ArrayLike, "n ..."],
    hidden: Float[ArrayLike, "*times n features"],
    y_pred: Float[ArrayLike, "*times n outputs"],
) -> PairwiseObservables:
    """The effective theory's state `h, y, w` of every pair of N points, optionally over time.

    Use it for data sets with more than two points: each pair `(i, j)` is a two-point problem with
    its own `dx2`, `dy2`, and its trajectory can be fitted with `fit_effective_rates` (batched over
    pairs) or predicted with `predict_distances` (`THEORY.md` §4).

    **Arguments:**

    - `x`, `y_target`: the N inputs and targets (leading axis the points; trailing axes flattened).
    - `hidden`, `y_pred`: hidden representations and outputs, `(n, features)` or with leading time
      axes `(*times, n, features)` (e.g. a flow's observed values over `ts`).

    **Returns:** a `PairwiseObservables` with one row per pair.

    !!! example

        ```python
        obs = {"hidden": lambda m, x, y: jax.vmap(m)(x)[1][2], "out": lambda m, x, y: jax.vmap(m)(x)[0]}
        sol = flowsolve.gradient_flow(net, x, y, t1, observe=obs)
        pw = flowsolve.pairwise_observables(x, y, sol.observed["hidden"], sol.observed["out"])
        fit = flowsolve.fit_effective_rates(sol.ts, pw.h, pw.y, pw.w, pw.dx2, pw.dy2)  # one fit per pair
        ```
    """
    x = _flat_pairs("x", x, None)
    n = x.shape[0]
    y_target = _flat_pairs("y_target", y_target, None)
    hidden, y_pred = jnp.asarray(hidden), jnp.asarray(y_pred)
    if y_target.shape[0] != n:
        raise ValueError(f"`y_target` has {y_target.shape[0]} points but `x` has {n}.")
    for name, arr in (("hidden", hidden), ("y_pred", y_pred)):
        if arr.ndim < 2 or arr.shape[-2] != n:
            raise ValueError(f"`{name}` must have shape (*times, {n}, features), got {arr.shape}.")
        check_finite(name, arr)
    if hidden.shape[:-2] != y_pred.shape[:-2]:
        raise ValueError(f"`hidden` and `y_pred` must share their time axes, got {hidden.shape} and {y_pred.shape}.")
    i, j = np.triu_indices(n, k=1)
    dx = x[j] - x[i]
    dy_target = y_target[j] - y_target[i]
    dh = hidden[..., j, :] - hidden[..., i, :]
    dy = y_pred[..., j, :] - y_pred[..., i, :]
    h = jnp.sum(dh**2, axis=-1)
    y = jnp.sum(dy**2, axis=-1)
    w = y - jnp.sum(jnp.broadcast_to(dy_target, dy.shape) * dy, axis=-1)  # over the time axes
    # pairs first, then time
    h, y, w = (jnp.moveaxis(v, -1, 0) for v in (h, y, w))
    return PairwiseObservables(pairs=jnp.stack([jnp.asarray(i), jnp.asarray(j)], axis=1), dx2=jnp.sum(dx**2, axis=1),
                               dy2=jnp.sum(dy_target**2, axis=1), h=h, y=y, w=w)


def check_layer(layer: Any) -> None:
    """`layer` names a hidden layer: an int (not a bool), negative ones counting from the end."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"`layer` must be an int (a hidden layer's index), got {layer!r}.")


def hidden_at(hiddens: Any, layer: int) -> Array:
    """The hidden representations of `layer`, with an error naming the allowed range when the model
    has no such layer (checked when the flow is traced)."""
    count = len(hiddens)
    if not -count <= layer < count:
        raise ValueError(f"`layer` {layer} is out of range: this model has {count} hidden layers "
                         f"(indices {-count} to {count - 1}).")
    return hiddens[layer]
