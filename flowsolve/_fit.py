"""Fitting the effective learning rates of the theory to observed trajectories (`THEORY.md` §4)."""

from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._compile_cache import call_cached
from ._saving import solve_saving_at
from ._custom_types import RealScalarLike
from ._results import RESULTS
from ._theory import EffectiveTheory, TheorySolution, _regular_vector_field, from_regular, solve_theory, to_regular
from ._validation import is_concrete

MIN_SAMPLES = 8
"""The fewest samples a trajectory may have: two rates (plus up to four initial values) need more
points than parameters, and the integral starting point needs a few intervals."""

VectorField = Callable[[Array, Array, Array, Array, Array], Array]
"""An alternative theory's `d/dt [h, y, w]` as `f(state, eta_h, eta_y, dx2, dy2)`."""

_PENALTY = 1e3
"""Residual (in units of the observed range) put where a trial solve failed, so that the optimiser
rejects the trial step instead of reading garbage."""


class FitResult(eqx.Module):
    """The effective learning rates fitted to a trajectory, returned by `fit_effective_rates`.

    Times are those of the data (gradient-flow time for `gradient_flow` output; fitting against
    epochs instead makes the rates absorb the learning rate, `THEORY.md` §4). Fields carry any
    leading batch axes of the data.

    **Fields:**

    - `eta_h`, `eta_y`: the fitted rates.
    - `eta_h_se`, `eta_y_se`: their standard errors, from the Jacobian at the optimum
      (`s²·(JᵀJ)⁻¹` with `s²` the residual variance; delta method from the log-rates).
    - `eta_mean`, `eta_mean_se`: the mean's rate `η̄` (`THEORY.md` §2) when `m` was given, else NaN.
    - `state0`: the initial `[h0, y0, w0]` of the fitted theory: the first sample, or fitted.
    - `m0`: the initial `m` of the fitted theory (NaN without `m`).
    - `dx2`, `dy2`: the distances the theory was fitted with.
    - `init`: the starting `[eta_h, eta_y]` of the optimiser run that gave the result (the integral
      equations' estimate, or equal rates at its geometric mean, or the user's `init`).
    - `residual`: sum of squares of the weighted, normalised residuals at the optimum.
    - `errors`: normalised error of each fitted curve, `RMSE / (max − min)` of the observed one:
      `"h"`, `"y"`, `"w"`, and with `m` also `"m"` and `"loss"`.
    - `converged`: the optimiser met its tolerance and the theory's solve at the optimum succeeded.
    - `result`: a `flowsolve.RESULTS` saying how the fit went: `successful`; `poor_fit` (converged,
      but a normalised error of h, y or w above `max_error`); `fit_not_converged`;
      `theory_solve_failed`; `invalid_input` (traced data that a direct call would refuse).
    - `num_steps`: optimiser steps (both starts); `ode_steps`: solver steps of the final theory solve.
    """

    eta_h: Float[Array, "*batch"]
    eta_y: Float[Array, "*batch"]
    eta_h_se: Float[Array, "*batch"]
    eta_y_se: Float[Array, "*batch"]
    eta_mean: Float[Array, "*batch"]
    eta_mean_se: Float[Array, "*batch"]
    state0: Float[Array, "*batch 3"]
    m0: Float[Array, "*batch"]
    dx2: Float[Array, "*batch"]
    dy2: Float[Array, "*batch"]
    init: Float[Array, "*batch 2"]
    residual: Float[Array, "*batch"]
    errors: dict[str, Float[Array, "*batch"]]
    converged: Bool[Array, "*batch"]
    result: RESULTS
    num_steps: Int[Array, "*batch"]
    ode_steps: Int[Array, "*batch"]

    @property
    def theory(self) -> EffectiveTheory:
        """The fitted `EffectiveTheory`."""
        return EffectiveTheory(self.eta_h, self.eta_y, self.dx2, self.dy2)

    def predict(self, ts: Float[ArrayLike, " times"], **kwargs) -> TheorySolution:
        """Solve the fitted theory from the fitted `state0` at times `ts` (`ts[0]` is the initial
        time); keyword arguments go to `solve_theory`. Unbatched results only; for a batch, index
        the fields or use `solve_theory_batch`."""
        if self.eta_h.ndim != 0:
            raise ValueError("`predict` needs an unbatched fit; index the batch first, e.g. `fit[i]`.")
        ts = jnp.asarray(ts)
        if not is_concrete(self.m0):  # under jit: no mean fitted ⇔ m0 NaN ⇔ m0 = 0 here
            known = jnp.isfinite(self.m0) & jnp.isfinite(self.eta_mean)
            m = {"m0": jnp.where(known, self.m0, 0.0), "eta_mean": jnp.where(known, self.eta_mean, 0.0)}
        else:
            m = {} if not np.isfinite(np.asarray(self.m0)) else {"m0": self.m0, "eta_mean": self.eta_mean}
        return solve_theory(self.theory, self.state0, ts[-1], t0=ts[0], ts=ts, **m, **kwargs)

    def __getitem__(self, index) -> "FitResult":
        """One member (or a slice) of a batched fit."""
        return jax.tree_util.tree_map(lambda x: x[index], self)


