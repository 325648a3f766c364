"""Ensembles of gradient flows integrated as one ODE with one step-size controller."""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import RealScalarLike
from ._flow import _prepare, FlowSolution, integrate_parameters, Loss, Observer, pid_controller
from ._results import RESULTS
from ._validation import concrete_array, is_concrete


def ensemble_flow(
    models: eqx.Module,
    inputs: Float[ArrayLike, "points ..."] | Float[ArrayLike, "members points ..."],
    targets: Float[ArrayLike, "points ..."] | Float[ArrayLike, "members points ..."],
    t1: RealScalarLike,
    *,
    ts: Float[ArrayLike, " times"] | None = None,
    observe: dict[str, Callable] | Observer | None = None,
    layer: int | None = None,
    loss: Loss | None = None,
    solver: diffrax.AbstractAdaptiveSolver | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    max_steps: int = 100_000,
    data_batched: bool = False,
    progress_meter: diffrax.AbstractProgressMeter | None = None,
    throw: bool = True,
) -> FlowSolution:
    """Integrate the gradient flows of an ensemble of networks of one architecture (e.g. many seeds)
    as one ODE over their stacked parameters, with one step-size controller.

    This is the fast way to run many flows at once: `jax.vmap(gradient_flow)` batches the solver's
    whole adaptive loop (every member pays for every branch of every step), whereas here the members
    share each step and its bookkeeping, and only the gradients are batched. A step is accepted only
    when *every* member's own error estimate (the RMS norm `gradient_flow` uses) is within tolerance,
    so each member is integrated at least as accurately as alone; results agree with separate
    `gradient_flow` runs to the tolerance, not bit for bit (the steps differ).

    A member whose state becomes non-finite stays so and is flagged in `result`; the controller
    ignores its error, so the others go on.

    With `solver=flowsolve.RKC()` the spectral radius is estimated for the stacked system, i.e. the
    stiffest member's (non-finite members ignored), and every member takes that many stages.

    **Arguments:**

    - `models`: one Equinox model whose inexact-array leaves carry a leading ensemble axis, e.g.
      `eqx.filter_vmap(lambda k: models.MLP(1, 1, 100, 4, key=k))(jax.random.split(key, 64))`.
    - `inputs`, `targets`: shared by every member, or with a leading ensemble axis when
      `data_batched=True` (e.g. a sweep over data geometry).
    - `t1` and the keyword arguments: as for `gradient_flow`.

    **Returns:** a `FlowSolution` whose `observed` values, `model` leaves, `result` and
    `stats["t_final"]` have the leading ensemble axis; `stats` step counts are shared.

    !!! example

        ```python
        keys = jax.random.split(jax.random.key(0), 64)
        nets = eqx.filter_vmap(lambda k: models.MLP(1, 1, 100, 4, activation="tanh", key=k))(keys)
        inputs, targets = flowsolve.experiments.two_point_data(x0=-0.5)
        sol = flowsolve.ensemble_flow(nets, inputs, targets, 5.0, layer=2)
        sol.observed["h"].shape   # (64, 101)
        ```
    """
    params, static = eqx.partition(models, eqx.is_inexact_array)
    leaves = jax.tree_util.tree_leaves(params)
    if not isinstance(models, eqx.Module) or not leaves:
        raise ValueError("`models` must be an Equinox module with inexact array leaves stacked on a leading axis.")
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes or 0 in sizes:
        raise ValueError(
            "Every inexact leaf of `models` must carry the same leading ensemble axis (e.g. built with "
            f"`eqx.filter_vmap`), got leading sizes {sorted(map(str, sizes))}."
        )
    (members,) = sizes
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    if data_batched:
        for name, arr in (("inputs", inputs), ("targets", targets)):
            if arr.ndim < 2 or arr.shape[0] != members:
                raise ValueError(
                    f"With `data_batched=True`, `{name}` must have the leading ensemble axis of size "
                    f"{members}, got shape {arr.shape}."
                )
    first = eqx.combine(jax.tree_util.tree_map(lambda x: x[0], params), static)
    one_in, one_tg = (inputs[0], targets[0]) if data_batched else (inputs, targets)
    _, _, observer, loss = _prepare(first, one_in, one_tg, observe, layer, loss)
    if not jnp.issubdtype(inputs.dtype, jnp.inexact):
        inputs = inputs.astype(leaves[0].dtype)
    if not jnp.issubdtype(targets.dtype, jnp.inexact):
        targets = targets.astype(leaves[0].dtype)
    for leaf in leaves:
        value = concrete_array(leaf)
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError("`models` has non-finite parameters (inf or NaN).")
    t1_c = concrete_array(t1)
    if t1_c is not None and not (np.isfinite(t1_c) and t1_c > 0):
        raise ValueError(f"`t1` must be finite and > 0, got {float(t1_c)!r}.")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}.")
    dtype = leaves[0].dtype
    t1 = jnp.asarray(t1, dtype)
    ts = jnp.linspace(0.0, t1, 101).astype(dtype) if ts is None else jnp.asarray(ts, dtype)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"`ts` must be a non-empty 1-d array, got shape {ts.shape}.")
    ts_c = concrete_array(ts)
    if ts_c is not None and t1_c is not None and (np.any(np.diff(ts_c) < 0) or ts_c[0] < 0 or ts_c[-1] > t1_c):
        raise ValueError(f"`ts` must be non-decreasing and lie in [0, t1] = [0, {float(t1_c)}].")
    controller = pid_controller(rtol, atol, pcoeff, icoeff, dtype, norm=_member_rms_max)
    solver = diffrax.Tsit5() if solver is None else solver
    data_axis = 0 if data_batched else None
    sol = _ensemble(models, inputs, targets, t1, ts, observer, loss, solver, controller, max_steps, data_axis,
                    progress_meter)
    if throw:
        if is_concrete(sol.result):
            bad = np.flatnonzero(np.asarray(sol.result._value) != RESULTS.successful._value)
            if bad.size:
                i = int(bad[0])
                raise RuntimeError(
                    f"The gradient flow of {bad.size} of {members} members failed (first: member {i} at "
                    f"t = {float(sol.stats['t_final'][i]):.6g}: {RESULTS[jax.tree_util.tree_map(lambda v: v[i], sol.result)]}). "
                    "Use throw=False to keep the others."
                )
        else:
            ts_out = sol.result.error_if(sol.ts, jnp.any(sol.result != RESULTS.successful))
            sol = eqx.tree_at(lambda s: s.ts, sol, ts_out)
    return sol


