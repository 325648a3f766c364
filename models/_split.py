"""Splitting a network at a hidden layer into an encoder x ↦ h and a decoder h ↦ ŷ (THEORY.md §1).

Each architecture's `split(layer)` returns `(encoder, decoder)`: two Equinox modules that share the
network's parameters (the same arrays), so that `decoder(encoder(x))` is the network's output and
`encoder(x)` its hidden representation `hiddens[layer]`. The tangent kernels of the two halves give
the effective learning rates (`flowsolve.predict_effective_rates`).
"""

import equinox as eqx
from jaxtyping import Array

from ._init import activation as get_activation


def check_layer(layer, depth: int) -> None:
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < depth:
        raise ValueError(f"`layer` must be an int in [0, {depth - 1}] (the hidden layers), got {layer!r}.")


class Stack(eqx.Module):
    """`first` (optional, activated), then `layers` (activated; residual if `residual`), then `readout`
    (optional, linear)."""

    first: eqx.Module | None
    layers: tuple[eqx.Module, ...]
    readout: eqx.Module | None
    activation: str = eqx.field(static=True)
    residual: bool = eqx.field(static=True, default=False)

    def __call__(self, h: Array) -> Array:
        act = get_activation(self.activation)
        if self.first is not None:
            h = act(self.first(h))
        for layer in self.layers:
            h = h + act(layer(h)) if self.residual else act(layer(h))
        return h if self.readout is None else self.readout(h)


class ConvEncoder(eqx.Module):
    """Input layer → activation → one channel → `convs` (activated)."""

    input_layer: eqx.Module
    convs: tuple[eqx.Module, ...]
    activation: str = eqx.field(static=True)

    def __call__(self, x: Array) -> Array:
        act = get_activation(self.activation)
        h = act(self.input_layer(x))[None, :]
        for conv in self.convs:
            h = act(conv(h))
        return h


class ConvDecoder(eqx.Module):
    """`convs` (activated) → flatten → linear read-out."""

    convs: tuple[eqx.Module, ...]
    readout: eqx.Module
    activation: str = eqx.field(static=True)

    def __call__(self, h: Array) -> Array:
        act = get_activation(self.activation)
        for conv in self.convs:
            h = act(conv(h))
        return self.readout(h.reshape(-1))