class _Layout(NamedTuple):
    """Where each unknown sits in the flat parameter vector (static)."""

    fit_start: bool
    fit_mean: bool
    regular: bool  # the start is in regular coordinates (a, u_par, u_perp), else (h, y, w)
    two_starts: bool = True  # the integral and the equal-rate start; else the user's `init`

    @property
    def size(self) -> int:
        return 2 + 3 * self.fit_start + (1 + self.fit_start) * self.fit_mean


class _Data(eqx.Module):
    """One trajectory, ready for the residual."""

    ts: Array
    observed: Array  # (times, 3)
    sqrt_weights: Array  # (times, 3)
    scale: Array  # (3,)
    dx2: Array
    dy2: Array
    m: Array  # (times,); zeros when not fitted
    m_scale: Array


class _Rates(NamedTuple):
    # Duck-types `EffectiveTheory` for the regular-coordinate helpers, without its checks.
    eta_h: Array
    eta_y: Array
    dx2: Array
    dy2: Array


def _start_state(layout: _Layout, data: _Data) -> Array:
    """The first sample, in the coordinates the solve uses."""
    if layout.regular:
        return jnp.stack(to_regular(_Rates(1.0, 1.0, data.dx2, data.dy2), data.observed[0]))
    return data.observed[0]


def _unpack(layout: _Layout, params: Array, data: _Data):
    rates = jnp.exp(params[:2])
    i = 2
    if layout.fit_start:
        start = params[i : i + 3]
        i += 3
    else:
        start = _start_state(layout, data)
    eta_mean = jnp.exp(params[i]) if layout.fit_mean else jnp.zeros((), params.dtype)
    m0 = params[i + 1] if (layout.fit_mean and layout.fit_start) else data.m[0]
    return rates, start, eta_mean, m0


class _Solver(eqx.Module):
    vector_field: VectorField | None  # an eqx.Module's arrays are traced: one compilation for many
    solver: diffrax.AbstractAdaptiveSolver
    rtol: float
    atol: float
    max_steps: int = eqx.field(static=True)


def _trajectory(solve: _Solver, rates, start, data: _Data):
    """The theory's `[h, y, w]` at `data.ts`, and whether the solve succeeded."""
    consts = _Rates(rates[0], rates[1], data.dx2, data.dy2)
    if solve.vector_field is None:
        term = diffrax.ODETerm(lambda t, s, c: jnp.stack(_regular_vector_field(t, s, c)))
    else:
        field = solve.vector_field
        term = diffrax.ODETerm(lambda t, s, c: field(s, c.eta_h, c.eta_y, c.dx2, c.dy2))
    # Saved by the solver itself: no host callback, so the fit's program can be stored for fresh processes.
    sol = solve_saving_at(term, solve.solver, data.ts[0], data.ts, start, consts,
                          diffrax.PIDController(rtol=solve.rtol, atol=solve.atol), solve.max_steps,
                          adjoint=diffrax.ForwardMode())
    if solve.vector_field is None:
        states = jnp.stack(from_regular(consts, sol.ys[:, 0], sol.ys[:, 1], sol.ys[:, 2]), axis=-1)
    else:
        states = sol.ys
    ok = (sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(states))
    return states, ok, sol.stats["num_steps"]


def _residuals(params, args):
    layout, solve, data = args
    rates, start, eta_mean, m0 = _unpack(layout, params, data)
    states, _, _ = _trajectory(solve, rates, start, data)
    r = (states - data.observed) / data.scale[None, :] * data.sqrt_weights
    r = jnp.where(jnp.isfinite(r), r, _PENALTY).reshape(-1)
    if layout.fit_mean:
        m = m0 * jnp.exp(-2 * eta_mean * (data.ts - data.ts[0]))
        r = jnp.concatenate([r, (m - data.m) / data.m_scale])
    return r


def _cumulative_integral(ts, f):
    return jnp.concatenate([jnp.zeros(1, f.dtype), jnp.cumsum(0.5 * (f[1:] + f[:-1]) * jnp.diff(ts))])


def _integral_start(data: _Data):
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
    cum = lambda f: _cumulative_integral(ts, f)  # noqa: E731
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


def _mean_start(data: _Data):
    """`η̄` from `m(t) − m0 = −2·η̄·∫m` (least squares), else the inverse time span."""
    integral = _cumulative_integral(data.ts, data.m)
    est = -jnp.sum(integral * (data.m - data.m[0])) / (2 * jnp.sum(integral**2))
    return jnp.where(jnp.isfinite(est) & (est > 0), est, 1.0 / (data.ts[-1] - data.ts[0]))


