"""The linearised two-point model without the alignment assumption (`docs/rates.md`).

The reduced theory (`THEORY.md` §2) closes on `(h, y, w)` by assuming that the decoder's linear map
`D_y` acts only along the hidden difference `dh` (rank one, no rotation). Without that assumption, for
a one-dimensional output, the linearised model closes exactly on three other scalars:

    h = ‖dh‖²,   p = D_y·dh = dŷ,   q = ‖D_y‖²

(`D_y` a row vector) with `r = p − s`, `s = sqrt(dy2)`:

    dh/dt = −η_h·dx2·p·r
    dp/dt = −½·(η_h·dx2·q + η_y·h)·r
    dq/dt = −η_y·p·r

`y = p²`, `w = p·r`, and the alignment is `cos²θ = p²/(h·q) ≤ 1`; where it is 1 the system is the
reduced theory (`q = y/h`). `η_y·h − η_h·dx2·q` is conserved (the balance of the two layers), and the
final `h` has a closed form (`unaligned_fixed_point`). Nothing divides by `h`: no collision to handle.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import RealScalarLike
from ._norms import rms_norm_nan_is_inf
from ._results import raise_on_failure, RESULTS
from ._saving import solve_saving_at
from ._theory import EffectiveTheory
from ._validation import check_finite, check_positive, check_shape, concrete_array, is_concrete


class UnalignedSolution(eqx.Module):
    """A solution of the unaligned linearised model, returned by `solve_unaligned`.

    **Fields:**

    - `ts`: the save times.
    - `h`, `y`, `w`: the reduced state at `ts`, as in `TheorySolution`.
    - `q`: `‖D_y‖²`, the squared norm of the decoder's map, at `ts`.
    - `cos_theta`: the alignment `|p|/sqrt(h·q)` at `ts` (1 where the reduced theory holds).
    - `conserved`: `h − (η_h/η_y)·dx2·q` at `ts`; its drift measures the solve's accuracy.
    - `result`: a `flowsolve.RESULTS`; `RESULTS.successful` unless the solve failed.
    - `stats`: diffrax step statistics (`num_steps`, `num_accepted_steps`, `num_rejected_steps`).
    """

    ts: Float[Array, " times"]
    h: Float[Array, " times"]
    y: Float[Array, " times"]
    w: Float[Array, " times"]
    q: Float[Array, " times"]
    cos_theta: Float[Array, " times"]
    conserved: Float[Array, " times"]
    result: RESULTS
    stats: dict[str, Array]


def _to_pq(theory: EffectiveTheory, y, w):
    # w = y − s·p  ⇒  p = (y − w)/s.
    return (y - w) / jnp.sqrt(theory.dy2)


def _check(theory: EffectiveTheory, state0, q0) -> None:
    if not isinstance(theory, EffectiveTheory):
        raise ValueError(f"`theory` must be an EffectiveTheory, got {type(theory).__name__}.")
    check_shape("state0", state0, (3,))
    check_finite("state0", state0)
    check_positive("q0", q0, allow_zero=True)
    dy2 = concrete_array(theory.dy2)
    if dy2 is not None and not (dy2 > 0).all():
        raise ValueError("`theory.dy2` must be > 0 for the unaligned model (p = (y − w)/sqrt(dy2)).")
    state, q = concrete_array(state0), concrete_array(q0)
    if state is None or q is None or dy2 is None:
        return
    h, y, w = (float(v) for v in state)
    if not h > 0:
        raise ValueError(f"`state0` must have h0 > 0, got h0={h!r}.")
    p = (y - w) / float(dy2) ** 0.5
    if abs(p * p - y) > 1e-3 * y + 1e-12:
        raise ValueError(f"`state0` is not a state of a one-dimensional output: y0 = {y!r} but "
                         f"((y0 − w0)/sqrt(dy2))² = {p * p!r}.")
    if p * p > h * float(q) * (1 + 1e-9):
        raise ValueError(f"`q0` = {float(q)!r} is below y0/h0 = {p * p / h!r} (Cauchy–Schwarz: |cos θ| ≤ 1).")


def unaligned_fixed_point(
    theory: EffectiveTheory, state0: Float[ArrayLike, "3"], q0: RealScalarLike
) -> Float[Array, ""]:
    """The final `h = ‖dh(∞)‖²` of the unaligned linearised model started at `state0 = [h0, y0, w0]`
    with `q0 = ‖D_y‖²`, in closed form.

    With `α = ½·η_h·dx2`, `β = ½·η_y`, the parameters evolve as `da/dt = −α·r·b`, `db/dt = −β·r·a`
    (`a = D_h·dx`, `b = D_yᵀ`): linear in `(a, b)` given the scalar `r(t)`, so with `φ = sqrt(αβ)·∫r dt`
    and `k = sqrt(α/β)`: `p(φ) = p0·cosh 2φ − M·sinh 2φ`, `M = ½·(h0/k + k·q0)`. The flow stops where
    `p = s`: `exp(2φ) = (M + p0)/(sqrt(s² + M² − p0²) + s)`, and
    `h(∞) = cosh²φ·h0 − 2k·coshφ·sinhφ·p0 + k²·sinh²φ·q0`. Aligned (`q0 = y0/h0`) this is the
    reduced theory's `h(∞)` (`EffectiveTheory.fixed_point`).

    !!! example

        ```python
        theory = EffectiveTheory(eta_h=0.5, eta_y=0.5, dx2=1.0, dy2=0.5)
        unaligned_fixed_point(theory, [0.3, 0.01, 0.0807], q0=2.0)
        ```
    """
    _check(theory, state0, q0)
    state0 = jnp.asarray(state0, theory.eta_h.dtype)
    return _fixed_point(theory, state0, jnp.asarray(q0, state0.dtype))


def _fixed_point(theory, state0, q0):
    h0, y0, w0 = state0[0], state0[1], state0[2]
    p0 = _to_pq(theory, y0, w0)
    s = jnp.sqrt(theory.dy2)
    alpha, beta = 0.5 * theory.eta_h * theory.dx2, 0.5 * theory.eta_y
    k = jnp.sqrt(alpha / beta)
    big_m = 0.5 * (h0 / k + k * q0)
    z = (big_m + p0) / (jnp.sqrt(s**2 + big_m**2 - p0**2) + s)
    phi = 0.5 * jnp.log(z)
    c, sh = jnp.cosh(phi), jnp.sinh(phi)
    return c**2 * h0 - 2 * k * c * sh * p0 + k**2 * sh**2 * q0


def _vector_field(t, state, theory):
    del t
    h, p, q = state[0], state[1], state[2]
    r = p - jnp.sqrt(theory.dy2)
    a = theory.eta_h * theory.dx2
    return jnp.stack([-a * p * r, -0.5 * (a * q + theory.eta_y * h) * r, -theory.eta_y * p * r])


def solve_unaligned(
    theory: EffectiveTheory,
    state0: Float[ArrayLike, "3"],
    q0: RealScalarLike,
    t1: RealScalarLike,
    *,
    ts: Float[ArrayLike, " times"] | None = None,
    solver: diffrax.AbstractAdaptiveSolver | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 16_384,
    throw: bool = True,
) -> UnalignedSolution:
    """Solve the linearised two-point model without the alignment assumption (one-dimensional output).

    The reduced theory is this model with `q0 = y0/h0` (aligned); a network starts with `q0` far larger
    (`EffectiveRates.decoder_sq_norm`; `|cos θ|` = `sqrt(y0/(h0·q0))`). The module docstring of
    `flowsolve._unaligned` and `docs/rates.md` give the equations.

    **Arguments:**

    - `theory`: an `EffectiveTheory` (its `η_h, η_y, dx2` and `dy2 > 0`).
    - `state0`: `[h0, y0, w0]` of a one-dimensional output (`y0 = ((y0 − w0)/sqrt(dy2))²` to 0.1 %;
      the solve starts from `p0 = (y0 − w0)/sqrt(dy2)`).
    - `q0`: `‖D_y‖² ≥ y0/h0`, the squared norm of the decoder's gradient at the pair.
    - `t1`: the final gradient-flow time (the flow starts at 0).

    **Other arguments:** `ts` (default 101 evenly spaced), `solver` (default `diffrax.Tsit5()`),
    `rtol`, `atol`, `max_steps`, `throw` (raise on a failed solve; else reported in `result`).

    **Raises:** `ValueError` naming the argument for an inadmissible or ill-shaped input. Traced (under
    `jit`/`vmap`) bad values are a per-member `result` instead: `inadmissible_state` or `invalid_input`.

    !!! example

        ```python
        import jax
        jax.config.update("jax_enable_x64", True)
        import flowsolve as fs

        theory = fs.EffectiveTheory(eta_h=0.5, eta_y=0.5, dx2=1.0, dy2=0.5)
        sol = fs.solve_unaligned(theory, [0.3, 0.01, 0.0807], q0=2.0, t1=50.0)
        sol.h[-1], fs.unaligned_fixed_point(theory, [0.3, 0.01, 0.0807], 2.0)   # equal
        ```
    """
    _check(theory, state0, q0)
    check_finite("t1", t1)
    t1_c = concrete_array(t1)
    if t1_c is not None and not t1_c > 0:
        raise ValueError(f"`t1` must be > 0, got {float(t1_c)!r}.")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}.")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"`rtol` and `atol` must be > 0, got rtol={rtol!r}, atol={atol!r}.")
    dtype = theory.eta_h.dtype
    t1 = jnp.asarray(t1, dtype)
    ts = jnp.linspace(0.0, t1, 101, dtype=dtype) if ts is None else jnp.asarray(ts, dtype)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"`ts` must be a non-empty 1-d array of times, got shape {ts.shape}.")
    ts_c = concrete_array(ts)
    if ts_c is not None and (not np.all(np.isfinite(ts_c)) or np.any(np.diff(ts_c) < 0) or ts_c[0] < 0
                             or (t1_c is not None and ts_c[-1] > t1_c)):
        raise ValueError("`ts` must be finite, non-decreasing and lie in [0, t1].")
    concrete = is_concrete((theory, state0, q0, t1, ts))
    sol = _solve(theory, jnp.asarray(state0, dtype), jnp.asarray(q0, dtype), t1, ts,
                 diffrax.Tsit5() if solver is None else solver, rtol, atol, max_steps, throw and not concrete)
    if throw and concrete:
        raise_on_failure(sol.result, "solve_unaligned")
    return sol


@eqx.filter_jit
def _solve(theory, state0, q0, t1, ts, solver, rtol, atol, max_steps, throw) -> UnalignedSolution:
    h0, y0, w0 = state0[0], state0[1], state0[2]
    p0 = _to_pq(theory, y0, w0)
    admissible = (h0 > 0) & (q0 * h0 >= p0**2 * (1 - 1e-9)) & jnp.all(jnp.isfinite(state0)) & jnp.isfinite(q0)
    times_ok = jnp.all(jnp.isfinite(ts)) & jnp.all(jnp.diff(ts) >= 0) & (ts[0] >= 0) & (ts[-1] <= t1)
    okay = admissible & theory.valid & (theory.dy2 > 0) & jnp.isfinite(t1) & (t1 > 0) & times_ok
    stand_in = EffectiveTheory(1.0, 1.0, 1.0, 0.5)
    theory = jax.tree_util.tree_map(lambda a, b: jnp.where(okay, a, jnp.asarray(b, a.dtype)), theory, stand_in)
    y_init = jnp.where(okay, jnp.stack([h0, p0, q0]), jnp.asarray([1.0, 0.0, 1.0], state0.dtype))
    t1 = jnp.where(okay, t1, 1.0)
    ts = jnp.where(okay, ts, jnp.linspace(0.0, 1.0, ts.shape[0], dtype=ts.dtype))
    controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=rms_norm_nan_is_inf)
    saved = solve_saving_at(diffrax.ODETerm(_vector_field), solver, jnp.zeros((), ts.dtype), ts, y_init, theory,
                            controller, max_steps)
    h, p, q = saved.ys[:, 0], saved.ys[:, 1], saved.ys[:, 2]
    s = jnp.sqrt(theory.dy2)
    y, w = p**2, p * (p - s)
    cos_theta = jnp.abs(p) / jnp.sqrt(jnp.where(h * q > 0, h * q, 1.0))
    conserved = h - theory.eta_h / theory.eta_y * theory.dx2 * q
    result = RESULTS.promote(saved.result)
    finite = jnp.all(jnp.isfinite(saved.ys))
    result = RESULTS.where((result == RESULTS.successful) & ~finite, RESULTS.nonfinite_state, result)
    result = RESULTS.where(okay, result, RESULTS.where(admissible, RESULTS.invalid_input,
                                                         RESULTS.inadmissible_state))
    nan = jnp.asarray(jnp.nan, h.dtype)
    h, y, w, q, cos_theta, conserved = (jnp.where(okay, v, nan) for v in (h, y, w, q, cos_theta, conserved))
    if throw:  # traced (`solve_unaligned` checks concrete results on the host)
        h = result.error_if(h, result != RESULTS.successful)
    stats = saved.stats
    return UnalignedSolution(ts=ts, h=h, y=y, w=w, q=q, cos_theta=cos_theta, conserved=conserved,
                             result=result, stats=stats)

