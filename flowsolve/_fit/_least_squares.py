"""The least squares: Levenberg–Marquardt (optimistix) on the log-rates through the theory's diffrax
solve, from two starts, with standard errors from the Jacobian at the optimum."""

from collections.abc import Callable
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array

from .._results import RESULTS
from .._saving import solve_saving_at
from .._theory import _regular_vector_field, from_regular, theory_loss, to_regular
from ._data import Data
from ._result import FitResult
from ._starts import integral_start, mean_start

VectorField = Callable[[Array, Array, Array, Array, Array], Array]
"""An alternative theory's `d/dt [h, y, w]` as `f(state, eta_h, eta_y, dx2, dy2)`."""

_PENALTY = 1e3
"""Residual (in units of the observed range) put where a trial solve failed, so that the optimiser
rejects the trial step instead of reading garbage."""


class Layout(NamedTuple):
    """Where each unknown sits in the flat parameter vector (static)."""

    fit_start: bool
    fit_mean: bool
    regular: bool  # the start is in regular coordinates (a, u_par, u_perp), else (h, y, w)
    two_starts: bool = True  # the integral and the equal-rate start; else the user's `init`

    @property
    def size(self) -> int:
        return 2 + 3 * self.fit_start + (1 + self.fit_start) * self.fit_mean


class _Rates(NamedTuple):
    # Duck-types `EffectiveTheory` for the regular-coordinate helpers, without its checks.
    eta_h: Array
    eta_y: Array
    dx2: Array
    dy2: Array


def _start_state(layout: Layout, data: Data) -> Array:
    """The first sample, in the coordinates the solve uses."""
    if layout.regular:
        return jnp.stack(to_regular(_Rates(1.0, 1.0, data.dx2, data.dy2), data.observed[0]))
    return data.observed[0]


def _unpack(layout: Layout, params: Array, data: Data):
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


DEFAULT_OPTIMIZER = optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8)


class Optimizer(eqx.Module):
    """The least-squares solver and its step budget."""

    solver: optx.AbstractLeastSquaresSolver
    max_steps: int = eqx.field(static=True)

    def __repr__(self) -> str:
        # The default solver's repr holds `<function max_norm>`; say it plainly so that the fit's
        # exported program can be keyed by it (`_compile_cache` stores nothing keyed by a `<...>` repr).
        solver = "default" if self.solver is DEFAULT_OPTIMIZER else repr(self.solver)
        return f"Optimizer({solver}, max_steps={self.max_steps})"


class Solver(eqx.Module):
    vector_field: VectorField | None  # an eqx.Module's arrays are traced: one compilation for many
    solver: diffrax.AbstractAdaptiveSolver
    rtol: float
    atol: float
    max_steps: int = eqx.field(static=True)


def _trajectory(solve: Solver, rates, start, data: Data):
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


def _residuals_and_model(params, args):
    """The weighted, normalised residuals, and with them (as aux) the residuals again, the model's states
    at `data.ts`, whether its solve succeeded, and its step count."""
    layout, solve, data = args
    rates, start, eta_mean, m0 = _unpack(layout, params, data)
    states, ok, steps = _trajectory(solve, rates, start, data)
    r = (states - data.observed) / data.scale[None, :] * data.sqrt_weights
    r = jnp.where(jnp.isfinite(r), r, _PENALTY).reshape(-1)
    if layout.fit_mean:
        m = m0 * jnp.exp(-2 * eta_mean * (data.ts - data.ts[0]))
        r = jnp.concatenate([r, (m - data.m) / data.m_scale])
    return r, (r, states, ok, steps)


def _residuals(params, args):
    return _residuals_and_model(params, args)[0]


def fit_one(data: Data, init, layout: Layout, solve: Solver, optimise: Optimizer):
    integral = integral_start(data)
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
        rest.append(jnp.log(mean_start(data))[None])
        if layout.fit_start:
            rest.append(data.m[:1])
    args = (layout, solve, data)

    def solve_from(start_rates):
        params0 = jnp.concatenate([jnp.log(start_rates), *rest])
        sol = optx.least_squares(_residuals, optimise.solver, params0, args, max_steps=optimise.max_steps,
                                 throw=False)
        # The residuals, their Jacobian (forward mode through the solve, for the standard errors) and
        # the model at the optimum: one solve, its primal shared by the Jacobian's columns.
        jac, (r, states, ok, ode_steps) = jax.jacfwd(_residuals_and_model, has_aux=True)(sol.value, args)
        cost = jnp.sum(r**2)
        cost = jnp.where(jnp.isfinite(cost), cost, jnp.inf)
        at_optimum = (r, jac, states, ok, ode_steps)
        return sol.value, cost, sol.result == optx.RESULTS.successful, sol.stats["num_steps"], at_optimum

    values, costs, successes, steps, at_optima = jax.lax.map(solve_from, starts)
    # The first start (the integral estimate) unless another converged fit is better by more than
    # rounding (relative 1e-9 plus 1e-10 of the normalised cost): equal optima reached from both
    # starts report the integral start.
    ranked = jnp.where(successes, costs, jnp.inf)
    ranked = jnp.where(jnp.any(successes), ranked, costs)
    better = ranked < ranked[0] - (1e-9 * ranked[0] + 1e-10)
    best = jnp.where(jnp.any(better), jnp.argmin(ranked), 0)
    params, start_rates = values[best], starts[best]
    lm_ok, num_steps = successes[best], jnp.sum(steps)
    r, jac, states, ok, ode_steps = jax.tree_util.tree_map(lambda v: v[best], at_optima)
    # Standard errors from the Jacobian at the optimum.
    dof = jnp.maximum(r.shape[0] - params.shape[0], 1)
    cov = jnp.sum(r**2) / dof * jnp.linalg.pinv(jac.T @ jac)
    se_log = jnp.sqrt(jnp.maximum(jnp.diag(cov), 0.0))
    rates, start, eta_mean, m0 = _unpack(layout, params, data)
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


def _normalised_errors(states, data: Data, layout: Layout, eta_mean, m0):
    def error(model, observed):
        span = jnp.max(observed) - jnp.min(observed)
        return jnp.sqrt(jnp.mean((model - observed) ** 2)) / span

    errors = {name: error(states[:, i], data.observed[:, i]) for i, name in enumerate("hyw")}
    if layout.fit_mean:
        m = m0 * jnp.exp(-2 * eta_mean * (data.ts - data.ts[0]))
        errors["m"] = error(m, data.m)

        def loss(mm, s):
            return theory_loss(mm, s[:, 1], s[:, 2], data.dy2)

        errors["loss"] = error(loss(m, states), loss(data.m, data.observed))
    return errors


def fit_batch_impl(data, init, layout, solve, optimise, chunk):
    # `chunk` trajectories are vmapped together, chunks run one after another (`lax.map`). A vmapped
    # optimiser loop steps every member until the slowest is done, so on a CPU one at a time is
    # fastest (chunk 1: no masking at all); a GPU wants the whole batch at once.
    fit = lambda d, i: fit_one(d, i, layout, solve, optimise)  # noqa: E731
    if chunk == 1:
        return jax.lax.map(lambda args: fit(*args), (data, init))
    return jax.lax.map(lambda args: fit(*args), (data, init), batch_size=chunk)


fit_batch = eqx.filter_jit(fit_batch_impl)
