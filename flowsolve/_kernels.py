"""Effective learning rates predicted from a network's tangent kernels, without fitting.

Derivation (docs/rates.md). Split the network at the observed layer into an encoder `x ↦ h(x)`
(parameters θ_e) and a decoder `h ↦ ŷ(h)` (θ_d). With the loss `L = ¼·Σᵢ‖ŷᵢ − yᵢ*‖²` of two points
and `gᵢ = ∂L/∂hᵢ`, gradient flow moves the hidden difference as

    d(h₂ − h₁)/dt = −Σⱼ (K^e₂ⱼ − K^e₁ⱼ)·gⱼ,        K^e_ij = J_e(xᵢ)·J_e(xⱼ)ᵀ.

In the linearised model of THEORY.md §2, `gⱼ = ½·D_yᵀ(e ∓ ½r)` with `r = dŷ − dy*`, `e = ȳ − ȳ*`; its
antisymmetric part gives `d(dh)/dt = −¼·(K^e₁₁ + K^e₂₂ − K^e₁₂ − K^e₂₁)·D_yᵀr` (= −½·(…)·v with
`v = g₂ − g₁ = ½·D_yᵀr`), against the reduced model's `−½·η_h·dx2·D_yᵀr`. So `η_h = κ_e/(2·dx2)`, with κ_e the encoder's pair contrast read
along v. Likewise the decoder moves the output difference by `−¼·κ_d·r` against `−½·η_y·h·r`:
`η_y = κ_d/(2·h)`; and the mean by `−¼·(K₁₁ + K₂₂ + K₁₂ + K₂₁)·e` (full kernel) against `−η̄·e`:
`η̄ = κ̄/4`. Each contrast along a unit vector u is `‖(J(x₂) − J(x₁))ᵀu‖²`: one vector–Jacobian product,
no Jacobian is ever materialised.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._observables import check_layer, hidden_at, squared_error_loss, two_point_observables
from ._validation import concrete_array


class EffectiveRates(eqx.Module):
    """The effective learning rates read off a network's tangent kernels (`predict_effective_rates`).

    Gradient-flow time (multiply by the learning rate for rates per epoch).

    **Fields:**

    - `eta_h`, `eta_y`, `eta_mean`: the predicted η_h, η_y, η̄.
    - `kappa_e`, `kappa_d`, `kappa_mean`: the kernel contrasts they come from
      (`η_h = κ_e/(2·dx2)`, `η_y = κ_d/(2·h)`, `η̄ = κ̄/4`).
    - `h`, `dx2`: the squared hidden and input distances used.
    - `cos_theta`: the alignment |cos θ| between the hidden difference `dh` and the direction
      `D_yᵀr` in which the decoder's gradient acts on it (r = dŷ − dy*, the output residual; dy*
      where r vanishes). The reduced theory assumes 1 (THEORY.md §2); its encoder term of dy/dt is
      off by the factor 1/cos²θ otherwise (docs/rates.md).
    - `decoder_sq_norm`: `‖D_yᵀ·r̂‖²`, the squared norm of the decoder's gradient along the same
      direction (for a one-dimensional output `‖D_y‖²`): the `q0` of `solve_unaligned`, the model
      without the alignment assumption.
    """

    eta_h: Float[Array, ""]
    eta_y: Float[Array, ""]
    eta_mean: Float[Array, ""]
    kappa_e: Float[Array, ""]
    kappa_d: Float[Array, ""]
    kappa_mean: Float[Array, ""]
    h: Float[Array, ""]
    dx2: Float[Array, ""]
    cos_theta: Float[Array, ""]
    decoder_sq_norm: Float[Array, ""]


def _sq_norm(tree) -> Array:
    return sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree))


def _unit(u: Array, fallback: Array) -> Array:
    """`u/‖u‖`, or `fallback/‖fallback‖` where `u` vanishes (the direction is then undefined)."""
    n = jnp.sqrt(jnp.sum(u**2))
    nf = jnp.sqrt(jnp.sum(fallback**2))
    return jnp.where(n > 0, u / jnp.where(n > 0, n, 1.0), fallback / jnp.where(nf > 0, nf, 1.0))


def _contrast(fn, params, u) -> Array:
    """`‖(J(x₂) − J(x₁))ᵀu‖²` for `fn(params) = f(x₂) − f(x₁)`: one VJP."""
    _, vjp = jax.vjp(fn, params)
    (cotangent,) = vjp(u.reshape(fn(params).shape))
    return _sq_norm(cotangent)


def _rates(encoder, decoder, inputs, targets) -> EffectiveRates:
    """The rates of one split network at two points (jittable)."""
    enc_p, enc_s = eqx.partition(encoder, eqx.is_inexact_array)
    dec_p, dec_s = eqx.partition(decoder, eqx.is_inexact_array)
    enc = lambda p, x: eqx.combine(p, enc_s)(x)  # noqa: E731
    dec = lambda p, h: eqx.combine(p, dec_s)(h)  # noqa: E731
    hidden = jax.vmap(lambda x: enc(enc_p, x))(inputs)
    outputs = jax.vmap(lambda hh: dec(dec_p, hh))(hidden)
    flat = lambda a: a.reshape(2, -1)  # noqa: E731
    dx2 = jnp.sum((flat(inputs)[1] - flat(inputs)[0]) ** 2)
    dh = flat(hidden)[1] - flat(hidden)[0]
    h = jnp.sum(dh**2)
    dy_target = flat(targets)[1] - flat(targets)[0]
    r = (flat(outputs)[1] - flat(outputs)[0]) - dy_target
    e = jnp.mean(flat(outputs), axis=0) - jnp.mean(flat(targets), axis=0)

    # v = g₂ − g₁, the antisymmetric part of the loss gradient at the hidden layer.
    def loss_of_hidden(hh):
        out = jax.vmap(lambda x: dec(dec_p, x))(hh)
        return 0.25 * jnp.sum((flat(out) - flat(targets)) ** 2)

    g = flat(jax.grad(loss_of_hidden)(hidden))
    v = _unit(g[1] - g[0], dh)
    # The direction the decoder's gradient acts along, D_yᵀ·r̂ (the output residual's direction, dy*
    # where it vanishes), against dh: one VJP of the decoder at the midpoint of the two hidden states.
    _, dec_vjp = jax.vjp(lambda hh: dec(dec_p, hh), 0.5 * (hidden[0] + hidden[1]))
    (pull,) = dec_vjp(_unit(r, dy_target).reshape(outputs.shape[1:]))
    pull = pull.reshape(-1)
    norms = jnp.sqrt(jnp.sum(pull**2) * h)
    cos_theta = jnp.abs(jnp.sum(pull * dh)) / jnp.where(norms > 0, norms, 1.0)
    r_unit = _unit(r, dy_target)
    e_unit = _unit(e, jnp.ones_like(e))

    kappa_e = _contrast(lambda p: enc(p, inputs[1]) - enc(p, inputs[0]), enc_p, v)
    kappa_d = _contrast(lambda p: dec(p, hidden[1]) - dec(p, hidden[0]), dec_p, r_unit)

    def output_sum(p):
        ep, dp = p
        return dec(dp, enc(ep, inputs[0])) + dec(dp, enc(ep, inputs[1]))

    kappa_mean = _contrast(output_sum, (enc_p, dec_p), e_unit)
    return EffectiveRates(
        eta_h=kappa_e / (2 * dx2), eta_y=kappa_d / (2 * h), eta_mean=kappa_mean / 4,
        kappa_e=kappa_e, kappa_d=kappa_d, kappa_mean=kappa_mean, h=h, dx2=dx2, cos_theta=cos_theta,
        decoder_sq_norm=jnp.sum(pull**2),
    )


_rates_jit = eqx.filter_jit(_rates)


def _split(model, layer):
    split = getattr(model, "split", None)
    if not callable(split):
        raise ValueError(
            f"{type(model).__name__} does not define `split(layer) -> (encoder, decoder)`, so its encoder/decoder "
            "split is undefined; the models in `models/` define it, and so can yours."
        )
    parts = split(layer)
    if not (isinstance(parts, tuple) and len(parts) == 2 and all(isinstance(p, eqx.Module) for p in parts)):
        raise ValueError("`model.split(layer)` must return two Equinox modules (encoder, decoder).")
    for name, part in zip(("encoder", "decoder"), parts):
        if not jax.tree_util.tree_leaves(eqx.filter(part, eqx.is_inexact_array)):
            raise ValueError(f"The {name} at layer {layer} has no parameters: the split is undefined there.")
    return parts


def predict_effective_rates(
    model: eqx.Module,
    inputs: Float[ArrayLike, "2 ..."],
    targets: Float[ArrayLike, "2 ..."],
    layer: int,
) -> EffectiveRates:
    """Predict η_h, η_y and η̄ from the network's tangent kernels at its current parameters.

    `η_h = κ_e/(2·dx2)`, `η_y = κ_d/(2·h)`, `η̄ = κ̄/4`: κ_e is the encoder's kernel contrast
    `K₁₁ + K₂₂ − K₁₂ − K₂₁` of the two points read along the direction the decoder's gradient acts on
    the hidden difference, κ_d the decoder's read along the output residual `dŷ − dy*`, κ̄ the whole
    network's kernel sum `K₁₁ + K₂₂ + K₁₂ + K₂₁` read along the mean error (derivation: `docs/rates.md`).
    Exact for the linearised model of `THEORY.md` §2 and for a two-layer linear network (½, ½).

    **Arguments:**

    - `model`: an Equinox network with `split(layer) -> (encoder, decoder)` (`models.MLP`, `ResMLP`,
      `DeepLinear`, `CNN1d`; not the authors' `SkipMLP` and `ValidCNN1d`, nor `DropoutMLP`).
    - `inputs`, `targets`: the two points (leading axis 2).
    - `layer`: the observed hidden layer.

    **Returns:** an `EffectiveRates`.

    **Raises:** `ValueError` for a model without a split, a layer outside the network, a split with
    no parameters on one side, not exactly two points, or non-finite kernels.

    !!! example

        ```python
        exp = flowsolve.experiments.two_points("default", key=jax.random.key(0), width=100)
        rates = flowsolve.predict_effective_rates(exp.model, exp.inputs, exp.targets, exp.layer)
        rates.eta_h, rates.eta_y
        ```
    """
    if not isinstance(model, eqx.Module):
        raise ValueError(f"`model` must be an Equinox module, got {type(model).__name__}.")
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    if inputs.ndim < 1 or targets.ndim < 1 or inputs.shape[0] != 2 or targets.shape[0] != 2:
        raise ValueError(f"Need exactly two points, got inputs {inputs.shape} and targets {targets.shape}.")
    encoder, decoder = _split(model, layer)
    rates = _rates_jit(encoder, decoder, inputs, targets)
    values = concrete_array(jnp.stack([rates.kappa_e, rates.kappa_d, rates.kappa_mean, rates.h]))
    if values is not None and not np.all(np.isfinite(values)):
        raise ValueError(
            f"Non-finite tangent kernels (κ_e, κ_d, κ̄, h = {values}); check the parameters and data."
        )
    if values is not None and values[3] == 0:
        raise ValueError("The two hidden representations coincide (h = 0): η_y = κ_d/(2h) is undefined.")
    return rates


class RatesObserver(eqx.Module):
    """Observes the instantaneous rates along a flow: `eta_h`, `eta_y`, `eta_mean` (`κ_e(t)/(2·dx2)`,
    `κ_d(t)/(2·h(t))`, `κ̄(t)/4`), the alignment `cos_theta` (|cos θ| between `dh` and the decoder's
    gradient direction, `EffectiveRates.cos_theta`), `decoder_sq_norm` and the two-point `h, y, w, m` and `loss` of `layer`.

    Pass as `observe=` to `gradient_flow` or `gradient_descent`; costs four VJPs per observation.
    """

    layer: int = eqx.field(static=True)

    def __check_init__(self):
        check_layer(self.layer)

    def __call__(self, model, inputs, targets) -> dict[str, Array]:
        outputs, hiddens = jax.vmap(model)(inputs)
        hidden = hidden_at(hiddens, self.layer)
        encoder, decoder = _split(model, self.layer)
        rates = _rates(encoder, decoder, inputs, targets)
        h, y, w, m = two_point_observables(inputs, targets, hidden, outputs)
        loss = squared_error_loss(outputs, targets)
        return {"eta_h": rates.eta_h, "eta_y": rates.eta_y, "eta_mean": rates.eta_mean,
                "cos_theta": rates.cos_theta, "decoder_sq_norm": rates.decoder_sq_norm, "h": h, "y": y, "w": w, "m": m, "loss": loss}