def _fit_one(data: _Data, init, layout: _Layout, solve: _Solver, tol, max_steps):
    integral = _integral_start(data)
    # Two starts, the better fit wins: the integral estimate, and equal rates at its geometric mean.
    # When the theory describes the data only roughly, the integral estimate can be biased into the
    # basin of a poor local minimum (seen on tanh networks: residual 143 against 16); a start with
    # equal rates avoided that in every case tried. A user's `init` is the only start.
    equal = jnp.full((2,), jnp.sqrt(integral[0] * integral[1]))
    starts = jnp.stack([integral, equal]) if layout.two_starts else init[None]
    rest = []
    if layout.fit_start:
        rest.append(_start_state(layout, data))
    if layout.fit_mean:
        rest.append(jnp.log(_mean_start(data))[None])
        if layout.fit_start:
            rest.append(data.m[:1])
    args = (layout, solve, data)
    lm = optx.LevenbergMarquardt(rtol=tol, atol=tol)

    def solve_from(start_rates):
        params0 = jnp.concatenate([jnp.log(start_rates), *rest])
        sol = optx.least_squares(_residuals, lm, params0, args, max_steps=max_steps, throw=False)
        cost = jnp.sum(_residuals(sol.value, args) ** 2)
        cost = jnp.where(jnp.isfinite(cost), cost, jnp.inf)
        return sol.value, cost, sol.result == optx.RESULTS.successful, sol.stats["num_steps"]

    values, costs, successes, steps = jax.lax.map(solve_from, starts)
    # The first start (the integral estimate) unless another converged fit is better by more than
    # rounding (relative 1e-9 plus 1e-10 of the normalised cost): equal optima reached from both
    # starts report the integral start.
    ranked = jnp.where(successes, costs, jnp.inf)
    ranked = jnp.where(jnp.any(successes), ranked, costs)
    better = ranked < ranked[0] - (1e-9 * ranked[0] + 1e-10)
    best = jnp.where(jnp.any(better), jnp.argmin(ranked), 0)
    params, start_rates = values[best], starts[best]
    lm_ok, num_steps = successes[best], jnp.sum(steps)
    # Standard errors from the Jacobian at the optimum (forward mode through the solve).
    r = _residuals(params, args)
    jac = jax.jacfwd(_residuals)(params, args)
    dof = jnp.maximum(r.shape[0] - params.shape[0], 1)
    cov = jnp.sum(r**2) / dof * jnp.linalg.pinv(jac.T @ jac)
    se_log = jnp.sqrt(jnp.maximum(jnp.diag(cov), 0.0))
    rates, start, eta_mean, m0 = _unpack(layout, params, data)
    states, ok, ode_steps = _trajectory(solve, rates, start, data)
    errors = _normalised_errors(states, data, layout, eta_mean, m0)
    converged = lm_ok & ok & jnp.all(jnp.isfinite(params))
    result = RESULTS.where(converged, RESULTS.successful,
                           RESULTS.where(ok, RESULTS.fit_not_converged, RESULTS.theory_solve_failed))
    # The start itself (finite even when the solve at the optimum failed), as (h, y, w).
    if layout.regular:
        state0 = jnp.stack(from_regular(_Rates(rates[0], rates[1], data.dx2, data.dy2), *start))
    else:
        state0 = start
    nan = jnp.full((), jnp.nan, params.dtype)
    return FitResult(
        eta_h=rates[0],
        eta_y=rates[1],
        eta_h_se=rates[0] * se_log[0],
        eta_y_se=rates[1] * se_log[1],
        eta_mean=eta_mean if layout.fit_mean else nan,
        eta_mean_se=eta_mean * se_log[2 + 3 * layout.fit_start] if layout.fit_mean else nan,
        state0=state0,
        m0=m0 if layout.fit_mean else nan,
        dx2=data.dx2,
        dy2=data.dy2,
        init=start_rates,
        residual=jnp.sum(r**2),
        errors=errors,
        converged=converged,
        result=result,
        num_steps=num_steps,
        ode_steps=ode_steps,
    )


def _normalised_errors(states, data: _Data, layout: _Layout, eta_mean, m0):
    def error(model, observed):
        span = jnp.max(observed) - jnp.min(observed)
        return jnp.sqrt(jnp.mean((model - observed) ** 2)) / span

    errors = {name: error(states[:, i], data.observed[:, i]) for i, name in enumerate("hyw")}
    if layout.fit_mean:
        m = m0 * jnp.exp(-2 * eta_mean * (data.ts - data.ts[0]))
        errors["m"] = error(m, data.m)

        def loss(mm, s):
            return 0.5 * mm + 0.25 * (s[:, 2] + 0.5 * (data.dy2 - s[:, 1]))

        errors["loss"] = error(loss(m, states), loss(data.m, data.observed))
    return errors


