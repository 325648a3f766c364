"""The Runge–Kutta–Chebyshev solver: accuracy against closed forms, order, stiffness, derivatives,
its use by the flows, and its argument checks."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsolve as fs
import models
from flowsolve import RESULTS

from .helpers import assert_tree_allclose


# A stiff linear system with a real spectrum, like a gradient flow near a minimum: stiffness 1e4.
LAMBDAS = jnp.geomspace(0.1, 1000.0, 30)


def _decay(t, y, args):
    return -LAMBDAS * y


def _solve(solver, rtol, *, t1=5.0, controller=None, saveat=None):
    controller = diffrax.PIDController(rtol=rtol, atol=rtol * 1e-3) if controller is None else controller
    return diffrax.diffeqsolve(diffrax.ODETerm(_decay), solver, 0.0, t1, None, jnp.ones_like(LAMBDAS),
                              stepsize_controller=controller, max_steps=100_000,
                              saveat=saveat or diffrax.SaveAt(ts=jnp.linspace(0.0, t1, 11)))


def test_stiff_linear_system_matches_closed_form_in_few_steps():
    ts = jnp.linspace(0.0, 5.0, 11)
    exact = jnp.exp(-LAMBDAS[None] * ts[:, None])
    tight = _solve(fs.RKC(), 1e-7)
    # Saved through the cubic Hermite dense output, rtol 1e-7: global error measured 2.5e-7.
    np.testing.assert_allclose(tight.ys, exact, atol=1e-6, rtol=0)
    # At a loose tolerance Tsit5's steps are bounded by stability (h·λ_max ≤ 3.5: ≥ 1 400 steps to
    # t = 5, measured 1 425 + 355 rejected); RKC's are not (measured 155 + 3).
    loose = _solve(fs.RKC(), 1e-3)
    tsit5 = _solve(diffrax.Tsit5(), 1e-3)
    assert int(tsit5.stats["num_steps"]) > 1400
    assert int(loose.stats["num_steps"]) < 200
    np.testing.assert_allclose(loose.ys, exact, atol=1e-3, rtol=0)


def test_second_order_at_constant_steps():
    # Logistic growth y' = y(1 − y), closed form; halving the step divides the error by ≈ 4.
    term = diffrax.ODETerm(lambda t, y, args: y * (1 - y))
    exact = 1 / (1 + 9 * np.exp(-2.0))
    errors = []
    for n in (20, 40, 80):
        sol = diffrax.diffeqsolve(term, fs.RKC(), 0.0, 2.0, 2.0 / n, jnp.asarray(0.1),
                                  stepsize_controller=diffrax.ConstantStepSize())
        errors.append(abs(float(sol.ys[-1]) - exact))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 1.8) & (orders < 2.3)), orders


def test_stage_cap_rejects_unstable_steps_without_losing_accuracy():
    # With at most 2 stages the stability interval is h·ρ ≤ 2: steps beyond it are refused (an
    # infinite error estimate, no evaluations), the controller shrinks them, the answer stays right.
    ts = jnp.linspace(0.0, 1.0, 11)
    sol = _solve(fs.RKC(max_stages=2), 1e-5, t1=1.0)
    np.testing.assert_allclose(sol.ys, jnp.exp(-LAMBDAS[None] * ts[:, None]), atol=1e-4, rtol=0)
    assert int(sol.stats["num_steps"]) > 1.0 * float(LAMBDAS[-1]) / 2.5  # stability-limited
    assert sol.result == diffrax.RESULTS.successful


def test_reverse_mode_derivatives():
    lam = jnp.geomspace(0.1, 100.0, 10)

    def final(k, adjoint):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: -a * lam * y), fs.RKC(), 0.0, 2.0, None,
                                  jnp.ones(10), args=k, adjoint=adjoint, max_steps=100_000,
                                  stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-11))
        return jnp.sum(sol.ys[-1])

    exact = jax.grad(lambda k: jnp.sum(jnp.exp(-k * lam * 2.0)))(1.0)
    np.testing.assert_allclose(jax.grad(final)(1.0, diffrax.RecursiveCheckpointAdjoint()), exact, rtol=1e-6)


def test_dense_output_is_the_cubic_hermite_interpolant():
    """RKC's lazily evaluated dense output equals diffrax's cubic Hermite interpolation (which
    precomputes its coefficients) to rounding, on a pytree state, for points and for increments."""
    from flowsolve._rkc import _HermiteInterpolation

    keys = jax.random.split(jax.random.key(3), 4)
    y0, y1, f0, f1 = ({"a": jax.random.normal(k, (3, 2)), "b": jax.random.normal(k, (4,)) ** 2} for k in keys)
    t0, t1 = jnp.asarray(0.3), jnp.asarray(1.1)
    ours = _HermiteInterpolation(t0=t0, t1=t1, y0=y0, y1=y1, f0=f0, f1=f1)
    k0, k1 = (jax.tree.map(lambda f: (t1 - t0) * f, f) for f in (f0, f1))
    theirs = diffrax.ThirdOrderHermitePolynomialInterpolation(t0=t0, t1=t1, y0=y0, y1=y1, k0=k0, k1=k1)
    for t in (0.3, 0.45, 0.7, 1.1):
        for a, b in zip(jax.tree.leaves(ours.evaluate(t)), jax.tree.leaves(theirs.evaluate(t))):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)
    # (diffrax's own increment form does not take dict states: `evaluate(t1) - evaluate(t0)` on dicts)
    increment = jax.tree.map(lambda a, b: a - b, theirs.evaluate(0.9), theirs.evaluate(0.4))
    for a, b in zip(jax.tree.leaves(ours.evaluate(0.4, 0.9)), jax.tree.leaves(increment)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(jax.tree.leaves(ours.evaluate(t1)), jax.tree.leaves(y1)):  # the end points exactly
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)


def test_gradient_evaluations_are_counted():
    # The solver counts its own evaluations (stages, end point, power iterations); check it against
    # a counter in the vector field on a run without rejected steps.
    count = [0]

    def vf(t, y, args):
        jax.debug.callback(lambda: count.__setitem__(0, count[0] + 1))
        return -LAMBDAS * y

    sol = diffrax.diffeqsolve(diffrax.ODETerm(vf), fs.RKC(), 0.0, 1.0, 0.01, jnp.ones_like(LAMBDAS),
                              stepsize_controller=diffrax.ConstantStepSize(),
                              saveat=diffrax.SaveAt(t1=True, solver_state=True))
    jax.block_until_ready(sol.ys)
    assert int(sol.stats["num_rejected_steps"]) == 0
    assert int(sol.solver_state.evaluations) == count[0]
    # h·ρ = 10 here (ρ = λ_max = 1 000): s = 1 + ⌊√(1 + 1.54·10·1.2)⌋ = 5 stages per step.
    np.testing.assert_allclose(float(sol.solver_state.mean_stages()), 5.0)


def _tanh_net(key, width=8, depth=3):
    return models.MLP(1, 1, width, depth, "tanh", gain=1.2, key=key)


def test_flows_with_rkc_agree_with_tsit5_and_ensemble_members_with_the_converged_flow():
    x, y = fs.experiments.two_point_data(x0=-0.5)
    keys = jax.random.split(jax.random.key(3), 2)
    ts = jnp.linspace(0.0, 3.0, 7)
    nets = eqx.filter_vmap(_tanh_net)(keys)
    # A second-order method with per-step error control has a global error ∝ rtol^(2/3): at rtol
    # 1e-10 measured ≤ 3e-8 on these O(0.1–1) observables (w passes near 0: absolute tolerances).
    kwargs = dict(ts=ts, layer=1, solver=fs.RKC(), rtol=1e-10, atol=1e-12, max_steps=100_000)
    ens = fs.ensemble_flow(nets, x, y, 3.0, **kwargs)
    for i, key in enumerate(keys):
        rkc = fs.gradient_flow(_tanh_net(key), x, y, 3.0, **kwargs)
        converged = fs.gradient_flow(_tanh_net(key), x, y, 3.0, ts=ts, layer=1, rtol=1e-12, atol=1e-14)
        for k in ("h", "y", "w", "loss"):
            np.testing.assert_allclose(rkc.observed[k], converged.observed[k], rtol=0, atol=2e-7)
            np.testing.assert_allclose(ens.observed[k][i], converged.observed[k], rtol=0, atol=2e-7)
    assert bool(jnp.all(ens.result == RESULTS.successful))
    assert int(ens.stats["gradient_evaluations"]) > 2 * int(ens.stats["num_accepted_steps"])


def test_vmap_over_keys_equals_loop_and_float32():
    # The settings of the test above, so that the single RKC runs and the converged flow are the
    # programs it compiled; only the vmapped and the float32 flows are new.
    x, y = fs.experiments.two_point_data(x0=-0.5)
    keys = jax.random.split(jax.random.key(3), 2)
    ts = jnp.linspace(0.0, 3.0, 7)
    kwargs = dict(ts=ts, layer=1, solver=fs.RKC(), rtol=1e-10, atol=1e-12, max_steps=100_000)
    batched = eqx.filter_vmap(lambda k: fs.gradient_flow(_tanh_net(k), x, y, 3.0, **kwargs, throw=False))(keys)
    for i, key in enumerate(keys):
        single = fs.gradient_flow(_tanh_net(key), x, y, 3.0, **kwargs)
        assert_tree_allclose({k: v[i] for k, v in batched.observed.items()}, single.observed, rtol=1e-6, atol=1e-10)
    model32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a,
                                     _tanh_net(keys[0]))
    sol32 = fs.gradient_flow(model32, x.astype(jnp.float32), y.astype(jnp.float32), 3.0, ts=ts, layer=1,
                             solver=fs.RKC(), rtol=1e-5, atol=1e-7)
    assert sol32.observed["h"].dtype == jnp.float32
    reference = fs.gradient_flow(_tanh_net(keys[0]), x, y, 3.0, ts=ts, layer=1, rtol=1e-12, atol=1e-14)
    # A second-order method's global error is well above rtol (float32 at rtol 1e-5: 4e-4 relative
    # measured on a shorter run of this network): 1e-3 relative to the converged flow.
    for k in ("h", "y", "loss"):
        np.testing.assert_allclose(sol32.observed[k], reference.observed[k], rtol=1e-3, atol=1e-5)


def test_early_stop_and_failure_reports_with_rkc():
    model = _tanh_net(jax.random.key(5))
    x, y = fs.experiments.two_point_data(x0=-0.5)
    sol = fs.gradient_flow(model, x, y, 50.0, layer=1, loss_threshold=1e-4, solver=fs.RKC())
    assert 0 < float(sol.stats["t_final"]) < 50.0
    assert float(fs.mse_loss(sol.model, x, y)) < 1e-4
    with pytest.raises(RuntimeError, match=r"failed at t = .*maximum number of solver steps"):
        fs.gradient_flow(model, x, y, 5.0, layer=1, max_steps=3, solver=fs.RKC())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_stages=1), "max_stages"),
        (dict(max_stages=3.0), "max_stages"),
        (dict(damping=1.0), "damping"),
        (dict(damping=-0.1), "damping"),
        (dict(safety=0.5), "safety"),
        (dict(refresh_every=0), "refresh_every"),
        (dict(initial_iterations=0), "initial_iterations"),
        (dict(refresh_iterations=2.5), "refresh_iterations"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fs.RKC(**kwargs)
