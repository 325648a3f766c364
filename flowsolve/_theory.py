"""The reduced three-variable effective theory (`THEORY.md` §2–3) and its solver."""

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from ._custom_types import RealScalarLike
from ._norms import rms_norm_nan_is_inf
from ._results import raise_on_failure, RESULTS
from ._saving import solve_saving_at
from ._validation import check_finite, check_positive, check_shape, concrete_array, is_concrete


class EffectiveTheory(eqx.Module):
    """The three-variable effective theory of representation learning (van Rossem & Saxe 2024).

    The state is `[h, y, w]` with `h = ‖dh‖²` (squared distance of the two hidden
    representations), `y = ‖dŷ‖²` (squared distance of the two outputs) and `w = y − dy*·dŷ`.
    Time is gradient-flow time.

    **Arguments:**

    - `eta_h`: effective learning rate of the encoder, `η_h > 0`.
    - `eta_y`: effective learning rate of the decoder, `η_y > 0`.
    - `dx2`: squared input distance `‖x₂ − x₁‖² > 0`.
    - `dy2`: squared target distance `‖y₂* − y₁*‖² ≥ 0`.

    All four may be arrays of the same shape when the theory is used under `jax.vmap`.

    **Raises:** `ValueError` naming the argument when a concrete value is out of range or
    non-finite. Traced values (inside `jit`/`vmap`) cannot be checked now: `solve_theory` reports a
    theory with bad constants as `RESULTS.invalid_input`, per batch member.

    !!! example

        ```python
        theory = EffectiveTheory(eta_h=1.0, eta_y=1.0, dx2=1.0, dy2=0.5)
        theory.fixed_point(h0=0.01, y0=0.0)   # (A_low, A_high, h_inf)
        ```
    """

    eta_h: Float[Array, "*batch"]
    eta_y: Float[Array, "*batch"]
    dx2: Float[Array, "*batch"]
    dy2: Float[Array, "*batch"]

    def __init__(
        self,
        eta_h: RealScalarLike,
        eta_y: RealScalarLike,
        dx2: RealScalarLike,
        dy2: RealScalarLike,
    ):
        check_positive("eta_h", eta_h)
        check_positive("eta_y", eta_y)
        check_positive("dx2", dx2)
        check_positive("dy2", dy2, allow_zero=True)
        dtype = jnp.result_type(float, eta_h, eta_y, dx2, dy2)
        eta_h, eta_y, dx2, dy2 = (jnp.asarray(v, dtype) for v in (eta_h, eta_y, dx2, dy2))
        # Traced values are not checked here (an error here would take a whole batch down):
        # `solve_theory` reports a member with bad constants as `RESULTS.invalid_input`.
        self.eta_h, self.eta_y, self.dx2, self.dy2 = eta_h, eta_y, dx2, dy2

    @property
    def valid(self) -> Bool[Array, "*batch"]:
        """Whether the constants are in range: finite `η_h, η_y, dx2 > 0`, `dy2 ≥ 0` (for traced values)."""
        return ((self.eta_h > 0) & (self.eta_y > 0) & (self.dx2 > 0) & (self.dy2 >= 0)
                & jnp.isfinite(self.eta_h + self.eta_y + self.dx2 + self.dy2))

    @property
    def rate_ratio(self) -> Float[Array, "*batch"]:
        """`η_h/η_y`, the only combination of the rates that sets `h(∞)`."""
        return self.eta_h / self.eta_y

    def vector_field(self, t: Any, state: Float[ArrayLike, "3"], args: Any = None) -> Float[Array, "3"]:
        """`d/dt [h, y, w]` (`THEORY.md` §2), in diffrax's `(t, y, args)` convention.

        Singular at `h = 0`; `solve_theory` integrates the regular coordinates instead.
        """
        del t, args
        dh, dy_decoder, dy_encoder, dw_decoder, dw_encoder = vector_field_terms(
            jnp.asarray(state), self.eta_h, self.eta_y, self.dx2, self.dy2)
        return jnp.stack([dh, dy_decoder + dy_encoder, dw_decoder + dw_encoder])

    def conserved(self, h: ArrayLike, y: ArrayLike) -> Array:
        """The conserved quantity `Q = h − (η_h/η_y)·dx2·y/h` (`THEORY.md` §3)."""
        return h - self.rate_ratio * self.dx2 * y / h

    def fixed_point(self, h0: ArrayLike, y0: ArrayLike) -> tuple[Array, Array, Array]:
        """The fixed point reached from `(h0, y0)` (`THEORY.md` §3).

        **Returns:** `(A_low, A_high, h_inf)` with `A_high = Q(h0, y0)`,
        `A_low = sqrt(η_h/η_y·dx2·dy2)` and `h_inf = ½·A_high + sqrt(¼·A_high² + A_low²)`, the
        final squared hidden distance. Depends on `w0` not at all.

        **Raises:** `ValueError` for a concrete `h0 ≤ 0` or `y0 < 0` (no network has them).
        """
        check_positive("h0", h0)
        check_positive("y0", y0, allow_zero=True)
        a_high = self.conserved(h0, y0)
        a_low = jnp.sqrt(self.rate_ratio * self.dx2 * self.dy2)
        h_inf = _positive_root(a_high, a_low)
        return a_low, a_high, h_inf

    def convergence_rates(self, h_star: ArrayLike) -> tuple[Array, Array]:
        """The two asymptotic decay rates at the fixed point `(h_star, dy2, 0)`.

        From the eigenvalues of the Jacobian on the zero-loss set (`symbolic.derive_stability`):
        `η_y·h*` and `(η_h·dx2·dy2 + η_y·h*²)/(2h*)`. The loss approaches zero like
        `exp(−rate·t)` with the smaller of the two.
        """
        fast = self.eta_y * h_star
        other = (self.eta_h * self.dx2 * self.dy2 + self.eta_y * h_star**2) / (2 * h_star)
        return fast, other

    def stiffness(self, h0: ArrayLike, y0: ArrayLike) -> Array:
        """Ratio of the two convergence rates at the fixed point reached from `(h0, y0)`.

        Large (≳ 100) when the final hidden distance is far below `A_low`, i.e. when the output
        distance starts large against the hidden distance: explicit solvers then need very many
        steps and `solve_theory` switches to an implicit one.
        """
        _, _, h_inf = self.fixed_point(h0, y0)
        fast, other = self.convergence_rates(h_inf)
        return jnp.maximum(fast, other) / jnp.minimum(fast, other)

    def loss(
        self,
        state: Float[ArrayLike, "... 3"],
        m0: ArrayLike = 0.0,
        eta_mean: ArrayLike = 0.0,
        t: ArrayLike = 0.0,
    ) -> Array:
        """The training loss `L = ½·m(t) + ¼·(w + ½·(dy2 − y))` (`THEORY.md` §1–2).

        The second term is ⅛·‖dŷ − dy*‖², never negative for an admissible state; it is clamped at 0
        against rounding (it came out as −6e-18 at the fixed point), so that a log-scale plot holds.

        **Arguments:**

        - `state`: `[h, y, w]`, or an array of them with the state on the last axis.
        - `m0`: `m(0) = ‖ȳ − ȳ*‖²`, the squared error of the mean prediction at `t = 0`.
        - `eta_mean`: the mean's rate `η̄`; `m(t) = m0·exp(−2·η̄·t)`.
        - `t`: gradient-flow time(s) at which `state` is taken.
        """
        state = jnp.asarray(state)
        m = m0 * jnp.exp(-2 * eta_mean * jnp.asarray(t))
        return theory_loss(m, state[..., 1], state[..., 2], self.dy2)