def _fit_batch_impl(data, init, layout, solve, tol, max_steps, chunk):
    # `chunk` trajectories are vmapped together, chunks run one after another (`lax.map`). A vmapped
    # optimiser loop steps every member until the slowest is done, so on a CPU one at a time is
    # fastest (chunk 1: no masking at all); a GPU wants the whole batch at once.
    fit = lambda d, i: _fit_one(d, i, layout, solve, tol, max_steps)  # noqa: E731
    if chunk == 1:
        return jax.lax.map(lambda args: fit(*args), (data, init))
    return jax.lax.map(lambda args: fit(*args), (data, init), batch_size=chunk)


_fit_batch = eqx.filter_jit(_fit_batch_impl)


def _default_chunk(n: int) -> int:
    return 1 if jax.default_backend() == "cpu" else n


def fit_effective_rates(
    ts: Float[ArrayLike, "*batch times"],
    h: Float[ArrayLike, "*batch times"],
    y: Float[ArrayLike, "*batch times"],
    w: Float[ArrayLike, "*batch times"],
    dx2: Float[ArrayLike, "*batch"],
    dy2: Float[ArrayLike, "*batch"],
    *,
    m: Float[ArrayLike, "*batch times"] | None = None,
    weights: Float[ArrayLike, "*batch times"] | Float[ArrayLike, "*batch times 3"] | None = None,
    init: tuple[RealScalarLike, RealScalarLike] | None = None,
    fit_initial_state: bool = False,
    vector_field: VectorField | None = None,
    solver: diffrax.AbstractAdaptiveSolver | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_ode_steps: int = 4096,
    tol: float = 1e-8,
    max_steps: int = 100,
    chunk: int | None = None,
    max_error: float = 0.15,
) -> FitResult:
    """Fit the effective learning rates `η_h, η_y` of the theory to an observed trajectory.

    Least squares (`optimistix.LevenbergMarquardt`) through the diffrax solve of the theory, on
    the log-rates so that they stay positive, differentiated in forward mode
    (`diffrax.ForwardMode`). Each variable's residuals are divided by the range of its observed
    curve, so `h`, `y` and `w` weigh alike whatever their scales. No grid: the optimiser runs from
    two starts, the rates that solve the integrated equations (a linear least-squares problem, see
    `_integral_start`) and equal rates at their geometric mean, and keeps the better fit.

    The theory is solved in the regular coordinates of `THEORY.md` §3, so trajectories through a
    collision are fitted too.

    **Arguments:**

    - `ts`: increasing sample times, `(times,)` or `(*batch, times)` (gradient-flow time for a flow;
      with epochs the rates absorb the learning rate).
    - `h`, `y`, `w`: the observed `‖dh‖²`, `‖dŷ‖²`, `w = y − dy*·dŷ`, shape `(*batch, times)`. A
      leading batch axis fits every trajectory in one compiled, vmapped call.
    - `dx2`, `dy2`: the squared input and target distances (scalars or `(*batch,)`).

    **Other arguments:**

    - `m`: the observed `m = ‖ȳ − ȳ*‖²`; when given, the mean's rate `η̄` of
      `m(t) = m0·exp(−2η̄t)` is fitted as well (it decouples, `THEORY.md` §2), and the loss error
      is reported.
    - `weights`: non-negative weights per sample `(…, times)` or per sample and variable
      `(…, times, 3)`; default all one.
    - `init`: the one starting `(eta_h, eta_y)`; default two starts, the integral equations' estimate
      and equal rates at its geometric mean (the better fit is kept).
    - `fit_initial_state`: also fit `(h0, y0, w0)` (and `m0`) instead of taking the first sample
      as exact. Use it for noisy data: treating a noisy first sample as exact biases the rates.
    - `vector_field`: fit an alternative theory `f(state, eta_h, eta_y, dx2, dy2) -> d/dt [h, y, w]`
      instead (e.g. to check that altered equations fit worse); solved in `(h, y, w)` directly.
    - `solver`: the diffrax solver of the theory; default `diffrax.Tsit5()` (pass
      `diffrax.Kvaerno5()` for stiff trajectories, see `EffectiveTheory.stiffness`).
    - `rtol`, `atol`, `max_ode_steps`: of the theory's solves.
    - `tol`: the optimiser's tolerance (relative and absolute, on the log-rates and the cost).
    - `max_steps`: the most optimiser steps; a fit that needs more has `converged = False`.
    - `chunk`: how many trajectories of a batch are vmapped together (the chunks run in turn, in one
      compiled call). Default: 1 on a CPU, where lockstep makes vmapped fits slower than one at a
      time (`benchmarks/bench_fit.py`), the whole batch elsewhere.
    - `max_error`: a converged fit whose normalised error (RMSE / range) of h, y or w exceeds this
      gets `result = RESULTS.poor_fit` (default 0.15: the boundary this project's reproductions call
      *fails*), so that a bad fit is not read as a good one.

    **Returns:** a `FitResult` (batched like the data); its `result` says how the fit went.

    **Raises:** `ValueError` naming what is wrong: mismatched shapes, fewer than `MIN_SAMPLES`
    samples, non-finite data, non-increasing `ts`, `h ≤ 0`, `dx2 ≤ 0`, `dy2 < 0`, negative weights,
    or data that never moves (flat `h`, `y` and `w`; flat `m`).

    Inside `jax.jit` or `jax.vmap` (e.g. the point function of `flowsolve.sweep`, fitting each
    point's flow), the data are traced: shape errors still raise, but data that fail the value
    checks give that member NaN rates and `converged = False` instead of an error, so that one bad
    point does not stop the others. The fit is then compiled as part of the caller's program.

    !!! example

        ```python
        theory = flowsolve.EffectiveTheory(eta_h=2.0, eta_y=0.5, dx2=1.0, dy2=0.5)
        sol = flowsolve.solve_theory(theory, [0.05, 0.0, 0.0], t1=20.0)
        fit = flowsolve.fit_effective_rates(sol.ts, sol.h, sol.y, sol.w, 1.0, 0.5)
        fit.eta_h, fit.eta_y   # ≈ 2.0, 0.5
        ```
    """
    traced = not is_concrete((ts, h, y, w, dx2, dy2, m, weights))
    if traced:  # inside jit/vmap (a sweep's point): value checks become a mask, not an error
        data, batch_shape, valid = _prepare_traced(ts, h, y, w, dx2, dy2, m, weights)
    else:
        data, batch_shape = _prepare(ts, h, y, w, dx2, dy2, m, weights)
    layout = _Layout(fit_start=bool(fit_initial_state), fit_mean=m is not None, regular=vector_field is None,
                     two_starts=init is None)
    if vector_field is not None and not callable(vector_field):
        raise ValueError("`vector_field` must be a callable f(state, eta_h, eta_y, dx2, dy2) -> d/dt state.")
    if init is None:
        init_arr = np.full((2,), np.nan)
    else:
        init_arr = np.asarray(init, dtype=np.float64)
        if init_arr.shape != (2,) or not np.all(np.isfinite(init_arr)) or np.any(init_arr <= 0):
            raise ValueError(f"`init` must be two finite positive rates (eta_h, eta_y), got {init!r}.")
    for name, value in (("rtol", rtol), ("atol", atol), ("tol", tol), ("max_error", max_error)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    n = data.ts.shape[0]
    chunk = _default_chunk(n) if chunk is None else chunk
    for name, value in (("max_ode_steps", max_ode_steps), ("max_steps", max_steps), ("chunk", chunk)):
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    dtype = data.ts.dtype
    init_batch = jnp.broadcast_to(jnp.asarray(init_arr, dtype), (n, 2))
    solve = _Solver(vector_field, diffrax.Tsit5() if solver is None else solver, rtol, atol, max_ode_steps)
    if traced:
        result = _fit_batch(data, init_batch, layout, solve, tol, max_steps, min(chunk, n))
        result = _mask_invalid(result, valid)
    else:
        result = _run(data, init_batch, layout, solve, tol, max_steps, min(chunk, n))
    worst = jnp.maximum(jnp.maximum(result.errors["h"], result.errors["y"]), result.errors["w"])
    poor = (result.result == RESULTS.successful) & ~(worst <= max_error)
    result = eqx.tree_at(lambda r: r.result, result, _where_each(poor, RESULTS.poor_fit, result.result))
    return jax.tree_util.tree_map(lambda x: x.reshape(batch_shape + x.shape[1:]), result)


def _where_each(pred: Bool[Array, " n"], code: RESULTS, results: RESULTS) -> RESULTS:
    """`code` where `pred`, else `results`, member by member of a flat batch."""
    return jax.vmap(lambda p, r: RESULTS.where(p, code, r))(pred, results)


def _mask_invalid(result: FitResult, valid: Bool[Array, " n"]) -> FitResult:
    """NaN for every float of an invalid member's fit, `converged = False`."""

    def mask(x):
        ok = valid.reshape(valid.shape + (1,) * (x.ndim - 1))
        if x.dtype == bool:
            return x & ok
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.where(ok, x, jnp.nan)
        return x

    code = _where_each(~valid, RESULTS.invalid_input, result.result)
    return eqx.tree_at(lambda r: r.result, jax.tree_util.tree_map(mask, result), code)


def _run(data: _Data, init, layout: _Layout, solve: _Solver, tol, max_steps, chunk) -> FitResult:
    """The compiled fit; through the exported-program cache when JAX's persistent cache is on."""
    if solve.vector_field is None:  # a user's callable cannot be part of a cache key
        leaves, data_def = jax.tree_util.tree_flatten(data)

        def flat_fit(*args):
            fit = _fit_batch_impl(jax.tree_util.tree_unflatten(data_def, args[:-1]), args[-1], layout, solve,
                                  tol, max_steps, chunk)
            return jax.tree_util.tree_leaves(fit)

        key = (layout, repr(solve), tol, max_steps, chunk, "result")  # "result": FitResult has a result code
        out = call_cached("fit_effective_rates", flat_fit, key, [*leaves, init])
        if out is not None:
            return jax.tree_util.tree_unflatten(_result_treedef(layout), out)
    return _fit_batch(data, init, layout, solve, tol, max_steps, chunk)


def _result_treedef(layout: _Layout):
    keys = ["h", "y", "w"] + (["m", "loss"] if layout.fit_mean else [])
    fields = {f: 0.0 for f in FitResult.__dataclass_fields__}
    fields["errors"] = {k: 0.0 for k in keys}
    fields["result"] = RESULTS.successful
    return jax.tree_util.tree_structure(FitResult(**fields))


def _checked_shapes(arrays: dict[str, Any], ts) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """The observed curves' shape, batch shape and number of samples; `ValueError` if the curves or
    `ts` do not match, or there are too few samples (the same for concrete and traced data)."""
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


def _per_variable(weights, shape: tuple[int, ...], xp):
    """Weights per sample `shape` or per sample and variable `shape + (3,)`, as the latter (`xp`:
    NumPy for concrete data, jax.numpy for traced)."""
    if weights.shape == shape:
        weights = weights[..., None]
    try:
        return xp.broadcast_to(weights, shape + (3,))
    except ValueError:
        raise ValueError(
            f"`weights` must have shape {shape} (per sample) or {shape + (3,)} (per sample and "
            f"variable), got {weights.shape}."
        ) from None


def _prepare(ts, h, y, w, dx2, dy2, m, weights) -> tuple[_Data, tuple[int, ...]]:
    """Validate the data at the boundary and flatten any batch axes into one."""
    dtype = jnp.result_type(float)  # float64 with jax_enable_x64, else float32
    arrays = {"h": h, "y": y, "w": w}
    if m is not None:
        arrays["m"] = m
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    ts = np.asarray(ts, dtype=np.float64)
    shape, batch_shape, n_times = _checked_shapes(arrays, ts)
    for name, value in (("ts", ts), *arrays.items()):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"`{name}` must be finite (no inf or NaN).")
    if np.any(np.diff(ts, axis=-1) <= 0):
        raise ValueError("`ts` must be strictly increasing.")
    if np.any(arrays["h"] <= 0):
        raise ValueError("`h` = ‖dh‖² must be > 0 at every sample (the theory is singular at h = 0).")
    if np.any(arrays["y"] < 0):
        raise ValueError("`y` = ‖dŷ‖² must be ≥ 0.")
    dx2 = np.asarray(dx2, dtype=np.float64)
    dy2 = np.asarray(dy2, dtype=np.float64)
    for name, value, allow_zero in (("dx2", dx2, False), ("dy2", dy2, True)):
        if not np.all(np.isfinite(value)) or np.any(value < 0 if allow_zero else value <= 0):
            raise ValueError(f"`{name}` must be finite and {'≥' if allow_zero else '>'} 0, got {value}.")
        try:
            np.broadcast_to(value, batch_shape)
        except ValueError:
            raise ValueError(f"`{name}` must be a scalar or have the batch shape {batch_shape}.") from None
    observed = np.stack([arrays["h"], arrays["y"], arrays["w"]], axis=-1)
    span = observed.max(axis=-2) - observed.min(axis=-2)  # (*batch, 3)
    size = np.abs(observed).max(axis=(-2, -1))
    flat = np.all(span <= 1e-12 * np.maximum(size[..., None], 1e-300), axis=-1)
    if np.any(flat):
        raise ValueError(
            "The data never move: `h`, `y` and `w` are constant"
            + (f" in batch member {np.argwhere(flat)[0].tolist()}" if batch_shape else "")
            + "; there are no dynamics to fit."
        )
    # A variable that barely moves (e.g. h of a lazy network) is normalised by a floor of 1e-6 of
    # the largest range, so that rounding noise is not amplified.
    scale = np.maximum(span, 1e-6 * span.max(axis=-1, keepdims=True))
    if m is not None:
        m_arr = arrays["m"]
        m_span = m_arr.max(axis=-1) - m_arr.min(axis=-1)
        if np.any(m_arr < 0):
            raise ValueError("`m` = ‖ȳ − ȳ*‖² must be ≥ 0.")
        if np.any(m_span <= 1e-12 * np.maximum(np.abs(m_arr).max(axis=-1), 1e-300)):
            raise ValueError("`m` never moves: the mean's rate cannot be fitted; leave `m` out.")
    else:
        m_arr = np.zeros(shape)
        m_span = np.ones(batch_shape)
    if weights is None:
        sqrt_w = np.ones(shape + (3,))
    else:
        weights = _per_variable(np.asarray(weights, dtype=np.float64), shape, np)
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("`weights` must be finite and ≥ 0.")
        # Every variable needs weight on at least two samples: otherwise there is nothing to fit to
        # (all-zero weights would 'converge' to any rates with standard error 0).
        if np.any(np.sum(weights > 0, axis=-2) < 2):
            raise ValueError("`weights` must be > 0 on at least two samples of each of h, y, w.")
        sqrt_w = np.sqrt(weights)
    n = int(np.prod(batch_shape))

    def flat_batch(x, tail):
        return jnp.asarray(np.broadcast_to(x, batch_shape + tail).reshape((n,) + tail), dtype)

    data = _Data(
        ts=flat_batch(ts, (n_times,)),
        observed=flat_batch(observed, (n_times, 3)),
        sqrt_weights=flat_batch(sqrt_w, (n_times, 3)),
        scale=flat_batch(scale, (3,)),
        dx2=flat_batch(dx2, ()),
        dy2=flat_batch(dy2, ()),
        m=flat_batch(m_arr, (n_times,)),
        m_scale=flat_batch(np.maximum(m_span, 1e-300), ()),
    )
    return data, batch_shape


