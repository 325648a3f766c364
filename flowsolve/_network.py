"""`fit_network`: a network's exact gradient flow on two points, the theory fitted to it, and the
fitted theory solved — the one room that uses both the flow and the fit."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from ._custom_types import RealScalarLike
from ._fit import fit_effective_rates, FitResult
from ._flow import gradient_flow, TwoPointObserver
from ._theory import TheorySolution
from ._validation import is_concrete


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
    flow = gradient_flow(model, inputs, targets, t1, ts=ts, observe=TwoPointObserver(layer),
                         **flow_options)
    obs = flow.observed
    fit = fit_effective_rates(flow.ts, obs["h"], obs["y"], obs["w"], dx2, dy2, m=obs["m"], **fit_options)
    theory = fit.predict(flow.ts, throw=False)
    return NetworkFit(flow=flow, fit=fit, theory=theory, layer=layer)
