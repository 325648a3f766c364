"""The exact gradient flow dθ/dt = −∇L(θ) of Equinox networks, and its discrete counterpart."""

import functools
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import RealScalarLike
from ._observables import check_layer, hidden_at, squared_error_loss, two_point_observables
from ._results import RESULTS
from ._rkc import RKC
from ._norms import rms_norm_nan_is_inf
from ._validation import check_positive, concrete_array, is_concrete

Loss = Callable[[Any, Array, Array], Array]
Observer = Callable[[Any, Array, Array], dict[str, Array]]


class FlowSolution(eqx.Module):
    """The result of `gradient_flow` or `gradient_descent`.

    Time is gradient-flow time: for `gradient_descent`, `t = lr · step`.

    **Fields:**

    - `ts`: the observation times.
    - `observed`: dict name → values stacked over `ts` (leading axis `len(ts)`). Times after an early
      stop (`loss_threshold`) hold `inf`.
    - `model`: the model at the final time.
    - `result`: a `flowsolve.RESULTS`.
    - `stats`: solver statistics: `num_steps`, `num_accepted_steps`, `num_rejected_steps`,
      `gradient_evaluations` (for `RKC`: exact for accepted steps and its power iterations, rejected
      steps counted at the mean stage count; −1 for solvers other than explicit Runge–Kutta), `t_final`
      (the time reached) for flows; `steps` and `t_final` for descent.
    """

    ts: Float[Array, " times"]
    observed: dict[str, Array]
    model: Any
    result: RESULTS
    stats: dict[str, Array]


def mse_loss(model, inputs: Array, targets: Array, *, key: Array | None = None) -> Array:
    """The default loss, `½ · mean over points of ‖ŷ − y*‖²` (THEORY.md §1).

    With a `key` (stochastic training, `gradient_descent(..., key=)`) every point's forward pass gets
    its own key, `model(x, key=k)` (e.g. the dropout masks of `models.DropoutMLP`).
    """
    if key is None:
        outputs, _ = jax.vmap(model)(inputs)
    else:
        keys = jax.random.split(key, inputs.shape[0])
        outputs, _ = jax.vmap(lambda x, k: model(x, key=k))(inputs, keys)
    return squared_error_loss(outputs, targets)


class TwoPointObserver(eqx.Module):
    """Observes the loss and the two-point `h, y, w, m` (THEORY.md §1) at hidden `layer`.

    One forward pass per observation. The default `observe` of `gradient_flow` and
    `gradient_descent` for two-point data. A module rather than a closure, so that equal observers
    compare equal and repeated calls reuse the compiled flow.
    """

    layer: int = eqx.field(static=True)

    def __check_init__(self):
        check_layer(self.layer)

    def __call__(self, model, inputs, targets) -> dict[str, Array]:
        outputs, hiddens = jax.vmap(model)(inputs)
        h, y, w, m = two_point_observables(inputs, targets, hidden_at(hiddens, self.layer), outputs)
        return {"loss": squared_error_loss(outputs, targets), "h": h, "y": y, "w": w, "m": m}


class _LossObserver(eqx.Module):
    loss: Callable

    def __call__(self, model, inputs, targets):
        return {"loss": self.loss(model, inputs, targets)}


class _DictObserver(eqx.Module):
    fns: dict[str, Callable]

    def __call__(self, model, inputs, targets):
        return {name: fn(model, inputs, targets) for name, fn in self.fns.items()}


def _output_shapes(model, x):
    """`model(x)`'s output shapes, traced once per model structure and input shape (tracing a deep
    model takes 10–20 ms, most of a short flow's fixed cost per call)."""
    arrays, static = eqx.partition(model, eqx.is_array)
    structs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), arrays)
    x_struct = jax.ShapeDtypeStruct(x.shape, x.dtype)
    try:
        leaves, treedef = jax.tree_util.tree_flatten(structs)
        return _output_shapes_cached(static, tuple(leaves), treedef, x_struct)
    except TypeError:  # an unhashable static part: trace it every time
        return eqx.filter_eval_shape(model, x)


@functools.lru_cache(maxsize=64)
def _output_shapes_cached(static, leaves, treedef, x_struct):
    arrays = jax.tree_util.tree_unflatten(treedef, leaves)
    return eqx.filter_eval_shape(lambda a, x: eqx.combine(a, static)(x), arrays, x_struct)


