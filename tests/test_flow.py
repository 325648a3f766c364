"""Exact gradient flow, gradient descent, architectures, and the experiments table."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings, strategies as st

import flowsolve as fs
import models
from flowsolve import RESULTS

from .helpers import assert_tree_allclose


class LinearRegression(eqx.Module):
    weight: jax.Array

    def __call__(self, x):
        return self.weight @ x, ()


def _tsit5_evaluations(stats, evaluations):
    return evaluations == 6 * int(stats["num_steps"]) + 1  # seven stages, first same as last


def _bosh3_evaluations(stats, evaluations):
    return evaluations == 3 * int(stats["num_steps"]) + 1


def _rkc_evaluations(stats, evaluations):
    # Every accepted step takes >= 2 evaluations; the count also holds the 20 initial power iterations.
    return evaluations >= 2 * int(stats["num_accepted_steps"]) + 1 + 20


@pytest.mark.parametrize(
    "options, evaluations",
    [
        (dict(rtol=1e-11, atol=1e-13), _tsit5_evaluations),
        # The PI controller and a third-order solver: the cheap choice at ~1 % accuracy on deep smooth networks.
        (dict(rtol=1e-10, atol=1e-12, pcoeff=0.4, icoeff=0.3, solver=diffrax.Bosh3(), max_steps=100_000),
         _bosh3_evaluations),
        (dict(rtol=1e-10, atol=1e-12, solver=fs.RKC(), max_steps=200_000), _rkc_evaluations),
    ],
    ids=["tsit5", "pi-bosh3", "rkc"],
)
def test_linear_regression_matches_closed_form(options, evaluations):
    """The flow of linear regression, θ(t) = θ* + exp(−tXᵀX/n)(θ0 − θ*), to 1e-7 with each solver, and
    the gradient evaluations each solver is known to take."""
    rng = np.random.default_rng(0)
    n, d = 6, 3
    X = rng.normal(size=(n, d))
    y = rng.normal(size=(n, 1))
    theta0 = rng.normal(size=(1, d))
    ts = np.linspace(0.0, 3.0, 7)
    sol = fs.gradient_flow(LinearRegression(jnp.asarray(theta0)), X, y, 3.0, ts=ts,
                           observe={"theta": lambda m, i, t: m.weight[0]}, **options)
    theta_star = np.linalg.lstsq(X, y[:, 0], rcond=None)[0]
    A = X.T @ X / n
    for t, theta in zip(ts, np.asarray(sol.observed["theta"])):
        expected = theta_star + scipy.linalg.expm(-t * A) @ (theta0[0] - theta_star)
        np.testing.assert_allclose(theta, expected, atol=1e-7, rtol=0)
    np.testing.assert_allclose(sol.model.weight[0], sol.observed["theta"][-1])
    assert evaluations(sol.stats, int(sol.stats["gradient_evaluations"])), sol.stats


@pytest.mark.parametrize("width, depth, activation", [(3, 2, "tanh"), (5, 1, "silu"), (5, 2, "elu")])
@settings(max_examples=3, deadline=None)  # each architecture compiles once; its examples vary weights and data
@given(seed=st.integers(0, 2**16))
def test_loss_is_nonincreasing(width, depth, activation, seed):
    key = jax.random.key(seed)
    model = models.MLP(2, 1, width, depth, activation, gain=1.2, key=key)
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(3, 2)), rng.normal(size=(3, 1))
    sol = fs.gradient_flow(model, X, Y, 5.0, ts=np.linspace(0, 5.0, 51), rtol=1e-9, atol=1e-11,
                           observe={"loss": fs.mse_loss})
    loss = np.asarray(sol.observed["loss"])
    # L is a Lyapunov function: dL/dt = −‖∇L‖² ≤ 0; allow the solver's error (≈ rtol·L).
    assert np.all(np.diff(loss) <= 1e-8 * loss[:-1] + 1e-14)


def test_loss_is_nonincreasing_piecewise_linear():
    # Kinks make the vector field discontinuous: the solver needs a looser tolerance (rtol 1e-6
    # took ~10⁴ steps here; 1e-9 ran out of 10⁵), and the loss still never increases beyond it.
    model = models.MLP(2, 1, 5, 2, "leaky_relu", gain=1.2, key=jax.random.key(0))
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(3, 2)), rng.normal(size=(3, 1))
    sol = fs.gradient_flow(model, X, Y, 5.0, ts=np.linspace(0, 5.0, 51), rtol=1e-6, atol=1e-9,
                           observe={"loss": fs.mse_loss})
    loss = np.asarray(sol.observed["loss"])
    assert np.all(np.diff(loss) <= 1e-5 * loss[:-1] + 1e-12)


def _smooth_setup():
    key = jax.random.key(3)
    model = models.MLP(1, 1, 8, 2, "tanh", gain=1.0, key=key)
    x, y = fs.experiments.two_point_data(x0=-0.5)
    return model, x, y


def test_gradient_descent_approaches_flow_linearly_in_lr():
    model, x, y = _smooth_setup()
    t1 = 2.0
    flow = fs.gradient_flow(model, x, y, t1, ts=[t1], layer=1, rtol=1e-11, atol=1e-13)
    gaps = []
    for lr in (0.04, 0.02, 0.01, 0.005):
        gd = fs.gradient_descent(model, x, y, lr, int(round(t1 / lr)), layer=1, every=int(round(t1 / lr)))
        assert float(gd.ts[-1]) == pytest.approx(t1)
        gaps.append(max(abs(float(gd.observed[k][-1] - flow.observed[k][-1])) for k in ("h", "y", "w", "loss")))
    ratios = np.array(gaps[:-1]) / np.array(gaps[1:])
    # First-order method: halving lr halves the gap (Euler's global error is O(lr)).
    np.testing.assert_allclose(ratios, 2.0, rtol=0.15)


@pytest.mark.parametrize(
    "build, n_hidden, hidden_shape",
    [
        (lambda k: models.MLP(3, 2, 16, 4, "relu", key=k), 4, (16,)),
        (lambda k: models.ResMLP(3, 2, 16, 4, gain=0.1, key=k), 4, (16,)),
        (lambda k: models.CNN1d(3, 2, 16, 3, kernel_size=5, channels=4, key=k), 3, (4, 16)),
        (lambda k: models.DeepLinear(3, 2, 16, 4, key=k), 4, (16,)),
    ],
)
def test_architecture_shapes(build, n_hidden, hidden_shape):
    model = build(jax.random.key(0))
    out, hiddens = model(jnp.ones(3))
    assert out.shape == (2,)
    assert len(hiddens) == n_hidden
    assert all(h.shape == hidden_shape for h in hiddens)


@pytest.mark.parametrize("gain", [0.5, 1.0, 1.7])
def test_xavier_init_statistics(gain):
    model = models.MLP(300, 1, 300, 2, gain=gain, key=jax.random.key(1))
    w = np.asarray(model.layers[1].weight)  # 300 × 300
    expected = gain * np.sqrt(2.0 / 600)
    # 90 000 samples: the empirical std has relative standard error 1/sqrt(2·90 000) ≈ 0.24 %.
    assert np.std(w) == pytest.approx(expected, rel=0.01)
    assert np.all(np.asarray(model.layers[1].bias) == 0)
    conv = models.CNN1d(1, 1, 50, 2, gain=gain, key=jax.random.key(2)).convs[1].weight  # 20 × 20 × 11
    assert np.std(np.asarray(conv)) == pytest.approx(gain * np.sqrt(2.0 / (2 * 20 * 11)), rel=0.05)


def test_kink_convention_matches_pytorch():
    from models._init import leaky_relu, relu

    assert float(jax.grad(leaky_relu)(0.0)) == pytest.approx(0.01)
    assert float(jax.grad(relu)(0.0)) == 0.0


def test_vmap_over_keys_equals_loop():
    x, y = fs.experiments.two_point_data(x0=-0.5)
    keys = jax.random.split(jax.random.key(0), 3)
    ts = jnp.linspace(0.0, 1.0, 5)

    @eqx.filter_jit
    def run(key):
        return fs.gradient_flow(models.MLP(1, 1, 8, 3, "tanh", key=key), x, y, 1.0, ts=ts, layer=1, throw=False)

    batched = eqx.filter_vmap(run)(keys)
    for i, key in enumerate(keys):
        single = fs.gradient_flow(models.MLP(1, 1, 8, 3, "tanh", key=key), x, y, 1.0, ts=ts, layer=1)
        assert_tree_allclose({k: v[i] for k, v in batched.observed.items()}, single.observed, rtol=1e-6, atol=1e-10)
    assert np.all(np.asarray(batched.result == RESULTS.successful))


def test_float32_close_to_float64():
    model64, x, y = _smooth_setup()
    model32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, model64)
    sol64 = fs.gradient_flow(model64, x, y, 2.0, layer=1, rtol=1e-8, atol=1e-10)
    sol32 = fs.gradient_flow(model32, x.astype(jnp.float32), y.astype(jnp.float32), 2.0, layer=1, rtol=1e-5, atol=1e-7)
    assert sol32.observed["h"].dtype == jnp.float32
    # float32 at rtol 1e-5 on a smooth network: agreement to 1e-4 relative on O(1) observables.
    for k in ("h", "y", "loss"):
        np.testing.assert_allclose(sol32.observed[k], sol64.observed[k], rtol=1e-4, atol=1e-5)


def test_early_stop_on_loss_threshold():
    model, x, y = _smooth_setup()
    sol = fs.gradient_flow(model, x, y, 50.0, layer=1, loss_threshold=1e-4)
    t_final = float(sol.stats["t_final"])
    assert 0 < t_final < 50.0
    reached = np.isfinite(np.asarray(sol.observed["loss"]))
    assert reached[0] and not reached[-1]
    assert float(fs.mse_loss(sol.model, x, y)) < 1e-4


def test_flow_failure_raises_with_time_and_flags_under_vmap():
    model, x, y = _smooth_setup()
    with pytest.raises(RuntimeError, match=r"failed at t = .*maximum number of solver steps"):
        fs.gradient_flow(model, x, y, 5.0, layer=1, max_steps=3)
    sol = fs.gradient_flow(model, x, y, 5.0, layer=1, max_steps=3, throw=False)
    assert sol.result == RESULTS.max_steps_reached
    assert float(sol.stats["t_final"]) < 5.0


def test_diverging_descent_is_reported():
    model, x, y = _smooth_setup()
    big = models.MLP(1, 1, 8, 2, "leaky_relu", gain=3.0, key=jax.random.key(0))
    with pytest.raises(RuntimeError, match="gradient descent failed at t ="):
        fs.gradient_descent(big, x, y, 50.0, 200, layer=1)
    sol = fs.gradient_descent(big, x, y, 50.0, 200, layer=1, throw=False)
    assert sol.result == RESULTS.nonfinite_state
    assert np.isfinite(float(sol.stats["t_final"]))


def test_gradient_descent_with_adam_and_every():
    model, x, y = _smooth_setup()
    import optax

    sol = fs.gradient_descent(model, x, y, 0.01, 105, optimizer=optax.adam(0.01), every=10, layer=1)
    assert sol.ts.shape == (11,)
    np.testing.assert_allclose(sol.ts, 0.1 * np.arange(11))
    assert float(sol.observed["loss"][-1]) < float(sol.observed["loss"][0])


class NoParams(eqx.Module):
    def __call__(self, x):
        return x, ()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, y: fs.gradient_flow(lambda z: (z, ()), x, y, 1.0), "Equinox module"),
        (lambda m, x, y: fs.gradient_flow(NoParams(), x, y, 1.0), "no inexact"),
        (lambda m, x, y: fs.gradient_flow(m, jnp.ones((2, 3)), y, 1.0), "do not fit the model"),
        (lambda m, x, y: fs.gradient_flow(m, x, jnp.ones((2, 2)), 1.0), "output has shape"),
        (lambda m, x, y: fs.gradient_flow(m, x, jnp.ones((3, 1)), 1.0), "same leading"),
        (lambda m, x, y: fs.gradient_flow(m, x, y, 1.0, layer=2), "layer"),
        (lambda m, x, y: fs.gradient_flow(m, x, y, 1.0, layer=True), "`layer` must be an int"),
        (lambda m, x, y: fs.gradient_flow(m, x, y, 1.0, layer=0, observe={"loss": fs.mse_loss}), "not both"),
        (lambda m, x, y: fs.gradient_flow(m, x, y, 1.0, observe=fs.TwoPointObserver(5)), "`layer` 5 is out of range"),
        (lambda m, x, y: fs.TwoPointObserver("0"), "`layer` must be an int"),
        (lambda m, x, y: fs.gradient_flow(m, x, y, 0.0), "t1"),
        (lambda m, x, y: fs.gradient_flow(m, x, y, 1.0, ts=[0.0, 2.0]), "ts"),
        (lambda m, x, y: fs.gradient_flow(m, jnp.full((2, 1), jnp.nan), y, 1.0), "finite"),
        (lambda m, x, y: fs.gradient_flow(eqx.tree_at(lambda n: n.readout.bias, m, jnp.array([jnp.nan])), x, y, 1.0),
         "non-finite parameters"),
        (lambda m, x, y: fs.gradient_flow(m, x, y, 1.0, rtol=0.0), "rtol"),
        (lambda m, x, y: fs.gradient_flow(m, x, y, 1.0, atol=-1e-9), "atol"),
        (lambda m, x, y: fs.gradient_flow(m, x, y, 1.0, pcoeff=-0.1), "pcoeff"),
        (lambda m, x, y: fs.gradient_flow(m, x, y, 1.0, icoeff=0.0), "icoeff"),
        (lambda m, x, y: fs.ensemble_flow(jax.tree_util.tree_map(lambda a: a[None], m), x, y, 1.0, icoeff=float("nan")),
         "icoeff"),
        (lambda m, x, y: fs.gradient_descent(m, x, y, 0.0, 10), "lr"),
        (lambda m, x, y: fs.gradient_descent(m, x, y, 0.1, 0), "steps"),
        (lambda m, x, y: fs.gradient_descent(m, x, y, 0.1, 10, every=0), "every"),
    ],
)
def test_bad_flow_inputs(call, match):
    model, x, y = _smooth_setup()
    with pytest.raises(ValueError, match=match):
        call(model, x, y)


def test_old_observer_spellings_name_the_new_ones():
    with pytest.raises(AttributeError, match=r"now spelled `flowsolve.TwoPointObserver\(layer\)`"):
        fs.two_point_observer(1)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        fs.no_such_name  # noqa: B018


class ScaledByList(eqx.Module):
    """A model with an unhashable static field: its output shapes cannot be cached."""

    weight: jax.Array
    scales: list = eqx.field(static=True)

    def __call__(self, x):
        return self.weight * x * self.scales[0], ()


def test_output_shape_check_is_cached_by_structure_and_still_checks():
    from flowsolve._flow import _output_shapes_cached

    model, x, y = _smooth_setup()
    fs.gradient_flow(model, x, y, 0.01)
    before = _output_shapes_cached.cache_info()
    other = models.MLP(1, 1, 8, 2, "tanh", gain=1.0, key=jax.random.key(7))  # same structure, new values
    fs.gradient_flow(other, x, y, 0.01)
    after = _output_shapes_cached.cache_info()
    assert after.hits == before.hits + 1 and after.currsize == before.currsize
    # A different width is a different structure: checked afresh, its wrong targets still caught.
    wide = models.MLP(1, 1, 5, 2, activation="tanh", key=jax.random.key(7))
    with pytest.raises(ValueError, match="output has shape"):
        fs.gradient_flow(wide, x, jnp.ones((2, 2)), 0.01)
    with pytest.raises(ValueError, match="do not fit the model"):  # twice: errors are never cached
        fs.gradient_flow(other, jnp.ones((2, 3)), y, 0.01)
    with pytest.raises(ValueError, match="do not fit the model"):
        fs.gradient_flow(other, jnp.ones((2, 3)), y, 0.01)
    # An unhashable static part: traced each time, same answer.
    odd = ScaledByList(jnp.ones(1), [2.0])
    sol = fs.gradient_flow(odd, x, 2.0 * x, 1.0, ts=[0.0, 1.0])
    assert sol.result == RESULTS.successful


def test_experiments_table():
    for name, row in fs.experiments.SETTINGS.items():
        width = 64 if row.model == "ValidCNN1d" else 12  # four valid 11-wide convolutions need > 40
        exp = fs.experiments.two_points(name, key=jax.random.key(0), width=width, depth=min(row.depth, 3))
        out, hiddens = eqx.filter_eval_shape(lambda m, x: m(x), exp.model, exp.inputs[0])
        assert out.shape == (1,)
        assert 0 <= exp.layer < len(hiddens)
        assert exp.t1 == pytest.approx(row.lr * row.epochs)
    full = fs.experiments.two_points("default", key=jax.random.key(0))
    assert (full.layer, len(full.model.layers), full.model.layers[0].weight.shape[0]) == (10, 20, 500)
    np.testing.assert_allclose(full.inputs, [[-1.0], [0.0]])
    np.testing.assert_allclose(full.targets, [[0.6], [0.6 + np.sqrt(0.5)]])
    x, y = fs.experiments.two_point_data(2.0, 0.5, in_size=4, out_size=3)
    assert float(jnp.sum((x[1] - x[0]) ** 2)) == pytest.approx(2.0)
    assert float(jnp.sum((y[1] - y[0]) ** 2)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="dx2"):
        fs.experiments.two_point_data(0.0, 0.5)
    with pytest.raises(ValueError, match="Unknown setting"):
        fs.experiments.two_points("nope", key=jax.random.key(0))


def test_authors_architectures():
    """The skip, CNN and dropout networks as van Rossem & Saxe define them (their `models.py`)."""
    key = jax.random.key(3)
    x = jnp.array([0.7])
    # Skip: h_n = act(W_n h_{n-1} + b_n) + h_{n-2} from n = 2 on.
    net = models.SkipMLP(1, 1, 6, 5, activation="tanh", key=key)
    _, hid = net(x)
    act = jnp.tanh
    h0 = act(net.layers[0](x))
    h1 = act(net.layers[1](h0))
    h2 = act(net.layers[2](h1)) + h0
    h3 = act(net.layers[3](h2)) + h1
    for got, want in zip(hid, (h0, h1, h2, h3)):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    # CNN: linear → valid convs (1 → C, C → C, …, C → 1), every layer activated, linear read-out.
    cnn = models.ValidCNN1d(1, 1, 60, 3, kernel_size=5, channels=4, key=key)
    out, hid = cnn(x)
    assert [h.shape for h in hid] == [(60,), (4, 56), (4, 52), (4, 48), (1, 44)]
    assert cnn.readout.weight.shape == (1, 44)
    assert out.shape == (1,)
    # The authors' size, by shapes only (building and calling it eagerly costs seconds of dispatch).
    full = eqx.filter_eval_shape(fs.experiments.two_points, "cnn", key=key)
    _, hid = eqx.filter_eval_shape(lambda m, x: m(x[0]), full.model, full.inputs)
    assert len(hid) == 12 and hid[full.layer].shape == (20, 450)  # the authors' layer 5: the fifth convolution
    with pytest.raises(ValueError, match="too short"):
        models.ValidCNN1d(1, 1, 40, 3, key=key)
    # Dropout: deterministic without a key (= the MLP with the same weights), masks with one.
    drop = models.DropoutMLP(1, 1, 50, 3, p=0.5, key=key)
    mlp = models.MLP(1, 1, 50, 3, key=key)
    np.testing.assert_allclose(drop(x)[0], mlp(x)[0], rtol=1e-12)
    a, b = drop(x, key=jax.random.key(1))[1][1], drop(x, key=jax.random.key(2))[1][1]
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="`p`"):
        models.DropoutMLP(1, 1, 5, 2, p=1.0, key=key)
    assert fs.experiments.SETTINGS["dropout"].layer == 2


def test_gradient_descent_stochastic_and_adam():
    exp = fs.experiments.two_points("dropout", key=jax.random.key(0), width=16, depth=3, layer=1)
    runs = [fs.gradient_descent(exp.model, exp.inputs, exp.targets, 0.05, 40, layer=1, key=jax.random.key(k))
            for k in (1, 1, 2)]
    np.testing.assert_array_equal(runs[0].observed["h"], runs[1].observed["h"])  # same key, same masks
    assert not np.allclose(runs[0].observed["h"], runs[2].observed["h"])
    plain = fs.gradient_descent(exp.model, exp.inputs, exp.targets, 0.05, 40, layer=1)
    assert not np.allclose(plain.observed["h"], runs[0].observed["h"])
    with pytest.raises(ValueError, match="`key`"):
        fs.gradient_descent(exp.model, exp.inputs, exp.targets, 0.05, 4, key=3)
    adam = fs.experiments.two_points("adam", key=jax.random.key(0), width=16, depth=3)
    assert adam.setting.optimizer == "adam" and adam.optimizer is not None
    gd = fs.gradient_descent(adam.model, adam.inputs, adam.targets, 1e-3, 50, layer=1, optimizer=adam.optimizer)
    assert gd.observed["loss"][-1] < gd.observed["loss"][0]
    assert set(fs.experiments.PAPER_ROWS) >= {"gain_0.9", "gain_1.1", "gain_1.2", "gain_1.3", "gain_1.4", "gain_1.6",
                                              "adam", "dropout", "skip", "cnn"}
    assert fs.experiments.SETTINGS["gain_1.2"].lr == 0.0025 and fs.experiments.SETTINGS["gain_1.6"].lr == 3e-6
    f32 = fs.experiments.two_points("default", key=jax.random.key(0), width=8, dtype=jnp.float32)
    assert f32.model.layers[0].weight.dtype == jnp.float32 and f32.inputs.dtype == jnp.float32


def test_gradient_descent_divergence_after_the_last_observation_is_reported():
    # 99 steps observed every 100: no observation after t = 0 sees the diverged model.
    net = models.MLP(1, 1, 8, 2, key=jax.random.key(0))
    x, y = jnp.array([[-1.0], [0.0]]), jnp.array([[0.6], [1.3]])
    sol = fs.gradient_descent(net, x, y, 1e3, 99, every=100, throw=False)
    assert sol.result == RESULTS.nonfinite_state
    assert float(sol.stats["t_final"]) == 0.0
    with pytest.raises(RuntimeError, match="gradient descent failed"):
        fs.gradient_descent(net, x, y, 1e3, 99, every=100)
    ok = fs.gradient_descent(net, x, y, 1e-2, 99, every=100)
    assert ok.result == RESULTS.successful and float(ok.stats["t_final"]) == pytest.approx(0.99)


def test_kink_conventions():
    """PyTorch's convention (the left slope at exactly 0) and the right-slope variants."""
    x = jnp.array([-1.0, 0.0, 1.0])
    for name, slope0 in (("leaky_relu", 0.01), ("leaky_relu_right", 1.0), ("relu", 0.0), ("relu_right", 1.0)):
        f = models.ACTIVATIONS[name]
        grads = jax.vmap(jax.grad(f))(x)
        assert float(grads[1]) == slope0, name
        np.testing.assert_array_equal(f(x), models.ACTIVATIONS[name.removesuffix("_right")](x))
    exp = fs.experiments.two_points("default", key=jax.random.key(0), width=8, depth=2, activation="leaky_relu_right")
    assert exp.model.activation == "leaky_relu_right" and exp.setting.activation == "leaky_relu_right"


