"""Equinox architectures for flowsolve, parametrised as in the literature.

Every model maps one input to `(output, hiddens)`, `hiddens` the tuple of every hidden layer's
post-activation representation. `DropoutMLP` (the paper's dropout runs) is stochastic: it has no
gradient-flow ODE and trains with `flowsolve.gradient_descent(..., key=)`.
"""

from ._cnn import CNN1d as CNN1d, Conv1d as Conv1d, ValidCNN1d as ValidCNN1d
from ._init import ACTIVATIONS as ACTIVATIONS, xavier_normal as xavier_normal
from ._mlp import (
    Dense as Dense,
    DeepLinear as DeepLinear,
    DropoutMLP as DropoutMLP,
    MLP as MLP,
    ResMLP as ResMLP,
    SkipMLP as SkipMLP,
)