def theory_loss(m: ArrayLike, y: ArrayLike, w: ArrayLike, dy2: ArrayLike) -> Array:
    """`L = ½·m + ¼·(w + ½·(dy2 − y))`, the second term clamped at 0 against rounding (`EffectiveTheory.loss`)."""
    return 0.5 * m + jnp.maximum(0.25 * (w + 0.5 * (dy2 - y)), 0.0)


def _positive_root(a_high, a_low):
    # ½·A + sqrt(¼·A² + B²), written without cancellation for A < 0.
    root = jnp.sqrt(0.25 * a_high**2 + a_low**2)
    return jnp.where(a_high >= 0, 0.5 * a_high + root, a_low**2 / (root - 0.5 * a_high))


# ----------------------------------------------------------------------------------------
# Regular coordinates (THEORY.md §3, "Collisions")


def vector_field_terms(state: Array, eta_h, eta_y, dx2, dy2) -> tuple[Array, Array, Array, Array, Array]:
    """The five terms of `d/dt [h, y, w]` (`THEORY.md` §2): `dh = −η_h·dx2·w`; the decoder's and
    the encoder's terms of `dy`, `−w·η_y·h` and `−w·η_h·dx2·y/h`; of `dw`, `−½·η_y·(3w − y + dy2)·h`
    and `−½·η_h·dx2·(y + w)·w/h`. `EffectiveTheory.vector_field` sums them; `alternatives` scales them."""
    h, y, w = state[0], state[1], state[2]
    return (
        -eta_h * dx2 * w,
        -w * eta_y * h,
        -w * eta_h * dx2 * y / h,
        -0.5 * eta_y * (3 * w - y + dy2) * h,
        -0.5 * eta_h * dx2 * (y + w) * w / h,
    )


def _regular_vector_field(t, state, theory: EffectiveTheory):
    """`d/dt (a, u_par, u_perp)`: polynomial, regular at the collision `a = 0`."""
    del t
    a, u_par, u_perp = state
    s = jnp.sqrt(theory.dy2)
    r_par = a * u_par - s
    r_perp = a * u_perp
    da = -0.5 * theory.eta_h * theory.dx2 * (u_par * r_par + u_perp * r_perp)
    du_par = -0.5 * theory.eta_y * a * r_par
    du_perp = -0.5 * theory.eta_y * a * r_perp
    return da, du_par, du_perp


