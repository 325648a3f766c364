"""two_point_observables, pair_distances and predict_distances."""

import jax.numpy as jnp
import numpy as np
import pytest

from flowsolve import EffectiveTheory, pair_distances, predict_distances, two_point_observables


def test_two_point_observables_by_hand():
    x = np.array([[-1.0], [0.0]])
    y_target = np.array([[0.6], [0.6 + np.sqrt(0.5)]])
    hidden = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    y_pred = np.array([[0.1], [0.4]])
    h, y, w, m = two_point_observables(x, y_target, hidden, y_pred)
    assert float(h) == pytest.approx(1 + 4 + 9)
    assert float(y) == pytest.approx(0.09)
    assert float(w) == pytest.approx(0.09 - np.sqrt(0.5) * 0.3)
    assert float(m) == pytest.approx((0.25 - (0.6 + np.sqrt(0.5) / 2)) ** 2)
    dx2, dy2 = pair_distances(x, y_target)
    assert float(dx2) == pytest.approx(1.0)
    assert float(dy2) == pytest.approx(0.5)


def test_trailing_shapes_are_flattened():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(2, 4, 5))  # e.g. conv feature maps
    flat = hidden.reshape(2, -1)
    args = (rng.normal(size=(2, 3)), rng.normal(size=(2, 2)))
    y_pred = rng.normal(size=(2, 2))
    a = two_point_observables(*args, hidden, y_pred)
    b = two_point_observables(*args, flat, y_pred)
    np.testing.assert_allclose(jnp.stack(a), jnp.stack(b), rtol=1e-14)


def test_predict_distances_n2_equals_fixed_point():
    rng = np.random.default_rng(1)
    x, y_target = rng.normal(size=(2, 3)), rng.normal(size=(2, 2))
    hidden0, y_pred0 = rng.normal(size=(2, 7)), rng.normal(size=(2, 2))
    d = predict_distances(x, y_target, hidden0, y_pred0, 0.7, 1.3)
    h0, y0, _, _ = two_point_observables(x, y_target, hidden0, y_pred0)
    theory = EffectiveTheory(0.7, 1.3, *pair_distances(x, y_target))
    h_inf = theory.fixed_point(h0, y0)[2]
    np.testing.assert_allclose(d, [[0.0, h_inf], [h_inf, 0.0]], rtol=1e-13)


def test_predict_distances_many_points_pairwise():
    rng = np.random.default_rng(2)
    n = 5
    x, y_target = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    hidden0, y_pred0 = rng.normal(size=(n, 6)), rng.normal(size=(n, 2))
    d = predict_distances(x, y_target, hidden0, y_pred0, 1.0, 2.0)
    assert d.shape == (n, n)
    np.testing.assert_allclose(d, d.T, rtol=1e-14)
    np.testing.assert_array_equal(np.diag(d), 0.0)
    for i, j in [(0, 3), (2, 4)]:
        pair = [i, j]
        sub = predict_distances(x[pair], y_target[pair], hidden0[pair], y_pred0[pair], 1.0, 2.0)
        assert float(d[i, j]) == pytest.approx(float(sub[0, 1]), rel=1e-13)


def test_identical_inputs_predict_zero_distance():
    x = np.array([[0.0], [0.0], [1.0]])
    y_target = np.array([[0.0], [0.0], [1.0]])
    hidden0 = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y_pred0 = np.array([[0.1], [0.1], [0.2]])
    d = predict_distances(x, y_target, hidden0, y_pred0, 1.0, 1.0)
    assert float(d[0, 1]) == 0.0
    assert float(d[0, 2]) > 0.0


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (two_point_observables, (np.zeros((3, 1)), np.zeros((2, 1)), np.zeros((2, 4)), np.zeros((2, 1))), "`x`"),
        (two_point_observables, (np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 4)), np.zeros((2, 2))), "same shape"),
        (two_point_observables, (np.zeros((2, 1)), np.zeros((2, 1)), np.full((2, 4), np.nan), np.zeros((2, 1))), "finite"),
        (pair_distances, (np.zeros(2), np.zeros((1, 1))), "y_target"),
        (predict_distances, (np.zeros((3, 1)), np.zeros((2, 1)), np.zeros((3, 4)), np.zeros((3, 1)), 1.0, 1.0), "y_target"),
        (predict_distances, (np.eye(3), np.eye(3), np.eye(3), np.eye(3), 0.0, 1.0), "eta_h"),
        (predict_distances, (np.eye(2), np.eye(2), np.ones((2, 2)), np.eye(2), 1.0, 1.0), "identical initial hidden"),
    ],
)
def test_bad_inputs(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)
