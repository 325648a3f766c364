"""Saving a solve at given times without host callbacks.

`diffrax.SaveAt(ts=...)` checks its times with `eqx.error_if`, which stages a host callback into the
program; JAX's persistent compilation cache never stores such a program and `jax.export` cannot
serialise it, so every fresh process traced and compiled each solve again. Here the solver itself
records the state at the save times (`Recording`, a `diffrax.AbstractAdaptiveSolver` around any
other): after each step it evaluates the step's own dense interpolation at the save times the step
passed, as `SaveAt(ts=...)` does, and keeps them in its state, which diffrax discards with a rejected
step. The times are checked by the callers before anything is traced.
"""

import functools
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int


def window(n: int) -> int:
    """The most of `n` save times one step may pass: all of them up to 32, then an eighth (at least 32),
    so that a step is rarely limited by it while each step evaluates few. A step that would pass more
    is refused (its error estimate made infinite) and the step-size controller shrinks it: a save time
    is never skipped."""
    return min(n, max(32, -(-n // 8)))


class _RecordingBase(diffrax.AbstractAdaptiveSolver):
    inner: diffrax.AbstractSolver
    ts: Array
    window: int = eqx.field(static=True)

    def order(self, terms):
        return self.inner.order(terms)

    def strong_order(self, terms):
        return self.inner.strong_order(terms)

    def error_order(self, terms):
        return self.inner.error_order(terms)

    def func(self, terms, t0, y0, args):
        return self.inner.func(terms, t0, y0, args)

    def init(self, terms, t0, t1, y0, args):
        record = jax.tree_util.tree_map(lambda y: jnp.broadcast_to(y, self.ts.shape + jnp.shape(y)), y0)
        # Save times at t0 hold y0 already.
        index = jnp.sum(self.ts <= t0).astype(jnp.int32)
        return self.inner.init(terms, t0, t1, y0, args), record, index

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner_state, record, index = solver_state
        y1, y_error, dense_info, inner_state, result = self.inner.step(terms, t0, t1, y0, args, inner_state, made_jump)
        n = self.ts.shape[0]
        slots = index + jnp.arange(self.window, dtype=index.dtype)
        clipped = jnp.minimum(slots, n - 1)
        times = self.ts[clipped]
        passed = (slots < n) & (times <= t1)
        interpolation = self.interpolation_cls(t0=t0, t1=t1, **dense_info)
        values = jax.vmap(interpolation.evaluate)(jnp.clip(times, t0, t1))

        target = jnp.where(passed, slots, n)  # out of range: dropped

        def write(rec, val):
            return rec.at[target].set(val, mode="drop")

        record = jax.tree_util.tree_map(write, record, values)
        # More save times inside the step than the window holds: refuse the step (it is retried smaller).
        overflow = (index + self.window < n) & (self.ts[jnp.minimum(index + self.window, n - 1)] <= t1)
        y_error = jax.tree_util.tree_map(lambda e: jnp.where(overflow, jnp.inf, e), y_error)
        return y1, y_error, dense_info, (inner_state, record, index + jnp.sum(passed).astype(jnp.int32)), result


@functools.cache
def _recording_class(inner_cls: type) -> type:
    class Recording(_RecordingBase):
        term_structure: ClassVar = inner_cls.term_structure
        interpolation_cls: ClassVar = inner_cls.interpolation_cls

    return Recording


def recording(solver: diffrax.AbstractSolver, ts: Array, controller: diffrax.PIDController,
              adjoint: diffrax.AbstractAdjoint | None = None):
    """`solver`, recording the state at the save times `ts` (non-decreasing)."""
    if isinstance(solver, diffrax.AbstractRungeKutta) and solver.scan_kind is None:
        # What diffrax's adjoints choose for a Runge–Kutta solver they see (forward mode cannot pass
        # through a checkpointed loop's custom VJP).
        kind = "lax" if isinstance(adjoint, diffrax.ForwardMode) else "bounded"
        solver = eqx.tree_at(lambda s: s.scan_kind, solver, kind, is_leaf=lambda x: x is None)
    if isinstance(solver, diffrax.AbstractImplicitSolver):
        # diffrax hands the controller's tolerances to an implicit solver's root finder itself, but only
        # to a solver it sees as implicit: done here for the wrapped one.
        finder = solver.root_finder
        names = [a for a in ("rtol", "atol", "norm")
                 if not (callable(getattr(finder, a)) if a == "norm" else isinstance(getattr(finder, a), (int, float)))]
        if names:
            solver = eqx.tree_at(lambda s: tuple(getattr(s.root_finder, a) for a in names), solver,
                                 tuple(getattr(controller, a) for a in names))
    return _recording_class(type(solver))(solver, ts, window(ts.shape[0]))


class Saved(eqx.Module):
    """The states at the save times, and how the solve went.

    - `ys`: the state at each save time (leading axis the times); save times after the solve stopped
      (an event, or a failure) hold the state where it stopped.
    - `reached`: whether the solve reached each save time.
    - `t_final`: the time reached.
    - `stopped`: whether the event stopped it.
    - `result`: `diffrax.RESULTS` (an event is a success).
    - `stats`: `num_steps`, `num_accepted_steps`, `num_rejected_steps`.
    """

    ys: Any
    reached: Bool[Array, " times"]
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
    progress_meter: diffrax.AbstractProgressMeter | None = None,
) -> Saved:
    """`diffeqsolve` from `t0` to `ts[-1]`, saving at the non-decreasing times `ts ≥ t0`, callback-free."""
    kwargs: dict[str, Any] = {} if adjoint is None else {"adjoint": adjoint}
    if event is not None:
        kwargs["event"] = event
    if progress_meter is not None:  # a host callback: such a program is not stored for fresh processes
        kwargs["progress_meter"] = progress_meter
    sol = diffrax.diffeqsolve(
        term, recording(solver, ts, controller, adjoint), t0, ts[-1], None, y0, args=args,
        saveat=diffrax.SaveAt(t1=True, solver_state=True), stepsize_controller=controller, max_steps=max_steps,
        throw=False, **kwargs,
    )
    _, record, index = sol.solver_state
    reached = jnp.arange(ts.shape[0], dtype=index.dtype) < index
    final = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
    ys = jax.tree_util.tree_map(
        lambda rec, y: jnp.where(reached.reshape(reached.shape + (1,) * jnp.ndim(y)), rec, y), record, final)
    stopped = sol.result == diffrax.RESULTS.event_occurred
    result = diffrax.RESULTS.where(stopped, diffrax.RESULTS.successful, sol.result)
    stats = {k: sol.stats[k] for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")}
    return Saved(ys=ys, reached=reached, t_final=sol.ts[-1], stopped=stopped, result=result, stats=stats)