def to_regular(theory: EffectiveTheory, state: Float[ArrayLike, "3"]):
    """`(h, y, w)` with `h > 0` → regular coordinates `(a, u_par, u_perp)`, `a = +sqrt(h)`."""
    state = jnp.asarray(state)
    h, y, w = state[0], state[1], state[2]
    a = jnp.sqrt(h)
    s = jnp.sqrt(theory.dy2)
    safe_s = jnp.where(s > 0, s, 1.0)
    # For dy2 = 0 admissibility forces w = y; any direction serves for u_par.
    u_par = jnp.where(s > 0, (y - w) / (a * safe_s), jnp.sqrt(y / h))
    u_perp = jnp.sqrt(jnp.maximum(y / h - u_par**2, 0.0))
    return a, u_par, u_perp


def from_regular(theory: EffectiveTheory, a, u_par, u_perp):
    """Regular coordinates → `(h, y, w)`; exact inverse of `to_regular` where `h > 0`."""
    s = jnp.sqrt(theory.dy2)
    r_par = a * u_par - s
    r_perp = a * u_perp
    h = a**2
    y = h * (u_par**2 + u_perp**2)
    w = a * (u_par * r_par + u_perp * r_perp)
    return h, y, w


# ----------------------------------------------------------------------------------------
# Solving


class TheorySolution(eqx.Module):
    """A solution of the effective theory, returned by `solve_theory`.

    Time is gradient-flow time. Arrays have the length of `ts` (plus any leading batch axes
    when produced under `jax.vmap`).

    **Fields:**

    - `ts`: the save times.
    - `h`, `y`, `w`: the reduced state at `ts`.
    - `loss`: the training loss at `ts` (`EffectiveTheory.loss` with the solve's `m0`, `eta_mean`).
    - `conserved`: `Q` at `ts`, computed in the regular coordinates (finite through collisions);
      its drift measures the solve's accuracy.
    - `a`, `u_par`, `u_perp`: the regular coordinates at `ts` (`a` is the signed hidden distance).
    - `collided`: whether the two hidden representations collided (`a` changed sign).
    - `t_collision`: the first collision time (`inf` when none), located between the save times
      bracketing the sign change by cubic Hermite interpolation (error O(Δt⁴)).
    - `result`: a `flowsolve.RESULTS`; `RESULTS.successful` unless the solve failed.
    - `stats`: diffrax step statistics (`num_steps`, `num_accepted_steps`, `num_rejected_steps`)
      and `t_final`, the time the solve reached (< `t1` after a steady-state stop).
    """

    ts: Float[Array, " times"]
    h: Float[Array, " times"]
    y: Float[Array, " times"]
    w: Float[Array, " times"]
    loss: Float[Array, " times"]
    conserved: Float[Array, " times"]
    a: Float[Array, " times"]
    u_par: Float[Array, " times"]
    u_perp: Float[Array, " times"]
    collided: Bool[Array, ""]
    t_collision: Float[Array, ""]
    result: RESULTS
    stats: dict[str, Array]

    @property
    def state(self) -> Float[Array, "times 3"]:
        """`[h, y, w]` stacked on the last axis."""
        return jnp.stack([self.h, self.y, self.w], axis=-1)


