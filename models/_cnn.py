"""A 1-D convolutional network (the paper's "cnn" setting)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._init import activation as get_activation, check_gain, check_sizes, xavier_normal
from ._split import check_layer, ConvDecoder, ConvEncoder
from ._mlp import Dense


class Conv1d(eqx.Module):
    """A 1-D convolution with Xavier-normal kernels (fan = channels · kernel width, as PyTorch's
    `xavier_normal_` on a `Conv1d`) and zero biases; `padding` is `"SAME"` (output as long as the
    input) or `"VALID"` (PyTorch's default: `kernel_size − 1` shorter)."""

    weight: Float[Array, "out_channels in_channels kernel"]
    bias: Float[Array, " out_channels"]
    padding: str = eqx.field(static=True, default="SAME")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float, *, padding: str = "SAME",
                 key: PRNGKeyArray):
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"`padding` must be 'SAME' or 'VALID', got {padding!r}.")
        self.weight = xavier_normal(
            key, (out_channels, in_channels, kernel_size), in_channels * kernel_size, out_channels * kernel_size, gain
        )
        self.bias = jnp.zeros(out_channels, self.weight.dtype)
        self.padding = padding

    def __call__(self, x: Float[Array, "in_channels length"]) -> Float[Array, "out_channels out_length"]:
        y = jax.lax.conv_general_dilated(x[None], self.weight, window_strides=(1,), padding=self.padding)[0]
        return y + self.bias[:, None]


def _check_conv_args(in_size, out_size, width, depth, activation, gain, kernel_size, channels) -> None:
    check_sizes(in_size=in_size, out_size=out_size, width=width, depth=depth, kernel_size=kernel_size,
                channels=channels)
    check_gain(gain)
    get_activation(activation)


class CNN1d(eqx.Module):
    """Input linear layer to `width` → `depth` 1-D convolutions (`kernel_size`-wide, `channels`
    channels, 'same' padding) → linear read-out of the flattened feature map.

    The input layer is followed by the activation and is not counted in `hiddens`; `hiddens` are
    the `depth` convolution outputs (post-activation), each of shape `(channels, width)` (the first
    convolution maps the single input channel to `channels`). Xavier-normal weights, zero biases.
    Paper setting: width 500, depth 10, kernel 11, 20 channels, gain 0.95, observed layer 5.
    """

    input_layer: Dense
    convs: tuple[Conv1d, ...]
    readout: Dense
    activation: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, width: int, depth: int, activation: str = "leaky_relu",
                 gain: float = 1.0, *, kernel_size: int = 11, channels: int = 20, key: PRNGKeyArray):
        _check_conv_args(in_size, out_size, width, depth, activation, gain, kernel_size, channels)
        keys = jax.random.split(key, depth + 2)
        self.input_layer = Dense(in_size, width, gain, key=keys[0])
        chans = [1] + [channels] * depth
        self.convs = tuple(Conv1d(chans[i], chans[i + 1], kernel_size, gain, key=keys[i + 1]) for i in range(depth))
        self.readout = Dense(channels * width, out_size, gain, key=keys[-1])
        self.activation = activation

    def __call__(self, x):
        act = get_activation(self.activation)
        h = act(self.input_layer(x))[None, :]
        hiddens = []
        for conv in self.convs:
            h = act(conv(h))
            hiddens.append(h)
        return self.readout(h.reshape(-1)), tuple(hiddens)

    def split(self, layer: int) -> tuple[eqx.Module, eqx.Module]:
        """`(encoder, decoder)` at hidden `layer` (a convolution output; see `MLP.split`)."""
        check_layer(layer, len(self.convs))
        return (ConvEncoder(self.input_layer, self.convs[: layer + 1], self.activation),
                ConvDecoder(self.convs[layer + 1 :], self.readout, self.activation))


class ValidCNN1d(eqx.Module):
    """The convolutional network of van Rossem & Saxe (2024): input linear layer to `width` →
    a `channels`-channel 'valid' convolution of the single channel → `depth − 1` more
    `channels → channels` convolutions → a `channels → 1` convolution → linear read-out of the
    remaining `width − (kernel_size − 1)·(depth + 1)` values. Every layer but the read-out is
    followed by the activation (the last convolution included).

    `hiddens` counts every activated layer, as the authors index them: `hiddens[0]` is the input
    layer's output `(width,)`, `hiddens[1 … depth]` the `channels`-channel convolutions
    `(channels, length)`, `hiddens[depth + 1]` the one-channel convolution `(1, length)`. The paper's
    setting: width 500, depth 10, kernel 11, 20 channels, gain 0.95, observed layer 5 (the fifth
    convolution). Xavier-normal weights, zero biases. (`CNN1d` is this project's 'same'-padded variant.)
    No `split`: the tangent-kernel rates (`predict_effective_rates`) are not offered for it.
    """

    input_layer: Dense
    convs: tuple[Conv1d, ...]
    readout: Dense
    activation: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, width: int, depth: int, activation: str = "leaky_relu",
                 gain: float = 1.0, *, kernel_size: int = 11, channels: int = 20, key: PRNGKeyArray):
        _check_conv_args(in_size, out_size, width, depth, activation, gain, kernel_size, channels)
        length = width - (kernel_size - 1) * (depth + 1)
        if length < 1:
            raise ValueError(f"`width` {width} is too short for {depth + 1} valid convolutions of width "
                             f"{kernel_size}: need width > {(kernel_size - 1) * (depth + 1)}.")
        keys = jax.random.split(key, depth + 3)
        self.input_layer = Dense(in_size, width, gain, key=keys[0])
        chans = [1] + [channels] * depth + [1]
        self.convs = tuple(Conv1d(chans[i], chans[i + 1], kernel_size, gain, padding="VALID", key=keys[i + 1])
                           for i in range(depth + 1))
        self.readout = Dense(length, out_size, gain, key=keys[-1])
        self.activation = activation

    def __call__(self, x):
        act = get_activation(self.activation)
        h = act(self.input_layer(x))
        hiddens = [h]
        h = h[None, :]
        for conv in self.convs:
            h = act(conv(h))
            hiddens.append(h)
        return self.readout(h.reshape(-1)), tuple(hiddens)
