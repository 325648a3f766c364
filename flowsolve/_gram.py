"""The two-point kernel model: the mean and the difference together, without the alignment assumption.

The reduced theory (`THEORY.md` §2) and the unaligned model (`flowsolve._unaligned`) follow the
difference of the two points alone. Gradient flow couples it to their mean: with the second input's
hidden state 0 at initialisation (the paper's inputs −1 and 0), the mean's error drives the hidden
states as strongly as the difference does. This model keeps both points. A one-dimensional output
`ŷᵢ = u·hᵢ + c` (`u` the decoder's gradient at the hidden layer, `c` the output offset), the loss
`L = ¼·Σᵢ eᵢ²` with `eᵢ = ŷᵢ − yᵢ*`, `∂L/∂hᵢ = ½·eᵢ·u`, and

    dhᵢ/dt = −½·(Σⱼ kᵢⱼ·eⱼ)·u        du/dt = −½·η_u·Σⱼ eⱼ·hⱼ        dc/dt = −½·η_c·Σⱼ eⱼ

(`kᵢⱼ` the encoder's tangent kernel between the inputs, read along `u`; `η_u`, `η_c` the decoder's
rates). The flow closes on the Gram matrix `G` of `(h₁, h₂, u)` and `c`: seven scalars. For a
two-layer linear network with biases (`h = W₁x + b₁`, `ŷ = W₂h + b₂`) it is exact, whatever the
width: `kᵢⱼ = xᵢ·xⱼ + 1` and `η_u = η_c = 1`. `docs/rates.md` derives it and measures it on the
paper's networks, where `kᵢⱼ`, `η_u`, `η_c` are read off the tangent kernels (`predict_gram_model`).
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import RealScalarLike
from ._kernels import _split, _sq_norm
from ._norms import rms_norm_nan_is_inf
from ._results import raise_on_failure, RESULTS
from ._saving import solve_saving_at
from ._validation import check_finite, concrete_array, is_concrete


class GramModel(eqx.Module):
    """The two-point kernel model's constants and its start (`predict_gram_model`, `solve_gram`).

    **Fields:**

    - `encoder_kernel`: `k`, 2 × 2, symmetric, positive semi-definite: how point `j`'s error moves
      point `i`'s hidden state along the decoder's gradient.
    - `eta_u`, `eta_c`: the decoder's rates (its gradient `u` and its offset `c`).
    - `targets`: `(y₁*, y₂*)`.
    - `gram0`: the Gram matrix of `(h₁, h₂, u)` at the start, 3 × 3.
    - `c0`: the output offset at the start (`ŷᵢ = u·hᵢ + c`).
    """

    encoder_kernel: Float[Array, "2 2"]
    eta_u: Float[Array, ""]
    eta_c: Float[Array, ""]
    targets: Float[Array, "2"]
    gram0: Float[Array, "3 3"]
    c0: Float[Array, ""]


class GramSolution(eqx.Module):
    """A solution of the two-point kernel model, returned by `solve_gram`.

    **Fields:** `ts`; the two-point state `h`, `y`, `w`, `m` (as `two_point_observables`) and `loss`
    (`½·mean eᵢ²`) at `ts`; `cos_theta`, `|u·dh|/(‖u‖·‖dh‖)`; `gram` (`(times, 3, 3)`) and `c`;
    `result` (a `flowsolve.RESULTS`) and `stats` (diffrax's step counts).
    """

    ts: Float[Array, " times"]
    h: Float[Array, " times"]
    y: Float[Array, " times"]
    w: Float[Array, " times"]
    m: Float[Array, " times"]
    loss: Float[Array, " times"]
    cos_theta: Float[Array, " times"]
    gram: Float[Array, "times 3 3"]
    c: Float[Array, " times"]
    result: RESULTS
    stats: dict[str, Array]


_UPPER = ((0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2))


def _pack(gram, c):
    return jnp.stack([gram[i, j] for i, j in _UPPER] + [c])


def _unpack(state):
    g = [[None] * 3 for _ in range(3)]
    for n, (i, j) in enumerate(_UPPER):
        g[i][j] = g[j][i] = state[n]
    return jnp.stack([jnp.stack(row) for row in g]), state[6]


def _vector_field(t, state, model: GramModel):
    del t
    g, c = _unpack(state)
    e = jnp.stack([g[0, 2], g[1, 2]]) + c - model.targets
    s = model.encoder_kernel @ e  # the encoder's drive of each point, along u
    # dhᵢ = −½·sᵢ·u,  du = −½·η_u·Σⱼ eⱼ·hⱼ: each entry of G = [h₁, h₂, u]ᵀ[h₁, h₂, u] moves bilinearly.
    du = -0.5 * model.eta_u * (e @ g[:2, :])  # du · (h₁, h₂, u), as a row over G's columns
    dh = -0.5 * s[:, None] * g[2][None, :]  # dhᵢ · (h₁, h₂, u)
    d = jnp.concatenate([dh, du[None, :]], axis=0)  # row a: d(vector a) · (each vector)
    dg = d + d.T
    dc = -0.5 * model.eta_c * jnp.sum(e)
    return _pack(dg, dc)


def _observables(model: GramModel, gram, c):
    yhat = jnp.stack([gram[..., 0, 2], gram[..., 1, 2]], axis=-1) + c[..., None]
    e = yhat - model.targets[None, :]
    h = gram[..., 0, 0] + gram[..., 1, 1] - 2 * gram[..., 0, 1]
    dyhat = yhat[..., 1] - yhat[..., 0]
    dystar = model.targets[1] - model.targets[0]
    y = dyhat**2
    w = y - dystar * dyhat
    m = (jnp.mean(e, axis=-1)) ** 2
    loss = 0.25 * jnp.sum(e**2, axis=-1)
    norms = jnp.sqrt(jnp.maximum(gram[..., 2, 2] * h, 0.0))
    cos_theta = jnp.abs(gram[..., 1, 2] - gram[..., 0, 2]) / jnp.where(norms > 0, norms, 1.0)
    return h, y, w, m, loss, cos_theta


def _read(encoder, decoder, inputs, targets) -> GramModel:
    """The model's constants and start read off one split network at two points (jittable)."""
    enc_p, enc_s = eqx.partition(encoder, eqx.is_inexact_array)
    dec_p, dec_s = eqx.partition(decoder, eqx.is_inexact_array)
    enc = lambda p, x: eqx.combine(p, enc_s)(x).reshape(-1)  # noqa: E731
    hidden = jax.vmap(lambda x: enc(enc_p, x))(inputs)
    shape = jnp.shape(eqx.combine(enc_p, enc_s)(inputs[0]))
    dec = lambda p, hh: eqx.combine(p, dec_s)(hh.reshape(shape)).reshape(())  # noqa: E731
    outputs = jax.vmap(lambda hh: dec(dec_p, hh))(hidden)
    # u: the decoder's gradient at the midpoint of the two hidden states.
    u = jax.grad(lambda hh: dec(dec_p, hh))(0.5 * (hidden[0] + hidden[1]))
    norm = jnp.sqrt(jnp.sum(u**2))
    u_hat = u / jnp.where(norm > 0, norm, 1.0)
    # kᵢⱼ = (J_e(xᵢ)ᵀû)·(J_e(xⱼ)ᵀû): one VJP per input.
    pulls = [jax.vjp(lambda p, x=x: enc(p, x), enc_p)[1](u_hat)[0] for x in inputs]
    dot = lambda a, b: sum(jnp.sum(x * y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))  # noqa: E731
    k01 = dot(pulls[0], pulls[1])
    k = jnp.stack([jnp.stack([_sq_norm(pulls[0]), k01]), jnp.stack([k01, _sq_norm(pulls[1])])])
    # The decoder's kernel K^d_ij = J_d(hᵢ)·J_d(hⱼ) against η_u·hᵢ·hⱼ + η_c (exact for a linear read-out
    # with a bias), by least squares over its three entries.
    grads = [jax.grad(lambda p, hh=hh: dec(p, hh))(dec_p) for hh in hidden]
    kd = jnp.stack([_sq_norm(grads[0]), dot(grads[0], grads[1]), _sq_norm(grads[1])])
    hh = hidden @ hidden.T
    design = jnp.stack([jnp.stack([hh[0, 0], hh[0, 1], hh[1, 1]]), jnp.ones(3, hh.dtype)], axis=1)
    (eta_u, eta_c), *_ = jnp.linalg.lstsq(design, kd)
    vectors = jnp.concatenate([hidden, u[None, :]], axis=0)
    gram0 = vectors @ vectors.T
    c0 = jnp.mean(outputs) - u @ jnp.mean(hidden, axis=0)
    return GramModel(encoder_kernel=k, eta_u=eta_u, eta_c=eta_c, targets=targets.reshape(2), gram0=gram0, c0=c0)


_read_jit = eqx.filter_jit(_read)


def predict_gram_model(
    model: eqx.Module,
    inputs: Float[ArrayLike, "2 ..."],
    targets: Float[ArrayLike, "2 1"],
    layer: int,
) -> GramModel:
    """Read the two-point kernel model off a network at its current parameters, without training.

    `u` is the decoder's gradient at the midpoint of the two hidden states, `c0 = ȳ − u·h̄`,
    `kᵢⱼ = (J_e(xᵢ)ᵀû)·(J_e(xⱼ)ᵀû)` the encoder's tangent kernel along `û = u/‖u‖`, and `(η_u, η_c)`
    the least-squares match of the decoder's tangent kernel `J_d(hᵢ)·J_d(hⱼ)` to `η_u·hᵢ·hⱼ + η_c`.
    Exact for a two-layer linear network with biases (`docs/rates.md`).

    **Arguments:** `model` (an Equinox network with `split(layer)`, as for `predict_effective_rates`),
    `inputs`, `targets` (two points, a one-dimensional output), `layer`.

    **Returns:** a `GramModel`, for `solve_gram`.

    **Raises:** `ValueError` for a model without a split, not two points, an output that is not
    one-dimensional, or non-finite kernels.

    !!! example

        ```python
        exp = flowsolve.experiments.two_points("two_layer", key=jax.random.key(0), width=100)
        model = flowsolve.predict_gram_model(exp.model, exp.inputs, exp.targets, exp.layer)
        sol = flowsolve.solve_gram(model, exp.t1)
        ```
    """
    if not isinstance(model, eqx.Module):
        raise ValueError(f"`model` must be an Equinox module, got {type(model).__name__}.")
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    if inputs.ndim < 1 or inputs.shape[0] != 2:
        raise ValueError(f"`inputs` must hold exactly two points (leading axis 2), got shape {inputs.shape}.")
    if targets.size != 2:
        raise ValueError(f"`targets` must be two one-dimensional outputs, got shape {targets.shape}.")
    encoder, decoder = _split(model, layer)
    gram = _read_jit(encoder, decoder, inputs, targets.astype(inputs.dtype))
    values = concrete_array(jnp.concatenate([gram.encoder_kernel.reshape(-1), gram.gram0.reshape(-1),
                                             jnp.stack([gram.eta_u, gram.eta_c, gram.c0])]))
    if values is not None and not np.all(np.isfinite(values)):
        raise ValueError("Non-finite tangent kernels or hidden states; check the parameters and data.")
    return gram


def solve_gram(
    model: GramModel,
    t1: RealScalarLike,
    *,
    ts: Float[ArrayLike, " times"] | None = None,
    solver: diffrax.AbstractAdaptiveSolver | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 16_384,
    throw: bool = True,
) -> GramSolution:
    """Solve the two-point kernel model from its start `model.gram0`, `model.c0` to `t1`.

    **Arguments:** `model` (a `GramModel`: `predict_gram_model` or built by hand), `t1` (> 0).

    **Other arguments:** `ts` (default 101 evenly spaced in `[0, t1]`), `solver` (default
    `diffrax.Tsit5()`), `rtol`, `atol`, `max_steps`, `throw` (raise on a failed solve; else it is
    reported in `result`).

    **Raises:** `ValueError` naming the argument for a non-finite or non-symmetric model, `t1 ≤ 0`,
    bad `ts` or tolerances; `EquinoxRuntimeError` for a failed solve when `throw`. Traced (under
    `jit`/`vmap`) a failed solve is its `result`, with NaN values.

    !!! example

        ```python
        model = flowsolve.GramModel(encoder_kernel=jnp.array([[2.0, 1.0], [1.0, 1.0]]), eta_u=1.0, eta_c=1.0,
                                    targets=jnp.array([0.6, 1.31]), gram0=0.01 * jnp.eye(3), c0=0.0)
        sol = flowsolve.solve_gram(model, 50.0)
        sol.h[-1], sol.loss[-1]
        ```
    """
    if not isinstance(model, GramModel):
        raise ValueError(f"`model` must be a GramModel, got {type(model).__name__}.")
    model = jax.tree_util.tree_map(jnp.asarray, model)
    for name in ("encoder_kernel", "eta_u", "eta_c", "targets", "gram0", "c0"):
        check_finite(f"model.{name}", getattr(model, name))
    if model.encoder_kernel.shape != (2, 2) or model.gram0.shape != (3, 3) or model.targets.shape != (2,):
        raise ValueError("`model` must have a 2 × 2 `encoder_kernel`, a 3 × 3 `gram0` and two `targets`.")
    for name in ("encoder_kernel", "gram0"):
        value = concrete_array(getattr(model, name))
        if value is not None and not np.allclose(value, value.T, rtol=1e-10, atol=0.0):
            raise ValueError(f"`model.{name}` must be symmetric.")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"`rtol` and `atol` must be > 0, got rtol={rtol!r}, atol={atol!r}.")
    check_finite("t1", t1)
    t1_c = concrete_array(t1)
    if t1_c is not None and not t1_c > 0:
        raise ValueError(f"`t1` must be > 0, got {float(t1_c)!r}.")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}.")
    dtype = model.gram0.dtype
    t1 = jnp.asarray(t1, dtype)
    ts = jnp.linspace(0.0, t1, 101, dtype=dtype) if ts is None else jnp.asarray(ts, dtype)
    ts_c = concrete_array(ts)
    if ts.ndim != 1 or (ts_c is not None and (not np.all(np.isfinite(ts_c)) or np.any(np.diff(ts_c) < 0) or ts_c[0] < 0
                                              or (t1_c is not None and ts_c[-1] > t1_c))):
        raise ValueError("`ts` must be a 1-d, non-decreasing array of times in [0, t1].")
    # The tolerances are values inside the compiled solve: another tolerance does not compile again.
    sol = _solve(model, ts, diffrax.Tsit5() if solver is None else solver, jnp.asarray(rtol, dtype),
                 jnp.asarray(atol, dtype), max_steps)
    if throw and is_concrete(sol.result):
        raise_on_failure(sol.result, "solve_gram")
    return sol


@eqx.filter_jit
def _solve(model, ts, solver, rtol, atol, max_steps) -> GramSolution:
    controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=rms_norm_nan_is_inf)
    saved = solve_saving_at(diffrax.ODETerm(_vector_field), solver, jnp.zeros((), ts.dtype), ts,
                            _pack(model.gram0, model.c0), model, controller, max_steps)
    gram, c = jax.vmap(_unpack)(saved.ys)
    h, y, w, m, loss, cos_theta = _observables(model, gram, c)
    result = RESULTS.promote(saved.result)
    result = RESULTS.where((result == RESULTS.successful) & ~jnp.all(jnp.isfinite(saved.ys)),
                           RESULTS.nonfinite_state, result)
    # A failed solve returns NaN, never its partial state as if it were the answer.
    failed = result != RESULTS.successful
    h, y, w, m, loss, cos_theta, c = (jnp.where(failed, jnp.nan, v) for v in (h, y, w, m, loss, cos_theta, c))
    gram = jnp.where(failed, jnp.nan, gram)
    return GramSolution(ts=ts, h=h, y=y, w=w, m=m, loss=loss, cos_theta=cos_theta, gram=gram, c=c,
                        result=result, stats=saved.stats)