def _prepare(model, inputs, targets, observe, layer, loss) -> tuple[Array, Array, Observer, Loss]:
    """Validate at the boundary; return arrays, the observer and the loss."""
    if not isinstance(model, eqx.Module):
        raise ValueError(f"`model` must be an Equinox module (eqx.Module), got {type(model).__name__}.")
    params = eqx.filter(model, eqx.is_inexact_array)
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("`model` has no inexact (floating-point) array leaves: there is nothing to train.")
    for leaf in leaves:
        value = concrete_array(leaf)
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError("`model` has non-finite parameters (inf or NaN).")
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    if not jnp.issubdtype(inputs.dtype, jnp.inexact):
        inputs = inputs.astype(leaves[0].dtype)
    if not jnp.issubdtype(targets.dtype, jnp.inexact):
        targets = targets.astype(leaves[0].dtype)
    if inputs.ndim < 1 or targets.ndim < 1 or inputs.shape[0] != targets.shape[0] or inputs.shape[0] < 1:
        raise ValueError(
            "`inputs` and `targets` must have the same leading (points) axis, "
            f"got shapes {inputs.shape} and {targets.shape}."
        )
    for name, arr in (("inputs", inputs), ("targets", targets)):
        value = concrete_array(arr)
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError(f"`{name}` must be finite.")
    try:
        out = _output_shapes(model, inputs[0])
    except Exception as e:  # the model's own error, e.g. a shape mismatch
        raise ValueError(f"`inputs` of shape {inputs.shape[1:]} per point do not fit the model: {e}") from e
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], tuple)):
        raise ValueError("`model(x)` must return `(output, hiddens)` with `hiddens` a tuple of arrays.")
    output, hiddens = out
    if output.shape != targets.shape[1:]:
        raise ValueError(
            f"The model's output has shape {output.shape} per point but `targets` has {targets.shape[1:]}."
        )
    if layer is not None:
        if observe is not None:
            raise ValueError("Pass `layer` or `observe`, not both: `layer` picks the default observer's layer "
                             "(`TwoPointObserver(layer)`); an `observe` of your own says its layer itself.")
        check_layer(layer)
        hidden_at(hiddens, layer)
    loss = mse_loss if loss is None else loss
    if observe is None:
        if inputs.shape[0] == 2 and hiddens:
            observer = TwoPointObserver(len(hiddens) // 2 if layer is None else layer)
        else:
            observer = _LossObserver(loss)
    elif isinstance(observe, dict):
        if not all(callable(f) for f in observe.values()):
            raise ValueError("`observe` must map names to callables `(model, inputs, targets) -> array`.")
        observer = _DictObserver(dict(observe))
    elif callable(observe):
        observer = observe
    else:
        raise ValueError("`observe` must be None, a dict name → callable, or a callable returning a dict.")
    return inputs, targets, observer, loss


def _gradient_evaluations(solver, num_steps, num_rejected, solver_state):
    """Stages per step of an explicit Runge–Kutta tableau (FSAL saves one), times steps; for `RKC`,
    its own count (accepted steps and power iterations, exact) plus the rejected steps at the mean
    stage count of the accepted ones (diffrax discards a rejected step's solver state)."""
    if isinstance(solver, RKC):
        return solver_state.evaluations + jnp.round(num_rejected * solver_state.mean_stages()).astype(
            solver_state.evaluations.dtype)
    tableau = getattr(solver, "tableau", None)
    if tableau is None or getattr(tableau, "a_diagonal", None) is not None:
        return jnp.asarray(-1)  # unknown for this solver
    stages = len(tableau.c) + 1
    per_step = stages - 1 if tableau.fsal else stages
    return num_steps * per_step + 1


def pid_controller(rtol, atol, pcoeff, icoeff, dtype, norm=None) -> diffrax.PIDController:
    """The flows' step-size controller, its arguments checked (rtol > 0, atol ≥ 0, pcoeff ≥ 0,
    icoeff > 0); `norm` as in diffrax (default its RMS norm, a NaN norm counting as an infinite error:
    `rms_norm_nan_is_inf`). The tolerances are arrays of the state's `dtype`, values inside the compiled
    flow rather than part of it, so a convergence study over tolerances compiles once; the coefficients
    stay numbers (diffrax skips a factor whose coefficient is zero)."""
    check_positive("rtol", rtol)
    check_positive("atol", atol, allow_zero=True)
    check_positive("pcoeff", pcoeff, allow_zero=True)
    check_positive("icoeff", icoeff)
    norm = rms_norm_nan_is_inf if norm is None else norm
    return diffrax.PIDController(rtol=jnp.asarray(rtol, dtype), atol=jnp.asarray(atol, dtype), pcoeff=pcoeff,
                                 icoeff=icoeff, norm=norm)


def gradient_flow(
    model: eqx.Module,
    inputs: Float[ArrayLike, "points ..."],
    targets: Float[ArrayLike, "points ..."],
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
    adjoint: diffrax.AbstractAdjoint | None = None,
    loss_threshold: float | None = None,
    progress_meter: diffrax.AbstractProgressMeter | None = None,
    throw: bool = True,
) -> FlowSolution:
    """Integrate the exact gradient flow `dθ/dt = −∇_θ L(θ)` of a network with an adaptive solver.

    All inexact-array leaves of `model` flow (found with `eqx.is_inexact_array`); everything else is
    left untouched. Only the observables are saved, never the parameter trajectory, so memory does not
    grow with parameters × save times.

    **Arguments:**

    - `model`: any Equinox module whose `__call__(x)` maps one input to `(output, hiddens)`.
    - `inputs`, `targets`: full batch, leading axis the points.
    - `t1`: the final gradient-flow time (> 0; the flow starts at 0).

    **Other arguments:**

    - `ts`: observation times in `[0, t1]`; default 101 evenly spaced.
    - `observe`: a dict name → `f(model, inputs, targets) -> array`, or one callable returning a dict.
      Default: for two points, `TwoPointObserver(layer)` (loss and `h, y, w, m`); else the loss.
    - `layer`: the observed hidden layer of the default observer (default: the middle one).
    - `loss`: `L(model, inputs, targets)`; default `mse_loss` (½·mean‖ŷ − y*‖², THEORY.md §1).
    - `solver`: an adaptive diffrax solver (default `diffrax.Tsit5()`), or `flowsolve.RKC()`, a
      stabilised second-order method: the cheapest at ~1 % accuracy on deep smooth networks
      (`benchmarks/README.md`, "bench_flow"), not for tight tolerances (global error ∝ rtol^(2/3)).
    - `rtol`, `atol`: tolerances of the PID controller. The flows of piecewise-linear networks are not
      smooth; check results under tolerance refinement (see `benchmarks/README.md`).
    - `pcoeff`, `icoeff`: the controller's proportional and integral coefficients (diffrax's
      `PIDController`); default an I controller (0, 1). Deep networks' flows are often limited by
      stability rather than accuracy at loose tolerances; there a PI controller (`pcoeff=0.4,
      icoeff=0.3`) with `solver=diffrax.Bosh3()` needs fewer gradient evaluations for ~1 % accuracy
      (`benchmarks/README.md`, "bench_flow").
    - `max_steps`: the most solver steps.
    - `adjoint`: a diffrax adjoint, for differentiating through the flow.
    - `progress_meter`: a diffrax progress meter, e.g. `diffrax.TqdmProgressMeter()` (a bar on stderr,
      for long flows); default none.
    - `loss_threshold`: stop early (a diffrax event) once the loss falls below this.
    - `throw`: raise on failure (max steps, non-finite state) with the time reached; with
      `throw=False` the failure is reported in `result` (for vmapped batches).

    **Returns:** a `FlowSolution`.

    !!! example

        ```python
        exp = flowsolve.experiments.two_points("default", key=jax.random.key(0))
        sol = flowsolve.gradient_flow(exp.model, exp.inputs, exp.targets, exp.t1, layer=exp.layer)
        sol.observed["h"]   # ‖dh‖² of hidden layer 10 over time
        ```
    """
    inputs, targets, observer, loss = _prepare(model, inputs, targets, observe, layer, loss)
    t1_c = concrete_array(t1)
    if t1_c is not None and not (np.isfinite(t1_c) and t1_c > 0):
        raise ValueError(f"`t1` must be finite and > 0, got {float(t1_c)!r}.")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}.")
    if loss_threshold is not None:
        check_positive("loss_threshold", loss_threshold)
    dtype = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))[0].dtype
    controller = pid_controller(rtol, atol, pcoeff, icoeff, dtype)
    t1 = jnp.asarray(t1, dtype)
    if ts is None:
        ts = jnp.linspace(0.0, t1, 101).astype(dtype)
    else:
        ts = jnp.asarray(ts, dtype)
        ts_c = concrete_array(ts)
        if ts.ndim != 1 or ts.shape[0] < 1:
            raise ValueError(f"`ts` must be a non-empty 1-d array, got shape {ts.shape}.")
        if ts_c is not None and t1_c is not None:
            if np.any(np.diff(ts_c) < 0) or ts_c[0] < 0 or ts_c[-1] > t1_c:
                raise ValueError(f"`ts` must be non-decreasing and lie in [0, t1] = [0, {float(t1_c)}].")
    solver = diffrax.Tsit5() if solver is None else solver
    if loss_threshold is not None:  # a value inside the compiled flow, as the tolerances
        loss_threshold = jnp.asarray(loss_threshold, dtype)
    sol = _flow(model, inputs, targets, t1, ts, observer, loss, solver, controller, max_steps, adjoint,
                loss_threshold, progress_meter)
    return _report(sol, throw, "gradient flow")