def _prepare_traced(ts, h, y, w, dx2, dy2, m, weights) -> tuple[_Data, tuple[int, ...], Bool[Array, " n"]]:
    """`_prepare` for data traced inside `jit` or `vmap` (e.g. the point function of a sweep). Shape
    errors raise as there; the value checks cannot, so they give `valid` per batch member instead,
    and an invalid member's data are swapped for a harmless curve (its results are then masked:
    NaN, `converged = False`)."""
    dtype = jnp.result_type(float)
    arrays = {"h": h, "y": y, "w": w} | ({} if m is None else {"m": m})
    arrays = {k: jnp.asarray(v, dtype) for k, v in arrays.items()}
    ts = jnp.asarray(ts, dtype)
    shape, batch_shape, n_times = _checked_shapes(arrays, ts)
    dists = {"dx2": jnp.asarray(dx2, dtype), "dy2": jnp.asarray(dy2, dtype)}
    for name, value in dists.items():
        try:
            np.broadcast_to(np.empty(value.shape), batch_shape)
        except ValueError:
            raise ValueError(f"`{name}` must be a scalar or have the batch shape {batch_shape}.") from None
    if weights is None:
        weights = jnp.ones(shape + (3,), dtype)
    else:
        weights = _per_variable(jnp.asarray(weights, dtype), shape, jnp)
    ts = jnp.broadcast_to(ts, shape)
    dx2, dy2 = (jnp.broadcast_to(v, batch_shape) for v in dists.values())
    observed = jnp.stack([arrays["h"], arrays["y"], arrays["w"]], axis=-1)

    def moves(x, axis):  # not flat to rounding
        return (x.max(axis) - x.min(axis)) > 1e-12 * jnp.maximum(jnp.abs(x).max(axis), 1e-300)

    everywhere = lambda c: jnp.all(c, axis=-1)  # noqa: E731
    valid = (everywhere(jnp.isfinite(ts)) & everywhere(jnp.diff(ts, axis=-1) > 0)
             & jnp.all(jnp.isfinite(observed), axis=(-2, -1)) & everywhere(arrays["h"] > 0)
             & everywhere(arrays["y"] >= 0) & jnp.isfinite(dx2) & (dx2 > 0) & jnp.isfinite(dy2) & (dy2 >= 0)
             & jnp.any((observed.max(-2) - observed.min(-2))
                       > 1e-12 * jnp.maximum(jnp.abs(observed).max((-2, -1)), 1e-300)[..., None], axis=-1)
             & jnp.all(jnp.isfinite(weights) & (weights >= 0), axis=(-2, -1))
             & jnp.all(jnp.sum(weights > 0, axis=-2) >= 2, axis=-1))
    if m is not None:
        valid &= everywhere(jnp.isfinite(arrays["m"])) & everywhere(arrays["m"] >= 0) & moves(arrays["m"], -1)
    # Invalid members: a harmless moving curve in their place (their results are masked afterwards).
    grid = jnp.linspace(0.0, 1.0, n_times, dtype=dtype)
    keep = valid[..., None]
    ts = jnp.where(keep, ts, grid)
    observed = jnp.where(keep[..., None], observed, jnp.stack([1.0 + grid, 0.5 * grid, -0.5 * grid], axis=-1))
    weights = jnp.where(keep[..., None], weights, 1.0)
    dx2, dy2 = jnp.where(valid, dx2, 1.0), jnp.where(valid, dy2, 0.5)
    m_arr = jnp.where(keep, arrays["m"], 1.0 - 0.5 * grid) if m is not None else jnp.zeros(shape, dtype)
    span = observed.max(axis=-2) - observed.min(axis=-2)
    scale = jnp.maximum(span, 1e-6 * span.max(axis=-1, keepdims=True))
    m_span = m_arr.max(-1) - m_arr.min(-1) if m is not None else jnp.ones(batch_shape, dtype)
    n = int(np.prod(batch_shape))
    flat = lambda x, tail: x.reshape((n,) + tail)  # noqa: E731
    data = _Data(
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


class NetworkFit(eqx.Module):
    """A network's exact gradient flow, the theory fitted to it, and the fitted theory's solution.

    **Fields:**

    - `flow`: the `FlowSolution` (observed `loss`, `h`, `y`, `w`, `m` at `ts`).
    - `fit`: the `FitResult` (rates, standard errors, normalised errors, `converged`).
    - `theory`: the fitted theory's `TheorySolution` at the same `ts` (its `loss` includes the
      fitted mean's decay).
    - `layer`: the observed hidden layer.
    """

    flow: Any
    fit: FitResult
    theory: TheorySolution
    layer: int = eqx.field(static=True)


def fit_network(
    model: eqx.Module,
    inputs: Float[ArrayLike, "2 ..."],
    targets: Float[ArrayLike, "2 ..."],
    t1: RealScalarLike,
    *,
    layer: int | None = None,
    ts: Float[ArrayLike, " times"] | None = None,
    flow_options: dict[str, Any] | None = None,
    fit_options: dict[str, Any] | None = None,
) -> NetworkFit:
    """Run a network's exact gradient flow on two points, fit the theory to it, and solve the fit.

    One call for `gradient_flow` → `fit_effective_rates` (with the mean's rate from `m`) →
    `FitResult.predict`.

    **Arguments:**

    - `model`, `inputs`, `targets`: as for `gradient_flow`; exactly two points.
    - `t1`: the final gradient-flow time.

    **Other arguments:**

    - `layer`: the observed hidden layer (default: the middle one).
    - `ts`: observation times, default 201 evenly spaced in `[0, t1]`.
    - `flow_options`: keyword arguments for `gradient_flow` (e.g. `rtol`, `solver`).
    - `fit_options`: keyword arguments for `fit_effective_rates` (e.g. `fit_initial_state`).

    **Returns:** a `NetworkFit`.

    !!! example

        ```python
        exp = flowsolve.experiments.two_points("tanh", key=jax.random.key(0), width=50)
        result = flowsolve.fit_network(exp.model, exp.inputs, exp.targets, exp.t1, layer=exp.layer)
        result.fit.eta_h, result.fit.errors["h"]
        ```
    """
    from ._flow import gradient_flow, TwoPointObserver  # the fit room uses the flow room's public verb

    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    if inputs.ndim < 1 or inputs.shape[0] != 2 or targets.ndim < 1 or targets.shape[0] != 2:
        raise ValueError(
            f"`fit_network` needs exactly two points, got inputs {inputs.shape} and targets {targets.shape}."
        )
    flow_options = dict(flow_options or {})
    fit_options = dict(fit_options or {})
    for name in ("observe", "layer", "ts"):
        if name in flow_options:
            raise ValueError(f"Pass `{name}` to `fit_network` itself, not in `flow_options`.")
    for name in ("m", "dx2", "dy2"):
        if name in fit_options:
            raise ValueError(f"`fit_network` sets `{name}` from the data; remove it from `fit_options`.")
    if ts is None:
        ts = jnp.linspace(0.0, t1, 201) if not is_concrete(t1) else np.linspace(0.0, float(t1), 201)
    flat = lambda a: a.reshape(2, -1)  # noqa: E731
    # Arrays, not floats: under jit (a sweep's point) they are traced.
    dx2 = jnp.sum((flat(inputs)[1] - flat(inputs)[0]) ** 2)
    dy2 = jnp.sum((flat(targets)[1] - flat(targets)[0]) ** 2)
    if layer is None:
        _, hiddens = eqx.filter_eval_shape(model, inputs[0])
        layer = len(hiddens) // 2
    flow = gradient_flow(model, inputs, targets, t1, ts=ts, observe=TwoPointObserver(layer), layer=layer,
                         **flow_options)
    obs = flow.observed
    fit = fit_effective_rates(flow.ts, obs["h"], obs["y"], obs["w"], dx2, dy2, m=obs["m"], **fit_options)
    theory = fit.predict(flow.ts, throw=False)
    return NetworkFit(flow=flow, fit=fit, theory=theory, layer=layer)
