"""Shared helpers of the architectures: Xavier-normal initialisation and activations.

Kink convention: every piecewise-linear activation is written `where(x > 0, x, slope·x)`, so at
exactly `x = 0` the value is 0 and the derivative is the *left* slope (0.01 for leaky ReLU, 0 for
ReLU), as in PyTorch. `jax.nn.leaky_relu` takes slope 1 at 0, which made JAX and PyTorch runs of
the paper's setting (whose second input puts every unit on the kink at t = 0) differ by 20–70 %.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

LEAKY_SLOPE = 0.01


def leaky_relu(x: Array) -> Array:
    return jnp.where(x > 0, x, LEAKY_SLOPE * x)


def relu(x: Array) -> Array:
    return jnp.where(x > 0, x, jnp.zeros_like(x))


def identity(x: Array) -> Array:
    return x


def leaky_relu_right(x: Array) -> Array:
    """Leaky ReLU with the *right* slope (1) at exactly 0: `jax.nn.leaky_relu`'s convention."""
    return jnp.where(x >= 0, x, LEAKY_SLOPE * x)


def relu_right(x: Array) -> Array:
    """ReLU with slope 1 at exactly 0."""
    return jnp.where(x >= 0, x, jnp.zeros_like(x))


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "leaky_relu": leaky_relu,
    "relu": relu,
    "leaky_relu_right": leaky_relu_right,
    "relu_right": relu_right,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "none": identity,
}
"""Activation functions by name. `none` is the identity (a deep linear network). The `_right`
variants take the right slope at exactly 0 (JAX's convention), for measuring what the kink
convention changes; the plain names are PyTorch's (left slope)."""


def activation(name: str) -> Callable[[Array], Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got {name!r}.")
    return ACTIVATIONS[name]


def xavier_normal(key: PRNGKeyArray, shape: tuple[int, ...], fan_in: int, fan_out: int, gain: float, dtype=None) -> Float[Array, "..."]:
    """Normal weights with std = gain·sqrt(2/(fan_in + fan_out)) (Glorot & Bengio; PyTorch's
    `xavier_normal_`)."""
    std = gain * (2.0 / (fan_in + fan_out)) ** 0.5
    dtype = dtype or jnp.result_type(float)
    return std * jax.random.normal(key, shape, dtype)


def check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


def check_gain(gain: float) -> None:
    try:
        bad = not (float(gain) > 0)
    except TypeError:
        return  # traced (e.g. vmapped over gains): nothing to check now
    if bad:
        raise ValueError(f"`gain` must be > 0, got {gain!r}.")