def solve_theory(
    theory: EffectiveTheory,
    state0: Float[ArrayLike, "3"],
    t1: RealScalarLike,
    *,
    t0: RealScalarLike = 0.0,
    ts: Float[ArrayLike, " times"] | None = None,
    solver: diffrax.AbstractAdaptiveSolver | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 16_384,
    m0: RealScalarLike = 0.0,
    eta_mean: RealScalarLike = 0.0,
    adjoint: diffrax.AbstractAdjoint | None = None,
    stop_at_steady_state: bool = True,
    progress_meter: diffrax.AbstractProgressMeter | None = None,
    throw: bool = True,
) -> TheorySolution:
    """Solve the effective theory from `state0 = [h0, y0, w0]` over gradient-flow time `[t0, t1]`.

    The solve runs in the regular coordinates `(a, u_par, u_perp)` of `THEORY.md` §3 and maps back
    to `(h, y, w)` at the save times, so trajectories that pass through a collision of the two
    hidden representations (`h → 0`) are integrated correctly and the collision is reported.

    **Arguments:**

    - `theory`: the `EffectiveTheory`.
    - `state0`: the initial `[h0, y0, w0]`, admissible: `h0 > 0`, `y0 ≥ 0`, `(y0 − w0)² ≤ dy2·y0`; or
      many of them, shape `(batch, 3)`, solved by `solve_theory_batch` (not in lockstep with the stiffest;
      `throw` then raises for the first member that failed, after all are solved).
    - `t1`: the final time (`t1 > t0`).

    **Other arguments:**

    - `t0`: the initial time.
    - `ts`: increasing save times in `[t0, t1]`; default 101 evenly spaced times from `t0` to `t1`.
    - `solver`: any adaptive diffrax solver. Default: `diffrax.Tsit5()`; when the arguments are
      concrete and the problem is stiff (`EffectiveTheory.stiffness` over `STIFFNESS_THRESHOLD`
      = 100), `diffrax.Kvaerno5()`. Under `jax.vmap`/`jax.jit` the choice cannot see the values
      and Tsit5 is used: pass `solver=diffrax.Kvaerno5()` for stiff batches (a stiff member
      otherwise ends with `RESULTS.max_steps_reached`, reported, never silently).
    - `rtol`, `atol`: tolerances of the PID step-size controller.
    - `max_steps`: the most solver steps.
    - `m0`, `eta_mean`: the initial mean error and its rate, for the `loss` (`THEORY.md` §2).
    - `adjoint`: a diffrax adjoint (e.g. `diffrax.ForwardMode()` to differentiate with `jax.jacfwd`).
    - `stop_at_steady_state`: stop integrating once the state sits on the zero-loss set and has
      less than the tolerance left to move (estimated from the slower convergence rate at the
      closed-form fixed point); later save times then hold that final state. Saves the long
      stability-limited tail of steps. `stats["t_final"]` is where the solve stopped.
    - `progress_meter`: a diffrax progress meter, e.g. `diffrax.TqdmProgressMeter()` (off by default:
      most solves take milliseconds). A solve with a meter calls back to the host, so it is not stored
      by `enable_compilation_cache` for fresh processes.
    - `throw`: raise on failure (max steps, non-finite state). With `throw=False` the failure is
      reported in `result` instead, as batched users need.

    **Returns:** a `TheorySolution`.

    **Raises:** `ValueError` naming the argument for an out-of-range or ill-shaped input;
    a runtime error with diffrax's or flowsolve's message when the solve fails and `throw=True`.

    !!! example

        ```python
        import jax
        jax.config.update("jax_enable_x64", True)
        from flowsolve import EffectiveTheory, solve_theory

        theory = EffectiveTheory(eta_h=1.0, eta_y=1.0, dx2=1.0, dy2=0.5)
        sol = solve_theory(theory, [0.01, 0.0, 0.0], t1=200.0)
        sol.h[-1], theory.fixed_point(0.01, 0.0)[2]   # both ≈ 0.7121
        ```
    """
    if not isinstance(theory, EffectiveTheory):
        raise ValueError(f"`theory` must be an EffectiveTheory, got {type(theory).__name__}.")
    if np.ndim(state0) == 2 and is_concrete((theory, state0)):
        # Many starts: the batch path, which does not step in lockstep with its stiffest member.
        sol = solve_theory_batch(theory, state0, t1, t0=t0, ts=ts, solver=solver, rtol=rtol, atol=atol,
                                 max_steps=max_steps, m0=m0, eta_mean=eta_mean, adjoint=adjoint,
                                 stop_at_steady_state=stop_at_steady_state, progress_meter=progress_meter)
        if throw:
            raise_on_failure(sol.result, "solve_theory")
        return sol
    check_shape("state0", state0, (3,))
    _check_state(theory, state0)
    check_finite("t0", t0)
    check_finite("t1", t1)
    t0_c, t1_c = concrete_array(t0), concrete_array(t1)
    if t0_c is not None and t1_c is not None and not t1_c > t0_c:
        raise ValueError(f"`t1` must be greater than `t0`, got t0={float(t0_c)!r}, t1={float(t1_c)!r}.")
    check_positive("m0", m0, allow_zero=True)
    check_finite("eta_mean", eta_mean)
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}.")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"`rtol` and `atol` must be > 0, got rtol={rtol!r}, atol={atol!r}.")
    dtype = theory.eta_h.dtype
    if ts is None:
        ts = jnp.linspace(jnp.asarray(t0, dtype), jnp.asarray(t1, dtype), 101)
    else:
        ts = jnp.asarray(ts, dtype)
        if ts.ndim != 1 or ts.shape[0] < 1:
            raise ValueError(f"`ts` must be a non-empty 1-d array of times, got shape {ts.shape}.")
        ts_c = concrete_array(ts)
        if ts_c is not None:
            if np.any(np.diff(ts_c) < 0) or not np.all(np.isfinite(ts_c)):
                raise ValueError("`ts` must be finite and non-decreasing.")
            if t0_c is not None and t1_c is not None and (ts_c[0] < t0_c or ts_c[-1] > t1_c):
                raise ValueError(
                    f"`ts` must lie in [t0, t1] = [{float(t0_c)}, {float(t1_c)}], "
                    f"got [{ts_c[0]}, {ts_c[-1]}]."
                )
    if solver is None:
        solver = _default_solver(theory, state0)
    # Everything numeric travels as an array, so that new values reuse the compiled solve.
    # Outside a trace a failure is raised here, after the solve, so that the compiled program has no host
    # callback and JAX's persistent cache can keep it for the next process; traced, `error_if` raises.
    concrete = is_concrete((theory, state0, t0, t1, ts, m0, eta_mean))
    t0, t1, m0, eta_mean, rtol, atol = (jnp.asarray(v, dtype) for v in (t0, t1, m0, eta_mean, rtol, atol))
    state0 = jnp.asarray(state0, dtype)
    sol = None
    if progress_meter is not None and not isinstance(progress_meter, diffrax.AbstractProgressMeter):
        raise ValueError(f"`progress_meter` must be a diffrax progress meter, got {type(progress_meter).__name__}.")
    if concrete and adjoint is None and progress_meter is None:
        # through the exported-program cache, when JAX's persistent cache is on
        sol = _solve_exported(theory, state0, t0, t1, ts, solver, rtol, atol, max_steps, m0, eta_mean,
                              stop_at_steady_state)
    if sol is None:
        sol = _solve(theory, state0, t0, t1, ts, solver, rtol, atol, max_steps, m0, eta_mean, adjoint,
                     throw and not concrete, stop_at_steady_state, progress_meter)
    if throw and concrete:
        raise_on_failure(sol.result, "solve_theory")
    return sol