def _report(sol: FlowSolution, throw: bool, what: str) -> FlowSolution:
    if not throw:
        return sol
    if is_concrete(sol.result):
        if sol.result != RESULTS.successful:
            t = float(sol.stats["t_final"])
            raise RuntimeError(f"The {what} failed at t = {t:.6g}: {RESULTS[sol.result]}")
        return sol
    ts = sol.result.error_if(sol.ts, sol.result != RESULTS.successful)
    return eqx.tree_at(lambda s: s.ts, sol, ts)


@eqx.filter_jit
def _flow(model, inputs, targets, t1, ts, observer, loss, solver, controller, max_steps, adjoint, loss_threshold,
          progress_meter=None):
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def vector_field(t, p, args):
        grads = jax.grad(lambda q: loss(eqx.combine(q, static), inputs, targets))(p)
        return jax.tree_util.tree_map(jnp.negative, grads)

    def save(t, p, args):
        return observer(eqx.combine(p, static), inputs, targets)

    kwargs = {} if adjoint is None else {"adjoint": adjoint}
    if progress_meter is not None:
        kwargs["progress_meter"] = progress_meter
    if loss_threshold is not None:
        kwargs["event"] = diffrax.Event(
            lambda t, p, args, **kw: loss(eqx.combine(p, static), inputs, targets) < loss_threshold
        )
    run = integrate_parameters(vector_field, save, params, t1, ts, solver, controller, max_steps, **kwargs)
    result = RESULTS.where(run.result == RESULTS.event_occurred, RESULTS.successful, run.result)
    finite = jnp.all(jnp.stack([jnp.all(jnp.where(_expand(run.reached, v), jnp.isfinite(v), True))
                                for v in jax.tree_util.tree_leaves(run.observed)]))
    result = RESULTS.where((result == RESULTS.successful) & ~finite, RESULTS.nonfinite_state, result)
    return FlowSolution(ts=ts, observed=run.observed, model=eqx.combine(run.final, static), result=result,
                        stats=run.stats)


