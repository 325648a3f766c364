"""`fit_effective_rates`: the effective learning rates of the theory fitted to observed trajectories
(`THEORY.md` §4) — its boundary (the options checked), the compiled run, the result codes."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Bool, Float

from .._compile_cache import call_cached
from .._custom_types import RealScalarLike
from .._renamed import renamed_keywords
from .._results import RESULTS
from .._validation import is_concrete
from ._data import Data, prepare
from ._least_squares import DEFAULT_OPTIMIZER, fit_batch, fit_batch_impl, Layout, Optimizer, Solver, VectorField
from ._result import FitResult, result_treedef


def _default_chunk(n: int) -> int:
    return 1 if jax.default_backend() == "cpu" else n


@renamed_keywords(
    max_ode_steps="max_steps=",
    tol="optimizer=optimistix.LevenbergMarquardt(rtol=tol, atol=tol)",
    chunk="chunk_size=",
)
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
    max_steps: int = 4096,
    optimizer: optx.AbstractLeastSquaresSolver | None = None,
    max_optimizer_steps: int = 100,
    chunk_size: int | None = None,
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
    - `rtol`, `atol`, `max_steps`: of the theory's solves (`max_steps`: the most solver steps of one
      solve, as in `solve_theory`).
    - `optimizer`: the optimistix least-squares solver; default
      `optimistix.LevenbergMarquardt(rtol=1e-8, atol=1e-8)` (its tolerances act on the log-rates and
      the cost). Pass e.g. `optimistix.LevenbergMarquardt(rtol=1e-6, atol=1e-6, verbose=True)` to see
      each step.
    - `max_optimizer_steps`: the most optimiser steps; a fit that needs more has `converged = False`.
    - `chunk_size`: how many trajectories of a batch are vmapped together (the chunks run in turn, in one
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
    data, batch_shape, valid = prepare(ts, h, y, w, dx2, dy2, m, weights)
    traced = not is_concrete(valid)  # inside jit/vmap (a sweep's point): invalid members are masked
    layout = Layout(fit_start=bool(fit_initial_state), fit_mean=m is not None, regular=vector_field is None,
                     two_starts=init is None)
    if vector_field is not None and not callable(vector_field):
        raise ValueError("`vector_field` must be a callable f(state, eta_h, eta_y, dx2, dy2) -> d/dt state.")
    if init is None:
        init_arr = np.full((2,), np.nan)
    else:
        init_arr = np.asarray(init, dtype=np.float64)
        if init_arr.shape != (2,) or not np.all(np.isfinite(init_arr)) or np.any(init_arr <= 0):
            raise ValueError(f"`init` must be two finite positive rates (eta_h, eta_y), got {init!r}.")
    for name, value in (("rtol", rtol), ("atol", atol), ("max_error", max_error)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
    if optimizer is not None and not isinstance(optimizer, optx.AbstractLeastSquaresSolver):
        raise ValueError("`optimizer` must be an optimistix least-squares solver "
                         f"(e.g. optimistix.LevenbergMarquardt), got {type(optimizer).__name__}.")
    n = data.ts.shape[0]
    chunk_size = _default_chunk(n) if chunk_size is None else chunk_size
    for name, value in (("max_steps", max_steps), ("max_optimizer_steps", max_optimizer_steps),
                        ("chunk_size", chunk_size)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    dtype = data.ts.dtype
    init_batch = jnp.broadcast_to(jnp.asarray(init_arr, dtype), (n, 2))
    solve = Solver(vector_field, diffrax.Tsit5() if solver is None else solver, rtol, atol, max_steps)
    optimise = Optimizer(DEFAULT_OPTIMIZER if optimizer is None else optimizer, max_optimizer_steps)
    if traced:
        result = fit_batch(data, init_batch, layout, solve, optimise, min(chunk_size, n))
        result = _mask_invalid(result, valid)
    else:
        result = _run(data, init_batch, layout, solve, optimise, min(chunk_size, n))
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


def _run(data: Data, init, layout: Layout, solve: Solver, optimise: Optimizer, chunk) -> FitResult:
    """The compiled fit; through the exported-program cache when JAX's persistent cache is on."""
    if solve.vector_field is None:  # a user's callable cannot be part of a cache key
        leaves, data_def = jax.tree_util.tree_flatten(data)

        def flat_fit(*args):
            fit = fit_batch_impl(jax.tree_util.tree_unflatten(data_def, args[:-1]), args[-1], layout, solve,
                                  optimise, chunk)
            return jax.tree_util.tree_leaves(fit)

        key = (layout, solve, optimise, chunk, "result")  # "result": FitResult has a result code
        out = call_cached("fit_effective_rates", flat_fit, key, [*leaves, init])
        if out is not None:
            errors = ["h", "y", "w"] + (["m", "loss"] if layout.fit_mean else [])
            return jax.tree_util.tree_unflatten(result_treedef(errors), out)
    return fit_batch(data, init, layout, solve, optimise, chunk)