def _solve_exported(theory, state0, t0, t1, ts, solver, rtol, atol, max_steps, m0, eta_mean, stop):
    """`_solve` through `_compile_cache.call_cached`: a fresh process skips tracing as well as compiling.
    `None` when the cache is off or the program cannot be stored."""
    from ._compile_cache import call_cached

    def flat(eta_h, eta_y, dx2, dy2, *rest):
        state, start, end, times, m, rate, relative, absolute = rest
        out = _solve(EffectiveTheory(eta_h, eta_y, dx2, dy2), state, start, end, times, solver, relative, absolute,
                     max_steps, m, rate, None, False, stop)
        return jax.tree_util.tree_leaves(out)

    args = [theory.eta_h, theory.eta_y, theory.dx2, theory.dy2, state0, t0, t1, ts, m0, eta_mean, rtol, atol]
    out = call_cached("solve_theory", flat, (solver, max_steps, stop), args)
    return None if out is None else jax.tree_util.tree_unflatten(_SOLUTION_TREEDEF, out)


_SOLUTION_TREEDEF = jax.tree_util.tree_structure(TheorySolution(
    **{f: 0.0 for f in TheorySolution.__dataclass_fields__ if f not in ("result", "stats")},
    result=RESULTS.successful,
    stats={k: 0 for k in ("num_steps", "num_accepted_steps", "num_rejected_steps", "t_final")},
))


def _check_state(theory: EffectiveTheory, state0) -> None:
    value = concrete_array(state0)
    if value is None:
        return
    if not np.all(np.isfinite(value)):
        raise ValueError(f"`state0` must be finite, got {value}.")
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite(np.asarray(value, np.float64) ** 2 * 16)):
            raise ValueError(f"`state0` = {value.tolist()} is too large: its squares overflow, and so would the "
                             "solve; rescale the problem (distances in other units).")
    h0, y0, w0 = value
    if h0 <= 0:
        raise ValueError(
            f"`state0`: h0 must be > 0 (the (h, y, w) system is singular at h = 0), got h0={h0!r}."
        )
    if y0 < 0:
        raise ValueError(f"`state0`: y0 = ‖dŷ‖² must be ≥ 0, got y0={y0!r}.")
    dy2 = concrete_array(theory.dy2)
    if dy2 is not None and dy2.ndim == 0:
        slack = 1e-10 * max(dy2 * y0, (y0 - w0) ** 2, 1e-300)
        if (y0 - w0) ** 2 > dy2 * y0 + slack:
            raise ValueError(
                "`state0` is not admissible: (y0 − w0)² ≤ dy2·y0 is required (Cauchy–Schwarz), "
                f"got (y0 − w0)² = {(y0 - w0) ** 2!r} > dy2·y0 = {float(dy2 * y0)!r}."
            )


def _admissible(theory: EffectiveTheory, state0: Array) -> Bool[Array, ""]:
    """The traced counterpart of `_check_state`: finite, h0 > 0, y0 ≥ 0, (y0 − w0)² ≤ dy2·y0."""
    h0, y0, w0 = state0[0], state0[1], state0[2]
    slack = 1e-10 * jnp.maximum(jnp.maximum(theory.dy2 * y0, (y0 - w0) ** 2), 1e-300)
    return (jnp.all(jnp.isfinite(state0)) & jnp.all(jnp.isfinite(state0**2 * 16)) & (h0 > 0) & (y0 >= 0)
            & ((y0 - w0) ** 2 <= theory.dy2 * y0 + slack))


