"""Fully connected networks: MLP, residual MLP and deep linear network."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._init import activation as get_activation, check_gain, check_sizes, xavier_normal
from ._split import check_layer, Stack


class Dense(eqx.Module):
    """An affine layer `W·x + b` with Xavier-normal `W` (given gain) and zero `b`."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"] | None

    def __init__(self, in_size: int, out_size: int, gain: float, *, use_bias: bool = True, key: PRNGKeyArray):
        self.weight = xavier_normal(key, (out_size, in_size), in_size, out_size, gain)
        self.bias = jnp.zeros(out_size, self.weight.dtype) if use_bias else None

    def __call__(self, x: Float[Array, " in"]) -> Float[Array, " out"]:
        y = self.weight @ x
        return y if self.bias is None else y + self.bias


def _checked_keys(in_size, out_size, width, depth, activation, gain, key):
    """Validate the common constructor arguments; one key per layer and one for the read-out."""
    check_sizes(in_size=in_size, out_size=out_size, width=width, depth=depth)
    check_gain(gain)
    get_activation(activation)
    return jax.random.split(key, depth + 1)


def _dense_stack(in_size, out_size, width, depth, activation, gain, key) -> tuple[tuple[Dense, ...], Dense]:
    """`depth` hidden layers `in_size → width → … → width` and a read-out `width → out_size`."""
    keys = _checked_keys(in_size, out_size, width, depth, activation, gain, key)
    sizes = [in_size] + [width] * depth
    layers = tuple(Dense(sizes[i], sizes[i + 1], gain, key=keys[i]) for i in range(depth))
    return layers, Dense(width, out_size, gain, key=keys[-1])


class MLP(eqx.Module):
    """A multilayer perceptron with `depth` hidden layers of `width` units (THEORY.md §5).

    Every hidden layer is `act(W·h + b)`; the read-out is linear. Weights are Xavier-normal with
    std = gain·sqrt(2/(fan_in + fan_out)), biases zero.

    **Arguments:** `in_size`, `out_size`, `width`, `depth` (≥ 1 hidden layers), `activation` (one of
    `models.ACTIVATIONS`: leaky_relu (slope 0.01), relu, tanh, elu, silu, none), `gain`, `key`.

    Calling it on one input `x` (shape `(in_size,)`) returns `(output, hiddens)`: the output
    `(out_size,)` and the tuple of every hidden layer's post-activation representation.

    !!! example

        ```python
        net = models.MLP(1, 1, width=500, depth=20, gain=1.0, key=jax.random.key(0))
        y, hiddens = net(jnp.array([-1.0]))    # len(hiddens) == 20
        ```
    """

    layers: tuple[Dense, ...]
    readout: Dense
    activation: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, width: int, depth: int, activation: str = "leaky_relu",
                 gain: float = 1.0, *, key: PRNGKeyArray):
        self.layers, self.readout = _dense_stack(in_size, out_size, width, depth, activation, gain, key)
        self.activation = activation

    def __call__(self, x: Float[Array, " in"]) -> tuple[Float[Array, " out"], tuple[Float[Array, " width"], ...]]:
        act = get_activation(self.activation)
        hiddens = []
        h = x
        for layer in self.layers:
            h = act(layer(h))
            hiddens.append(h)
        return self.readout(h), tuple(hiddens)

    def split(self, layer: int) -> tuple[eqx.Module, eqx.Module]:
        """`(encoder, decoder)` at hidden `layer`: `encoder(x) = hiddens[layer]`,
        `decoder(encoder(x)) = output`; they share this network's parameters."""
        check_layer(layer, len(self.layers))
        return (Stack(None, self.layers[: layer + 1], None, self.activation),
                Stack(None, self.layers[layer + 1 :], self.readout, self.activation))


class ResMLP(eqx.Module):
    """A residual MLP: `h₀ = act(W₀·x + b₀)`, then `h_l = h_{l−1} + act(W_l·h_{l−1} + b_l)`.

    Same arguments, initialisation and call convention as `MLP`; `depth` counts all hidden layers
    (the first, which changes the width, has no skip connection). The paper's "skip" setting uses
    gain 0.1 (the skips carry the signal at small gain).
    """

    first: Dense
    blocks: tuple[Dense, ...]
    readout: Dense
    activation: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, width: int, depth: int, activation: str = "leaky_relu",
                 gain: float = 1.0, *, key: PRNGKeyArray):
        keys = _checked_keys(in_size, out_size, width, depth, activation, gain, key)
        self.first = Dense(in_size, width, gain, key=keys[0])
        self.blocks = tuple(Dense(width, width, gain, key=k) for k in keys[1:depth])
        self.readout = Dense(width, out_size, gain, key=keys[-1])
        self.activation = activation

    def __call__(self, x):
        act = get_activation(self.activation)
        h = act(self.first(x))
        hiddens = [h]
        for block in self.blocks:
            h = h + act(block(h))
            hiddens.append(h)
        return self.readout(h), tuple(hiddens)

    def split(self, layer: int) -> tuple[eqx.Module, eqx.Module]:
        """`(encoder, decoder)` at hidden `layer` (see `MLP.split`)."""
        check_layer(layer, len(self.blocks) + 1)
        return (Stack(self.first, self.blocks[:layer], None, self.activation, residual=True),
                Stack(None, self.blocks[layer:], self.readout, self.activation, residual=True))


