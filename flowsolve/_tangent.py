"""The lazy baseline: a network's first-order Taylor expansion in its parameters."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp


class TangentModel(eqx.Module):
    """The first-order Taylor expansion of a network around its parameters θ₀ (`tangent_model`):
    `f(θ₀ + δ; x) ≈ f(θ₀; x) + J(θ₀; x)·δ`, for every output of the network (its prediction and its
    hidden representations alike). Its gradient flow is the network's tangent-kernel ("lazy")
    dynamics, with the kernel frozen at θ₀.

    **Fields:** `base` (the network at θ₀; held fixed: its gradient is stopped, so a flow leaves it
    where it is), `delta` (θ − θ₀, the part that trains; zero at construction).
    """

    base: Any
    delta: Any

    def __call__(self, x, **kwargs):
        base = jax.lax.stop_gradient(self.base)
        params, static = eqx.partition(base, eqx.is_inexact_array)
        out0, tangent = jax.jvp(lambda p: eqx.combine(p, static)(x, **kwargs), (params,), (self.delta,))
        return jax.tree_util.tree_map(jnp.add, out0, tangent)


def tangent_model(model: eqx.Module) -> TangentModel:
    """The lazy baseline of `model`: its first-order Taylor expansion in the parameters at their
    current values, a network of the same call convention whose gradient flow is the tangent-kernel
    dynamics (as neural-tangents computes them), integrated by the same `gradient_flow` or
    `gradient_descent` with the same observers. Where the exact flow leaves it, the network learns
    features (the rich regime); where they agree, it is lazy.

    A network linear in its parameters is its own tangent model (the two flows agree exactly).

    !!! example

        ```python
        exp = flowsolve.experiments.two_points("tanh", key=jax.random.key(0), width=100)
        exact = flowsolve.gradient_flow(exp.model, exp.inputs, exp.targets, exp.t1, layer=exp.layer)
        lazy = flowsolve.gradient_flow(flowsolve.tangent_model(exp.model), exp.inputs, exp.targets, exp.t1,
                                       layer=exp.layer)
        exact.observed["h"][-1], lazy.observed["h"][-1]      # learnt vs lazy final ‖dh‖²
        ```
    """
    if not isinstance(model, eqx.Module):
        raise ValueError(f"`model` must be an Equinox module, got {type(model).__name__}.")
    params = eqx.filter(model, eqx.is_inexact_array)
    if not jax.tree_util.tree_leaves(params):
        raise ValueError("`model` has no inexact (floating-point) parameters: it has no tangent model.")
    return TangentModel(model, jax.tree_util.tree_map(jnp.zeros_like, params))