def _member_rms_max(error_ratio) -> Array:
    """The step-size controller's norm: each member's RMS norm (as `optimistix.rms_norm` alone), then
    the largest; a member whose error is non-finite counts as zero, so a failed member (its state
    stays non-finite) does not stop the others. (A member whose *trial* step overflows is treated the
    same way: accepted and flagged, not retried with a smaller step.)"""
    leaves = jax.tree_util.tree_leaves(error_ratio)
    sums = sum(jnp.sum(jnp.abs(x.reshape(x.shape[0], -1)) ** 2, axis=1) for x in leaves)
    count = sum(int(np.prod(x.shape[1:])) for x in leaves)
    per_member = jnp.sqrt(sums / count)
    return jnp.max(jnp.where(jnp.isfinite(per_member), per_member, 0.0))


def _member_finite(tree) -> Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.stack([jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in leaves]).all(axis=0)


@eqx.filter_jit
def _ensemble(models, inputs, targets, t1, ts, observer, loss, solver, controller, max_steps, data_axis,
              progress_meter=None):
    params, static = eqx.partition(models, eqx.is_inexact_array)

    def member_grad(p, x, y):
        return jax.grad(lambda q: loss(eqx.combine(q, static), x, y))(p)

    def vector_field(t, p, args):
        grads = jax.vmap(member_grad, in_axes=(0, data_axis, data_axis))(p, inputs, targets)
        return jax.tree_util.tree_map(jnp.negative, grads)

    def save(t, p, args):
        observe_one = lambda q, x, y: observer(eqx.combine(q, static), x, y)  # noqa: E731
        return jax.vmap(observe_one, in_axes=(0, data_axis, data_axis))(p, inputs, targets)

    kwargs = {} if progress_meter is None else {"progress_meter": progress_meter}
    run = integrate_parameters(vector_field, save, params, t1, ts, solver, controller, max_steps, **kwargs)
    # observed leaves: (times, members, ...) → (members, times, ...)
    observed = jax.tree_util.tree_map(lambda v: jnp.moveaxis(v, 0, 1), run.observed)
    finite = _member_finite(run.final) & jnp.stack([
        jnp.all(jnp.where(_time_mask(run.reached, v), jnp.isfinite(v), True).reshape(v.shape[0], -1), axis=1)
        for v in jax.tree_util.tree_leaves(observed)
    ]).all(axis=0)
    result = jax.vmap(  # RESULTS.where takes a scalar predicate
        lambda f: RESULTS.where(
            run.result == RESULTS.successful, RESULTS.where(f, RESULTS.successful, RESULTS.nonfinite_state),
            run.result)
    )(finite)
    stats = dict(run.stats)
    stats["t_final"] = jnp.broadcast_to(stats["t_final"], finite.shape)
    final_params = run.final
    return FlowSolution(ts=ts, observed=observed, model=eqx.combine(final_params, static), result=result,
                        stats=stats)


def _time_mask(reached, value):
    """`reached` (times,) laid along axis 1 of a (members, times, ...) value."""
    return reached.reshape((1, -1) + (1,) * (value.ndim - 2))