class SkipMLP(eqx.Module):
    """The skip-connection network of van Rossem & Saxe (2024): `h₀ = act(W₀·x + b₀)`,
    `h₁ = act(W₁·h₀ + b₁)`, then `h_n = act(W_n·h_{n−1} + b_n) + h_{n−2}` (each layer adds the
    representation from two layers below), linear read-out of the last.

    Same arguments, initialisation and call convention as `MLP` (`depth` hidden layers). The paper's
    "skip" setting: width 500, depth 20, leaky ReLU, gain 0.1, observed layer 10. (`ResMLP` is the
    common one-layer residual variant.) No `split`: the decoder of a layer reads two layers, so the
    tangent-kernel rates (`predict_effective_rates`) are not offered for it.
    """

    layers: tuple[Dense, ...]
    readout: Dense
    activation: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, width: int, depth: int, activation: str = "leaky_relu",
                 gain: float = 1.0, *, key: PRNGKeyArray):
        self.layers, self.readout = _dense_stack(in_size, out_size, width, depth, activation, gain, key)
        self.activation = activation

    def __call__(self, x):
        act = get_activation(self.activation)
        hiddens = []
        h = x
        for n, layer in enumerate(self.layers):
            h = act(layer(h))
            if n >= 2:
                h = h + hiddens[-2]
            hiddens.append(h)
        return self.readout(h), tuple(hiddens)


class DropoutMLP(eqx.Module):
    """An `MLP` with dropout before every linear layer (the input's and the read-out's included), as
    in van Rossem & Saxe's dropout runs (p = 0.1).

    Called with `key=None` (the default) it is deterministic: dropout off, exactly the `MLP` with the
    same weights (what the authors observe, in PyTorch's `eval()` mode). With a `key` each unit is
    zeroed with probability `p` and the kept ones scaled by `1/(1 − p)` (PyTorch's training mode).
    Training is then a stochastic process with no gradient-flow ODE: use `gradient_descent(..., key=)`.

    !!! example

        ```python
        net = models.DropoutMLP(1, 1, width=500, depth=10, gain=1.0, p=0.1, key=jax.random.key(0))
        gd = flowsolve.gradient_descent(net, x, y, 0.01, 3000, layer=2, key=jax.random.key(1))
        ```
    """

    layers: tuple[Dense, ...]
    readout: Dense
    activation: str = eqx.field(static=True)
    p: float = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, width: int, depth: int, activation: str = "leaky_relu",
                 gain: float = 1.0, *, p: float = 0.1, key: PRNGKeyArray):
        if not 0 <= p < 1:
            raise ValueError(f"`p` must be in [0, 1), got {p!r}.")
        self.layers, self.readout = _dense_stack(in_size, out_size, width, depth, activation, gain, key)
        self.activation = activation
        self.p = p

    def __call__(self, x, *, key: PRNGKeyArray | None = None):
        act = get_activation(self.activation)
        keys = [None] * (len(self.layers) + 1) if key is None else list(jax.random.split(key, len(self.layers) + 1))

        def drop(h, k):
            if k is None or self.p == 0:
                return h
            keep = jax.random.bernoulli(k, 1 - self.p, h.shape)
            return jnp.where(keep, h / (1 - self.p), jnp.zeros_like(h))

        hiddens = []
        h = x
        for layer, k in zip(self.layers, keys):
            h = act(layer(drop(h, k)))
            hiddens.append(h)
        return self.readout(drop(h, keys[-1])), tuple(hiddens)


class DeepLinear(eqx.Module):
    """A deep linear network `W_L ⋯ W₁·x` (no biases, no activations), `depth` hidden layers.

    Same initialisation and call convention as `MLP`; the hiddens are the partial products.
    """

    layers: tuple[Dense, ...]
    readout: Dense

    def __init__(self, in_size: int, out_size: int, width: int, depth: int, gain: float = 1.0, *, key: PRNGKeyArray):
        check_sizes(in_size=in_size, out_size=out_size, width=width, depth=depth)
        check_gain(gain)
        keys = jax.random.split(key, depth + 1)
        sizes = [in_size] + [width] * depth
        self.layers = tuple(Dense(sizes[i], sizes[i + 1], gain, use_bias=False, key=keys[i]) for i in range(depth))
        self.readout = Dense(width, out_size, gain, use_bias=False, key=keys[-1])

    def __call__(self, x):
        hiddens = []
        h = x
        for layer in self.layers:
            h = layer(h)
            hiddens.append(h)
        return self.readout(h), tuple(hiddens)

    def split(self, layer: int) -> tuple[eqx.Module, eqx.Module]:
        """`(encoder, decoder)` at hidden `layer` (see `MLP.split`)."""
        check_layer(layer, len(self.layers))
        return (Stack(None, self.layers[: layer + 1], None, "none"),
                Stack(None, self.layers[layer + 1 :], self.readout, "none"))
