"""Saving a solve at given times without host callbacks: one `diffeqsolve` per interval, the step size
carried from one interval to the next.

`diffrax.SaveAt(ts=...)` checks its times with `eqx.error_if`, which stages a host callback into the
program; JAX's persistent compilation cache never stores such a program and `jax.export` cannot
serialise it, so every fresh process traced and compiled each solve again. Here the solve runs
interval by interval (`SaveAt(t1=True)`, no check to stage; the times are checked by the callers, as
they already were, before anything is traced), under `lax.scan`, and a step-size controller that
starts each interval with the step the previous one proposed (`Resumed`, a
`diffrax.AbstractAdaptiveStepSizeController`), so the intervals cost about the steps of one solve:
a step ends on every save time, as with diffrax's own `SaveAt(ts=...)` plus `step_ts`.
"""

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int


class Resumed(diffrax.AbstractAdaptiveStepSizeController):
    """`inner`'s step-size control, started with the step `dt` (`dt ≤ 0`: `inner`'s own first guess).

    The controller state carries `inner`'s state and the step last proposed, which the next interval
    starts with.
    """

    inner: diffrax.PIDController
    dt: Array

    @property
    def rtol(self):
        return self.inner.rtol

    @property
    def atol(self):
        return self.inner.atol

    @property
    def norm(self):
        return self.inner.norm

    def wrap(self, direction):
        return Resumed(self.inner.wrap(direction), self.dt)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        del dt0
        guess_t1, state = self.inner.init(terms, t0, t1, y0, None, args, func, error_order)
        dt = jnp.where(self.dt > 0, self.dt, guess_t1 - t0).astype(jnp.result_type(t0, guess_t1))
        return t0 + dt, (state, dt)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        state, _ = controller_state
        keep, next_t0, next_t1, jump, state, result = self.inner.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state)
        return keep, next_t0, next_t1, jump, (state, next_t1 - next_t0), result


class Saved(eqx.Module):
    """The states at the save times, and how the solve went.

    - `ys`: the state at each save time (leading axis the times); after an event stopped the solve,
      the later save times hold the state where it stopped.
    - `t_final`: the time reached.
    - `stopped`: whether the event stopped it.
    - `result`: `diffrax.RESULTS` of the first interval that failed (`successful` otherwise; an event
      is a success).
    - `stats`: `num_steps`, `num_accepted_steps`, `num_rejected_steps`, summed over the intervals.
    """

    ys: Any
    t_final: Array
    stopped: Bool[Array, ""]
    result: diffrax.RESULTS
    stats: dict[str, Int[Array, ""]]


def solve_saving_at(
    term: diffrax.AbstractTerm,
    solver: diffrax.AbstractSolver,
    t0: Array,
    ts: Array,
    y0: Any,
    args: Any,
    controller: diffrax.PIDController,
    max_steps: int,
    *,
    event: diffrax.Event | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> Saved:
    """`diffeqsolve` from `t0` saving at each of the non-decreasing times `ts ≥ t0`, callback-free.

    `max_steps` bounds the steps of all intervals together: the interval in which the total passes it
    reports `max_steps_reached`, and the later save times hold the state reached.
    """
    kwargs: dict[str, Any] = {} if adjoint is None else {"adjoint": adjoint}
    if event is not None:
        kwargs["event"] = event
    keys = ("num_steps", "num_accepted_steps", "num_rejected_steps")

    def interval(carry, t_next):
        t, y, dt, stopped, failed, result, stats = carry
        halt = stopped | failed
        t_end = jnp.where(halt, t, t_next)
        sol = diffrax.diffeqsolve(
            term, solver, t, t_end, None, y, args=args,
            saveat=diffrax.SaveAt(t1=True, controller_state=True),
            stepsize_controller=Resumed(controller, dt), max_steps=max_steps, throw=False, **kwargs,
        )
        y_end = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
        stats = {k: stats[k] + jnp.where(halt, 0, sol.stats[k]) for k in keys}
        hit = sol.result == diffrax.RESULTS.event_occurred
        over = stats["num_steps"] > max_steps
        outcome = diffrax.RESULTS.where(over & ~hit, diffrax.RESULTS.max_steps_reached, sol.result)
        bad = ~hit & (outcome != diffrax.RESULTS.successful)
        result = diffrax.RESULTS.where(failed | ~bad, result, outcome)
        y = jax.tree_util.tree_map(lambda new, old: jnp.where(halt, old, new), y_end, y)
        t = jnp.where(halt, t, sol.ts[-1])
        dt = jnp.where(halt, dt, sol.controller_state[1])
        return (t, y, dt, stopped | (hit & ~halt), failed | (bad & ~halt), result, stats), y

    zero = jnp.zeros((), jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
    init = (jnp.asarray(t0, ts.dtype), y0, jnp.zeros((), ts.dtype), jnp.asarray(False), jnp.asarray(False),
            diffrax.RESULTS.successful, {k: zero for k in keys})
    (t, _, _, stopped, _, result, stats), ys = jax.lax.scan(interval, init, ts)
    return Saved(ys=ys, t_final=t, stopped=stopped, result=result, stats=stats)

