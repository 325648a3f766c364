"""Starting rates for the least squares, from the integrated equations (no grid)."""

import jax.numpy as jnp

from ._data import Data


def cumulative_integral(ts, f):
    return jnp.concatenate([jnp.zeros(1, f.dtype), jnp.cumsum(0.5 * (f[1:] + f[:-1]) * jnp.diff(ts))])


def integral_start(data: Data):
    """Starting rates from the integrated equations, which are linear in `(η_h, η_y)`.

    `h(t) − h0 = −η_h·dx2·∫w`, and likewise for `y` and `w` (`THEORY.md` §2), with the integrals
    taken by the trapezoid rule over the samples: a linear least-squares problem, exact as the
    sampling gets dense, that needs neither `w(0) ≠ 0` (the initial slope) nor a converged final
    distance (`h(∞)`); it uses every sample. Where it yields a non-positive or non-finite rate,
    the `h` equation alone gives `η_h`, the conserved quantity gives `η_h/η_y`, and as a last
    resort the rate is the inverse time span.
    """
    ts, (h, y, w) = data.ts, data.observed.T
    dx2, dy2 = data.dx2, data.dy2
    cum = lambda f: cumulative_integral(ts, f)  # noqa: E731
    zeros = jnp.zeros_like(ts)
    # Columns: coefficient of η_h, of η_y; one block per equation.
    a_h = jnp.stack([-dx2 * cum(w), zeros], axis=-1)
    a_y = jnp.stack([-dx2 * cum(w * y / h), -cum(w * h)], axis=-1)
    a_w = jnp.stack([-0.5 * dx2 * cum((y + w) * w / h), -0.5 * cum((3 * w - y + dy2) * h)], axis=-1)
    blocks = [(a_h, h, 0), (a_y, y, 1), (a_w, w, 2)]
    a = jnp.concatenate([blk / data.scale[i] for blk, _, i in blocks])
    b = jnp.concatenate([(v - v[0]) / data.scale[i] for _, v, i in blocks])
    est = jnp.linalg.lstsq(a, b)[0]
    # Fallbacks.
    eta_h_alone = jnp.sum(a_h[:, 0] * (h - h[0])) / jnp.sum(a_h[:, 0] ** 2)
    dz = y / h - y[0] / h[0]
    ratio = jnp.sum((h - h[0]) * dz) / (dx2 * jnp.sum(dz**2))  # Q = h − ratio·dx2·y/h constant
    good = lambda v: jnp.isfinite(v) & (v > 0)  # noqa: E731
    last_resort = 1.0 / (ts[-1] - ts[0])
    eta_h = jnp.where(good(est[0]), est[0], jnp.where(good(eta_h_alone), eta_h_alone, last_resort))
    eta_y_from_ratio = jnp.where(good(ratio), eta_h / ratio, last_resort)
    eta_y = jnp.where(good(est[1]), est[1], eta_y_from_ratio)
    return jnp.stack([eta_h, eta_y])


def mean_start(data: Data):
    """`η̄` from `m(t) − m0 = −2·η̄·∫m` (least squares), else the inverse time span."""
    integral = cumulative_integral(data.ts, data.m)
    est = -jnp.sum(integral * (data.m - data.m[0])) / (2 * jnp.sum(integral**2))
    return jnp.where(jnp.isfinite(est) & (est > 0), est, 1.0 / (data.ts[-1] - data.ts[0]))
