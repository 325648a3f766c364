"""Equinox architectures for flowsolve, parametrised as in the literature.

Every model maps one input to `(output, hiddens)`, `hiddens` the tuple of every hidden layer's
post-activation representation. Dropout (used in some of the paper's runs) is stochastic and has no
gradient-flow ODE, so it is not offered.
"""

from ._cnn import CNN1d as CNN1d, Conv1d as Conv1d
from ._init import ACTIVATIONS as ACTIVATIONS, xavier_normal as xavier_normal
from ._mlp import Dense as Dense, DeepLinear as DeepLinear, MLP as MLP, ResMLP as ResMLP