def test_minibatch_descent_is_shuffled_sgd_epoch_by_epoch():
    net = models.MLP(3, 2, 8, 2, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (10, 3))
    y = jax.random.normal(jax.random.key(2), (10, 2))
    obs = {"loss": fs.mse_loss}
    # Batches of 4 over 10 points: 4, 4, 2 per epoch, the order redrawn every epoch (PyTorch's
    # DataLoader(shuffle=True)); checked against the same updates written out by hand.
    sol = fs.gradient_descent(net, x, y, 0.1, 3, observe=obs, batches=fs.Minibatches(4, jax.random.key(5)))
    params, static = eqx.partition(net, eqx.is_inexact_array)
    order = jax.random.key(5)
    for _ in range(3):
        order, sub = jax.random.split(order)
        perm = np.asarray(jax.random.permutation(sub, 10))
        for idx in (perm[:4], perm[4:8], perm[8:]):
            g = jax.grad(lambda q: fs.mse_loss(eqx.combine(q, static), x[idx], y[idx]))(params)
            params = jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, params, g)
    assert float(fs.mse_loss(eqx.combine(params, static), x, y)) == pytest.approx(float(sol.observed["loss"][-1]),
                                                                                 rel=1e-12)
    # The clock counts updates: 3 per epoch.
    np.testing.assert_allclose(np.asarray(sol.ts), [0.0, 0.3, 0.6, 0.9])
    assert int(sol.stats["updates"]) == 9 and int(sol.stats["steps"]) == 3
    # A batch at least as large as the data set is full-batch descent.
    full = fs.gradient_descent(net, x, y, 0.1, 20, observe=obs, batches=fs.Minibatches(64, jax.random.key(3)))
    plain = fs.gradient_descent(net, x, y, 0.1, 20, observe=obs)
    np.testing.assert_allclose(np.asarray(full.observed["loss"]), np.asarray(plain.observed["loss"]), rtol=1e-10)
    with pytest.raises(ValueError, match="size"):
        fs.Minibatches(0, jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        fs.Minibatches(4, 3)
    with pytest.raises(ValueError, match="batches"):
        fs.gradient_descent(net, x, y, 0.1, 3, batches=4)


def test_progress_meter_reports_and_changes_nothing(capsys):
    import diffrax
    import equinox as eqx

    net, x, y = _smooth_setup()
    ts = np.linspace(0.0, 2.0, 5)
    plain = fs.gradient_flow(net, x, y, 2.0, ts=ts)  # the program of the tolerance test below
    shown = fs.gradient_flow(net, x, y, 2.0, ts=ts, progress_meter=diffrax.TextProgressMeter())
    assert "100.00%" in capsys.readouterr().out
    assert_tree_allclose(shown.observed, plain.observed)  # to the last bit
    nets = eqx.filter_vmap(lambda k: models.MLP(1, 1, 8, 2, "tanh", key=k))(jax.random.split(jax.random.key(1), 2))
    ens = fs.ensemble_flow(nets, x, y, 2.0, ts=ts, layer=1, progress_meter=diffrax.TextProgressMeter())
    assert "100.00%" in capsys.readouterr().out and ens.observed["h"].shape == (2, 5)


def test_other_tolerances_reuse_the_compiled_flow():
    """rtol, atol and loss_threshold are values inside the compiled flow: a convergence study compiles once."""
    from .helpers import CompileCounter

    model, x, y = _smooth_setup()
    ts = np.linspace(0.0, 2.0, 5)
    loose = fs.gradient_flow(model, x, y, 2.0, ts=ts, rtol=1e-4, atol=1e-6)
    with CompileCounter() as compiled:
        tight = fs.gradient_flow(model, x, y, 2.0, ts=ts, rtol=1e-8, atol=1e-10)
    assert compiled.count == 0
    assert int(tight.stats["num_steps"]) > int(loose.stats["num_steps"])
    early = fs.gradient_flow(model, x, y, 2.0, ts=ts, loss_threshold=1e-1)
    with CompileCounter() as compiled:
        earlier = fs.gradient_flow(model, x, y, 2.0, ts=ts, loss_threshold=2e-1)
    assert compiled.count == 0
    assert float(earlier.stats["t_final"]) <= float(early.stats["t_final"])
    with CompileCounter() as compiled:  # the counter sees a compilation (a program never built before)
        jax.jit(lambda v: v * 1.000123 + 0.5)(jnp.ones(37)).block_until_ready()
    assert compiled.count > 0