class Integrated(eqx.Module):
    """What `integrate_parameters` returns: the observations at `ts` (inf after an early stop), the
    final parameters, which observation times were reached, diffrax's result and the statistics."""

    observed: Any
    final: Any
    reached: Array
    result: RESULTS
    stats: dict[str, Array]


def integrate_parameters(vector_field, save, params, t1, ts, solver, controller, max_steps, **kwargs) -> Integrated:
    """The one integrate-the-parameters core of `gradient_flow` and `ensemble_flow`: `dθ/dt =
    vector_field(t, θ)` from 0 to `t1`, saving only `save(t, θ)` at `ts` and θ at the end (never the
    parameter trajectory), with the solver statistics (gradient evaluations and the time reached)."""
    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=save), diffrax.SubSaveAt(t1=True)],
                            solver_state=isinstance(solver, RKC))
    sol = diffrax.diffeqsolve(diffrax.ODETerm(vector_field), solver, jnp.zeros_like(t1), t1, None, params,
                              saveat=saveat, stepsize_controller=controller, max_steps=max_steps, throw=False,
                              **kwargs)
    observed, final = sol.ys
    ts_saved, ts_final = sol.ts
    reached = jnp.isfinite(ts_saved)
    stats = {k: sol.stats[k] for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")}
    stats["gradient_evaluations"] = _gradient_evaluations(solver, sol.stats["num_steps"],
                                                          sol.stats["num_rejected_steps"], sol.solver_state)
    # The time reached: t1 on success, else the last observation time reached.
    last_reached = jnp.max(jnp.where(reached, ts, -jnp.inf))
    stats["t_final"] = jnp.where(jnp.isfinite(ts_final[0]), ts_final[0], last_reached)
    return Integrated(observed=observed, final=jax.tree_util.tree_map(lambda x: x[0], final), reached=reached,
                      result=RESULTS.promote(sol.result), stats=stats)


def _expand(mask, value):
    return mask.reshape(mask.shape + (1,) * (value.ndim - 1))


def gradient_descent(
    model: eqx.Module,
    inputs: Float[ArrayLike, "points ..."],
    targets: Float[ArrayLike, "points ..."],
    lr: RealScalarLike,
    steps: int,
    *,
    optimizer: optax.GradientTransformation | None = None,
    observe: dict[str, Callable] | Observer | None = None,
    layer: int | None = None,
    loss: Loss | None = None,
    every: int = 1,
    key: Array | None = None,
    batches: "Minibatches | None" = None,
    throw: bool = True,
) -> FlowSolution:
    """Gradient descent in one `lax.scan` (full batch, or minibatches), observed on the gradient-flow clock.

    The discrete counterpart of `gradient_flow`: observations are at steps `0, every, 2·every, …`
    and their times are `t = lr · step`, so both overlay directly.

    **Arguments:**

    - `model`, `inputs`, `targets`, `observe`, `layer`, `loss`: as for `gradient_flow`.
    - `lr`: the learning rate (> 0); sets the clock, and the step of the default optimizer.
    - `steps`: how many updates (≥ 1).
    - `optimizer`: an optax optimizer; default `optax.sgd(lr)` (plain gradient descent). With another
      optimizer (e.g. `optax.adam(lr)`) the clock is still `lr · step`.
    - `every`: observe every `every` steps (`steps` need not be a multiple; the last partial block
      is run but not observed).
    - `key`: for stochastic training (dropout): each step calls `loss(model, inputs, targets, key=k)`
      with a fresh `k` split from `key` (the default loss hands it to `model(x, key=...)`); the
      observations call the model without a key (deterministic, dropout off, as in PyTorch's
      `eval()` mode). Default `None`: plain deterministic descent.
    - `batches`: `None` (default) for full-batch descent; a `Minibatches(size, key)` for minibatch
      SGD. Then one of the `steps` is one *epoch* (every point visited once, in a fresh random order,
      in batches of `size`, the last one smaller when `size` does not divide the points, as PyTorch's
      `DataLoader(shuffle=True)`), `every` counts epochs, and the clock is `t = lr · updates`
      (`ceil(points / size)` updates per epoch). The loss is the mean over each batch.
    - `throw`: raise when the loss or an observable becomes non-finite (the run diverged), with the
      time reached; with `throw=False` it is reported in `result`.

    **Returns:** a `FlowSolution` (`stats`: `steps` (epochs with `batches`), `updates`, `t_final`).

    !!! example

        ```python
        sol = fs.gradient_descent(net, x, y, 0.003, 200, batches=fs.Minibatches(64, jax.random.key(0)),
                                  observe={"loss": fs.mse_loss})   # 200 epochs of minibatch SGD
        ```
    """
    inputs, targets, observer, loss = _prepare(model, inputs, targets, observe, layer, loss)
    check_positive("lr", lr)
    for name, value in (("steps", steps), ("every", every)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    dtype = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))[0].dtype
    if key is not None and not (isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                                                or key.shape == (2,))):
        raise ValueError(f"`key` must be a JAX PRNG key (jax.random.key(seed)) or None, got {key!r}.")
    if batches is not None and not isinstance(batches, Minibatches):
        raise ValueError(f"`batches` must be None or a flowsolve.Minibatches, got {type(batches).__name__}.")
    sol = _descent(model, inputs, targets, jnp.asarray(lr, dtype), steps, every, optimizer, observer, loss, key,
                   batches)
    return _report(sol, throw, "gradient descent")


