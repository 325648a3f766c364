"""flowsolve.ensemble_flow: many flows as one ODE, each as accurate as alone, failures per member."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsolve as fs
import models

from .helpers import assert_tree_allclose

INPUTS, TARGETS = fs.experiments.two_point_data(x0=-0.5)
TS = jnp.linspace(0.0, 3.0, 7)


def _nets(seeds, width=6, dtype=jnp.float64):
    make = lambda s: models.MLP(1, 1, width, 3, activation="tanh", key=jax.random.key(s))  # noqa: E731
    nets = eqx.filter_vmap(make)(jnp.asarray(seeds))
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, nets)


def test_members_equal_their_own_flows():
    sol = fs.ensemble_flow(_nets([0, 1, 2]), INPUTS, TARGETS, 3.0, ts=TS, layer=1, rtol=1e-9, atol=1e-12)
    assert sol.observed["h"].shape == (3, 7) and sol.result._value.shape == (3,)
    assert bool(jnp.all(sol.result == fs.RESULTS.successful))
    for i, seed in enumerate([0, 1, 2]):
        net = models.MLP(1, 1, 6, 3, activation="tanh", key=jax.random.key(seed))
        one = fs.gradient_flow(net, INPUTS, TARGETS, 3.0, ts=TS, layer=1, rtol=1e-9, atol=1e-12)
        # Different step sequences, each within rtol 1e-9 per step: agreement to ~1e-7 relative.
        assert_tree_allclose({k: v[i] for k, v in sol.observed.items()}, one.observed, rtol=1e-6, atol=1e-10)
        # The lockstep ensemble takes at least as many steps as any member alone.
        assert int(sol.stats["num_steps"]) >= int(one.stats["num_steps"])


def test_data_batched_and_jit():
    x = jnp.stack([INPUTS, 2 * INPUTS])
    y = jnp.stack([TARGETS, TARGETS])
    run = jax.jit(lambda n: fs.ensemble_flow(n, x, y, 1.0, ts=TS[:3], layer=1, data_batched=True,
                                             rtol=1e-9, atol=1e-12).observed["h"])
    h = run(_nets([0, 0]))
    net = models.MLP(1, 1, 6, 3, activation="tanh", key=jax.random.key(0))
    one = fs.gradient_flow(net, 2 * INPUTS, TARGETS, 1.0, ts=TS[:3], layer=1, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(h[1], one.observed["h"], rtol=1e-6)
    assert not np.allclose(h[0], h[1])  # the geometry changed the second member only


def test_float32():
    sol = fs.ensemble_flow(_nets([0, 1], dtype=jnp.float32), INPUTS.astype(jnp.float32),
                           TARGETS.astype(jnp.float32), 1.0, ts=TS[:3], layer=1, rtol=1e-5, atol=1e-7)
    assert sol.observed["h"].dtype == jnp.float32
    assert bool(jnp.all(sol.result == fs.RESULTS.successful))


class Scalar(eqx.Module):
    a: jax.Array

    def __call__(self, x):
        return self.a * x, (self.a * x,)


def _loss_nan_above_two(model, inputs, targets):
    # A well-posed loss for a < 2; NaN (as if the member had diverged) for a > 2.
    return 0.5 * jnp.mean((model.a * inputs - targets) ** 2) + jnp.sqrt(2.0 - model.a)


@pytest.mark.parametrize("solver", [None, fs.RKC()], ids=["Tsit5", "RKC"])
def test_a_failing_member_is_flagged_and_the_others_go_on(solver):
    members = Scalar(jnp.array([0.5, 3.0, 1.0]))
    x, y = jnp.array([[1.0], [2.0]]), jnp.array([[1.0], [2.0]])
    sol = fs.ensemble_flow(members, x, y, 2.0, ts=TS[:5], observe={"a": lambda m, i, t: m.a},
                           loss=_loss_nan_above_two, rtol=1e-9, atol=1e-12, throw=False, solver=solver)
    assert list(np.asarray(sol.result == fs.RESULTS.successful)) == [True, False, True]
    assert int(sol.result._value[1]) == int(fs.RESULTS.nonfinite_state._value)
    for i in (0, 2):
        one = fs.gradient_flow(Scalar(members.a[i]), x, y, 2.0, ts=TS[:5], observe={"a": lambda m, i, t: m.a},
                               loss=_loss_nan_above_two, rtol=1e-12, atol=1e-14)
        # RKC's global error at rtol 1e-9 is ∝ rtol^(2/3): 1e-6.
        np.testing.assert_allclose(sol.observed["a"][i], one.observed["a"], rtol=1e-7 if solver is None else 1e-6)
    with pytest.raises(RuntimeError, match="1 of 3 members failed.*member 1"):
        fs.ensemble_flow(members, x, y, 2.0, ts=TS[:5], loss=_loss_nan_above_two,
                         observe={"a": lambda m, i, t: m.a})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"t1": -1.0}, "t1"),
        ({"max_steps": 0}, "max_steps"),
        ({"data_batched": True}, "leading ensemble axis of size 3"),
        ({"ts": jnp.array([0.0, 5.0])}, "lie in"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"t1": 1.0, **kwargs}
    t1 = args.pop("t1")
    with pytest.raises(ValueError, match=match):
        fs.ensemble_flow(_nets([0, 1, 2]), INPUTS, TARGETS, t1, **args)


def test_models_without_a_common_leading_axis_are_refused():
    net = models.MLP(1, 1, 6, 3, activation="tanh", key=jax.random.key(0))
    with pytest.raises(ValueError, match="same leading ensemble axis"):
        fs.ensemble_flow(net, INPUTS, TARGETS, 1.0)