def _default_solver(theory: EffectiveTheory, state0) -> diffrax.AbstractAdaptiveSolver:
    if not is_concrete((theory, state0)) or np.ndim(theory.eta_h) != 0:
        return diffrax.Tsit5()
    h0, y0, _ = np.asarray(state0, dtype=theory.eta_h.dtype)  # the theory's precision
    stiff = float(theory.stiffness(h0, y0)) > STIFFNESS_THRESHOLD
    return diffrax.Kvaerno5() if stiff else diffrax.Tsit5()


STIFFNESS_THRESHOLD = 100.0
"""Above this ratio of convergence rates `solve_theory` picks an implicit solver.

Measured (float64, rtol 1e-8, to 30 slow time constants): Tsit5 needed ≤ 235 steps up to a ratio
of 17, 39 363 steps at 3.6e3 and over 170 000 from 1.6e4 on; Kvaerno5 stayed under 650 steps
everywhere (η_h/η_y from 1e-3 to 1e3, h0 from 1e-3 to 1e2)."""


REGULAR_TOLERANCE = 0.1
"""The step-size controller of `solve_theory` holds the regular coordinates to this fraction of the
requested `rtol`, `atol`, so that the final `h` meets the tolerance as a solve in `(h, y, w)` does.

`h = a²`, `y = a²·|u|²`: an error in `(a, u)` reaches `h` doubled, and the final h, set by the
conserved quantity, collects the drift of the whole run. Measured (`benchmarks/bench_theory.py`'s
starts, float64, rtol 1e-8, atol 1e-10, Tsit5, final h against the closed form over the members that
converged by t = 200): at the requested tolerance, median error 2.1e-9, 90th percentile 1.7e-8, 288 steps
on average; at a tenth of it 2.0e-10 and 2.3e-9 with 368 steps — as accurate as diffrax on `(h, y, w)`
(7.5e-11, 2.3e-9, 350 steps), which cannot pass a collision."""


def _steady_state(theory: EffectiveTheory, rate: Array, rtol: float, atol: float):
    """Event condition: the state is on the zero-loss set and will move less than the tolerance.

    Near the fixed point the state relaxes like exp(−λ·t) with λ ≥ `rate` (the slower of the two
    convergence rates), so what is left to move is at most |d/dt| / λ per coordinate. The solve stops
    when that is below `atol + rtol·|coordinate|` for every regular coordinate, and the output
    residual ‖dŷ − dy*‖² is below the same tolerance (which excludes a slow plateau far from the
    fixed set, e.g. the start of a rich trajectory).
    """

    def cond_fn(t, state, args, **kwargs):
        del kwargs
        field = _regular_vector_field(t, state, theory)
        small = [jnp.abs(f) <= rate * (atol + rtol * jnp.abs(c)) for f, c in zip(field, state)]
        a, u_par, u_perp = state
        residual = (a * u_par - jnp.sqrt(theory.dy2)) ** 2 + (a * u_perp) ** 2
        on_zero_loss_set = residual <= atol + rtol * theory.dy2
        return small[0] & small[1] & small[2] & on_zero_loss_set

    return cond_fn