class Minibatches(eqx.Module):
    """Minibatch SGD for `gradient_descent(batches=...)`: every epoch visits each point once, in a
    fresh random order drawn from `key`, in batches of `size` points; the last batch of an epoch is
    smaller when `size` does not divide the number of points (PyTorch's `DataLoader(shuffle=True)`).

    **Arguments:** `size` (≥ 1; a size ≥ the number of points is full-batch descent in a shuffled
    order), `key` (a JAX PRNG key).

    !!! example

        ```python
        batches = fs.Minibatches(64, jax.random.key(0))
        ```
    """

    size: int = eqx.field(static=True)
    key: Array

    def __init__(self, size: int, key: Array):
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
            raise ValueError(f"`size` must be a positive int, got {size!r}.")
        if not (isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape == (2,))):
            raise ValueError(f"`key` must be a JAX PRNG key (jax.random.key(seed)), got {key!r}.")
        self.size = size
        self.key = key

    def updates_per_epoch(self, points: int) -> int:
        """`ceil(points / size)`."""
        return -(-points // self.size)


@eqx.filter_jit
def _descent(model, inputs, targets, lr, steps, every, optimizer, observer, loss, key, batches):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    # Built here from the traced lr, so that a new lr reuses the compiled scan.
    optimizer = optax.sgd(lr) if optimizer is None else optimizer
    opt_state = optimizer.init(params)

    def update(p, s, k, xs, ys):
        if k is None:
            grads = jax.grad(lambda q: loss(eqx.combine(q, static), xs, ys))(p)
        else:
            k, sub = jax.random.split(k)
            grads = jax.grad(lambda q: loss(eqx.combine(q, static), xs, ys, key=sub))(p)
        # optax mixes Python scalars with int32 step counts (Adam's bias correction): its own promotion
        # rules apply inside it, whatever the caller's `jax_numpy_dtype_promotion`.
        with jax.numpy_dtype_promotion("standard"):
            updates, s = optimizer.update(grads, s, p)
            return optax.apply_updates(p, updates), s, k

    n = inputs.shape[0]
    if batches is None:
        per_step = 1

        def step(carry, _):
            p, s, k, order = carry
            return (*update(p, s, k, inputs, targets), order), None
        order_key = None
    else:
        size = min(batches.size, n)
        full, rest = divmod(n, size)
        per_step = batches.updates_per_epoch(n)

        def step(carry, _):  # one epoch
            p, s, k, order = carry
            order, sub = jax.random.split(order)
            perm = jax.random.permutation(sub, n)

            def one(c, idx):
                return update(*c, inputs[idx], targets[idx]), None

            (p, s, k), _ = jax.lax.scan(one, (p, s, k), perm[: full * size].reshape(full, size))
            if rest:
                p, s, k = update(p, s, k, inputs[perm[full * size:]], targets[perm[full * size:]])
            return (p, s, k, order), None
        order_key = batches.key

    def block(carry, _):
        carry, _ = jax.lax.scan(step, carry, None, length=every)
        return carry, observer(eqx.combine(carry[0], static), inputs, targets)

    first = observer(model, inputs, targets)
    n_obs = steps // every
    carry, rest = jax.lax.scan(block, (params, opt_state, key, order_key), None, length=n_obs)
    if steps % every:
        carry, _ = jax.lax.scan(step, carry, None, length=steps % every)
    p = carry[0]
    observed = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
    ts = lr * (every * per_step) * jnp.arange(n_obs + 1, dtype=lr.dtype)
    finite_rows = jnp.stack(
        [jnp.all(jnp.isfinite(v).reshape(v.shape[0], -1), axis=1) for v in jax.tree_util.tree_leaves(observed)]
    ).all(axis=0)
    # The model after the last step too: updates after the last observation (or all of them, when
    # `every` > `steps`) are seen by no observation.
    final_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(p)]))
    all_finite = jnp.all(finite_rows) & final_finite
    result = RESULTS.where(all_finite, RESULTS.successful, RESULTS.nonfinite_state)
    first_bad = jnp.where(jnp.all(finite_rows), finite_rows.shape[0], jnp.argmin(finite_rows))
    t_final = jnp.where(all_finite, lr * (steps * per_step), ts[jnp.maximum(first_bad - 1, 0)])
    return FlowSolution(ts=ts, observed=observed, model=eqx.combine(p, static), result=result,
                        stats={"steps": jnp.asarray(steps), "updates": jnp.asarray(steps * per_step),
                               "t_final": t_final})