@eqx.filter_jit
def _solve(theory, state0, t0, t1, ts, solver, rtol, atol, max_steps, m0, eta_mean, adjoint, throw, stop_at_steady_state,
           progress_meter=None):
    # Concrete inputs were checked by `solve_theory`; traced ones are checked here. A member that
    # fails a check is flagged in `result` and gets NaN outputs; it is solved on harmless stand-in
    # values, so that the checks of diffrax and of the solver cannot take the whole batch down.
    admissible = _admissible(theory, state0)
    valid = (theory.valid & jnp.isfinite(t0) & jnp.isfinite(t1) & (t1 > t0) & jnp.all(jnp.isfinite(ts))
             & jnp.all(jnp.diff(ts) >= 0) & (ts[0] >= t0) & (ts[-1] <= t1) & jnp.isfinite(m0) & (m0 >= 0)
             & jnp.isfinite(eta_mean))
    okay = admissible & valid
    stand_in = EffectiveTheory(1.0, 1.0, 1.0, 0.5)
    theory = jax.tree_util.tree_map(lambda a, b: jnp.where(okay, a, jnp.asarray(b, a.dtype)), theory, stand_in)
    state0 = jnp.where(okay, state0, jnp.asarray([1.0, 0.5, 0.0], state0.dtype))
    t0_in, t1_in = t0, t1
    t0 = jnp.where(okay, t0, 0.0)
    t1 = jnp.where(okay, t1, 1.0)
    ts = jnp.where(okay, ts, jnp.linspace(0.0, 1.0, ts.shape[0], dtype=ts.dtype))
    m0, eta_mean = jnp.where(okay, m0, 0.0), jnp.where(okay, eta_mean, 0.0)
    y0 = to_regular(theory, state0)
    controller = diffrax.PIDController(rtol=REGULAR_TOLERANCE * rtol, atol=REGULAR_TOLERANCE * atol,
                                       norm=rms_norm_nan_is_inf)
    event = None
    if stop_at_steady_state:
        _, _, h_inf = theory.fixed_point(state0[0], state0[1])
        rate = jnp.minimum(*theory.convergence_rates(h_inf))
        event = diffrax.Event(_steady_state(theory, rate, rtol, atol))
    # Saved by the solver itself (at the save times, then on to t1): no host callback in the program,
    # so that JAX's persistent cache can keep it for the next process. After a steady-state stop the
    # later save times hold the final state (it moves less than the tolerance from there on).
    saved = solve_saving_at(diffrax.ODETerm(_regular_vector_field), solver, t0, jnp.append(ts, t1), y0, theory,
                            controller, max_steps, event=event, adjoint=adjoint, progress_meter=progress_meter)
    result = RESULTS.promote(saved.result)
    t_final = saved.t_final
    a, u_par, u_perp = (v[:-1] for v in saved.ys)
    h, y, w = from_regular(theory, a, u_par, u_perp)
    conserved = a**2 - theory.rate_ratio * theory.dx2 * (u_par**2 + u_perp**2)
    loss = theory.loss(jnp.stack([h, y, w], axis=-1), m0, eta_mean, ts)
    finite = jnp.all(jnp.isfinite(h) & jnp.isfinite(y) & jnp.isfinite(w))
    result = RESULTS.where(
        (result == RESULTS.successful) & ~finite, RESULTS.nonfinite_state, result
    )
    collided, t_collision = _first_collision(theory, ts, a, u_par, u_perp)
    result = RESULTS.where(admissible, RESULTS.where(valid, result, RESULTS.invalid_input),
                           RESULTS.inadmissible_state)
    nan = jnp.asarray(jnp.nan, h.dtype)
    h, y, w, loss, conserved, a, u_par, u_perp = (jnp.where(okay, v, nan)
                                                   for v in (h, y, w, loss, conserved, a, u_par, u_perp))
    t_final = jnp.where(okay, t_final, t0_in)
    del t1_in
    if throw:
        h = result.error_if(h, result != RESULTS.successful)
    stats = dict(saved.stats, t_final=t_final)
    return TheorySolution(
        ts=ts, h=h, y=y, w=w, loss=loss, conserved=conserved, a=a, u_par=u_par, u_perp=u_perp,
        collided=collided, t_collision=t_collision, result=result, stats=stats,
    )


def solve_theory_batch(
    theory: EffectiveTheory,
    states0: Float[ArrayLike, "batch 3"],
    t1: RealScalarLike,
    *,
    buckets: int | None = None,
    ts: Float[ArrayLike, " times"] | None = None,
    **kwargs,
) -> TheorySolution:
    """Solve many initial states at once, without the batch paying for its slowest member.

    A vmapped adaptive solve steps all members in lockstep until the slowest one finishes, and the
    cost of a member is set mostly by its stiffness (`EffectiveTheory.stiffness`): over random
    starts, one member in a thousand can need ten times the median number of steps. This sorts
    the members by stiffness, splits them into `buckets` equal chunks and solves each chunk with
    one jitted, vmapped `solve_theory` (one compilation for all chunks), so that a chunk runs only
    as long as its own slowest member. Results come back in the input order.

    **Arguments:**

    - `theory`: an `EffectiveTheory` whose fields are scalars (shared by all members) or have a
      leading axis of length `batch`.
    - `states0`: `(batch, 3)` admissible initial states `[h0, y0, w0]`.
    - `t1`: the final time, shared by all members.
    - `buckets`: how many chunks. Default `batch // 64` within [1, 16]: chunks of at least 64 members,
      since a smaller batch is faster as one vmapped solve (N = 100: 470 µs per member in one chunk,
      560 in 16; N = 1 000: 480 in one, 190 in 16, 385 in 64; N = 10 000: 78 in 16 — on the CPU,
      `benchmarks/bench_theory.py`). On a GPU use 1–4.
    - `ts`, and any other keyword argument of `solve_theory` (`solver`, `rtol`, `atol`,
      `max_steps`, `m0`, `eta_mean`, `t0`), shared by all members. `throw` is always `False`:
      each member's `result` says whether it succeeded.

    **Returns:** a `TheorySolution` whose arrays have a leading axis of length `batch`.
    """
    if not isinstance(theory, EffectiveTheory):
        raise ValueError(f"`theory` must be an EffectiveTheory, got {type(theory).__name__}.")
    states0 = np.asarray(states0, dtype=theory.eta_h.dtype)
    if states0.ndim != 2 or states0.shape[1] != 3 or states0.shape[0] < 1:
        raise ValueError(f"`states0` must have shape (batch, 3), got {states0.shape}.")
    if buckets is not None and not (isinstance(buckets, int) and buckets >= 1):
        raise ValueError(f"`buckets` must be a positive int or None, got {buckets!r}.")
    if "throw" in kwargs:
        raise ValueError("`solve_theory_batch` never throws; read each member's `result` instead.")
    n = states0.shape[0]
    if buckets is None:
        buckets = min(16, max(1, n // 64))
    try:
        fields = [np.broadcast_to(np.asarray(f), (n,)) for f in (theory.eta_h, theory.eta_y, theory.dx2, theory.dy2)]
    except ValueError:
        raise ValueError(
            f"`theory`'s fields must be scalars or have a leading axis of length {n} (the batch)."
        ) from None
    _check_states(states0, fields[3])
    t0 = kwargs.pop("t0", 0.0)
    if ts is None:
        ts = np.linspace(t0, t1, 101)
    dtype = states0.dtype
    times = (jnp.asarray(t0, dtype), jnp.asarray(t1, dtype), jnp.asarray(ts, dtype))
    buckets = min(buckets, n)
    if buckets == 1:  # one vmapped solve: nothing to sort, nothing to reorder
        return _solve_chunk(EffectiveTheory(*fields), states0, times, kwargs)
    stiffness = np.asarray(EffectiveTheory(*fields).stiffness(states0[:, 0], states0[:, 1]))
    order = np.argsort(stiffness, kind="stable")
    size = -(-n // buckets)
    # Equal chunk sizes (the last padded with copies of the stiffest member): one compilation.
    padded = np.concatenate([order, np.full(size * buckets - n, order[-1])])
    # Chunks go round-robin to every device JAX sees; dispatch is asynchronous, so they run
    # concurrently (e.g. one per core with XLA_FLAGS=--xla_force_host_platform_device_count=2).
    devices = jax.devices()
    chunks = []
    for b in range(buckets):
        idx = padded[b * size : (b + 1) * size]
        inputs = (EffectiveTheory(*(f[idx] for f in fields)), states0[idx], times)
        inputs = jax.device_put(inputs, devices[b % len(devices)])
        chunks.append(_solve_chunk(*inputs, kwargs))
    chunks = jax.device_get(chunks)
    inverse = np.empty(n, dtype=int)
    inverse[order] = np.arange(n)
    return jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.concatenate(xs)[:n][inverse]), *chunks)


def _check_states(states0: np.ndarray, dy2: np.ndarray) -> None:
    h0, y0, w0 = states0.T
    checks = [
        (~np.isfinite(states0).all(axis=1), "must be finite"),
        (~np.isfinite(np.nan_to_num(states0) ** 2 * 16).all(axis=1), "is too large: its squares overflow"),
        (h0 <= 0, "needs h0 > 0 (the (h, y, w) system is singular at h = 0)"),
        (y0 < 0, "needs y0 ≥ 0"),
        ((y0 - w0) ** 2 > dy2 * y0 * (1 + 1e-10) + 1e-300, "is not admissible: (y0 − w0)² ≤ dy2·y0 is required"),
    ]
    for bad, message in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"`states0[{i}]` = {states0[i].tolist()} {message} ({int(bad.sum())} such rows).")


@eqx.filter_jit
def _solve_chunk(theory, states0, times, kwargs):
    t0, t1, ts = times
    kwargs = dict(kwargs)
    solver = kwargs.pop("solver", None) or diffrax.Tsit5()

    def one(th, s):
        return solve_theory(th, s, t1, t0=t0, ts=ts, solver=solver, throw=False, **kwargs)

    return jax.vmap(one)(theory, states0)


def _first_collision(theory, ts, a, u_par, u_perp):
    """First sign change of `a` between save times, refined by cubic Hermite interpolation."""
    if ts.shape[0] < 2:
        return jnp.array(False), jnp.array(jnp.inf, ts.dtype)
    sign_change = (a[:-1] * a[1:] < 0) | ((a[1:] == 0) & (a[:-1] != 0))
    collided = jnp.any(sign_change)
    i = jnp.argmax(sign_change)
    t_lo, t_hi = ts[i], ts[i + 1]
    dt = t_hi - t_lo
    da_lo = _regular_vector_field(None, (a[i], u_par[i], u_perp[i]), theory)[0]
    da_hi = _regular_vector_field(None, (a[i + 1], u_par[i + 1], u_perp[i + 1]), theory)[0]

    def hermite(s):
        s2, s3 = s * s, s * s * s
        return (
            (2 * s3 - 3 * s2 + 1) * a[i]
            + (s3 - 2 * s2 + s) * dt * da_lo
            + (-2 * s3 + 3 * s2) * a[i + 1]
            + (s3 - s2) * dt * da_hi
        )

    # Bisection on [0, 1]: the bracket is guaranteed by the sign change; 60 halvings reach
    # float64 resolution.
    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        same = jnp.sign(hermite(mid)) == jnp.sign(hermite(lo))
        return jnp.where(same, mid, lo), jnp.where(same, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 60, body, (jnp.zeros_like(dt), jnp.ones_like(dt)))
    t_collision = jnp.where(collided, t_lo + 0.5 * (lo + hi) * dt, jnp.inf)
    return collided, t_collision
