"""The sympy derivations, and the numeric code checked against them."""

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from flowsolve import EffectiveTheory, symbolic

from .helpers import admissible_state

S = symbolic.symbols()
CONSTANTS = [S.eta_h, S.eta_y, S.dx2, S.dy2]


def test_reduced_system_matches_theory_md():
    system = symbolic.derive_reduced_system()
    expected = {
        "h": -S.eta_h * S.dx2 * S.w,
        "y": -S.w * (S.eta_y * S.h + S.eta_h * S.dx2 * S.y / S.h),
        "w": -sp.Rational(1, 2) * S.eta_y * (3 * S.w - S.y + S.dy2) * S.h
        - sp.Rational(1, 2) * S.eta_h * S.dx2 * (S.y + S.w) * S.w / S.h,
    }
    for name in expected:
        assert sp.simplify(system[name] - expected[name]) == 0, name


def test_numeric_vector_field_equals_sympy_at_random_states():
    system = symbolic.derive_reduced_system()
    field = symbolic.to_jax([system[k] for k in "hyw"], [S.h, S.y, S.w, *CONSTANTS])
    rng = np.random.default_rng(0)
    for _ in range(50):
        eta_h, eta_y = 10 ** rng.uniform(-3, 3, size=2)
        dx2, dy2 = rng.uniform(0.1, 2.0, size=2)
        state = admissible_state(rng, dy2)
        theory = EffectiveTheory(eta_h, eta_y, dx2, dy2)
        numeric = theory.vector_field(0.0, jnp.asarray(state), None)
        symbolic_value = jnp.stack(field(*state, eta_h, eta_y, dx2, dy2))
        # Both are a few float64 operations of O(1) terms: agreement to 1e-12 relative.
        np.testing.assert_allclose(numeric, symbolic_value, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(numeric))))


def test_regular_system_matches_numeric_and_maps_to_reduced():
    from flowsolve._theory import _regular_vector_field, from_regular, to_regular

    regular = symbolic.derive_regular_system()
    field = symbolic.to_jax([regular[k] for k in ("a", "u_par", "u_perp")], [S.a, S.u_par, S.u_perp, *CONSTANTS])
    rng = np.random.default_rng(1)
    for _ in range(20):
        consts = (*(10 ** rng.uniform(-2, 2, size=2)), *rng.uniform(0.1, 2.0, size=2))
        theory = EffectiveTheory(*consts)
        coords = tuple(jnp.asarray(v) for v in rng.normal(size=3))
        got = _regular_vector_field(0.0, coords, theory)
        np.testing.assert_allclose(jnp.stack(got), jnp.stack(field(*coords, *consts)), rtol=1e-12, atol=1e-14)
        # Chain rule: d/dt from_regular(a, u) along the regular field = the (h, y, w) field.
        state = admissible_state(rng, consts[3])
        reg = to_regular(theory, jnp.asarray(state))
        np.testing.assert_allclose(jnp.stack(from_regular(theory, *reg)), state, rtol=1e-12, atol=1e-12)
        _, tangent = jax.jvp(lambda *r: jnp.stack(from_regular(theory, *r)), reg, _regular_vector_field(0.0, reg, theory))
        np.testing.assert_allclose(tangent, theory.vector_field(0.0, jnp.asarray(state)), rtol=1e-10, atol=1e-12)


def test_conserved_quantity_is_first_integral():
    q = symbolic.derive_conserved_quantity()
    assert sp.simplify(q - (S.h - S.eta_h / S.eta_y * S.dx2 * S.y / S.h)) == 0
    system = symbolic.derive_reduced_system()
    dq_dt = sp.diff(q, S.h) * system["h"] + sp.diff(q, S.y) * system["y"] + sp.diff(q, S.w) * system["w"]
    assert sp.simplify(dq_dt) == 0
    # The numeric conserved quantity equals the lambdified symbolic one.
    f = symbolic.to_jax(q, [S.h, S.y, S.eta_h, S.eta_y, S.dx2])
    theory = EffectiveTheory(0.3, 2.0, 1.3, 0.5)
    np.testing.assert_allclose(theory.conserved(0.7, 0.2), f(0.7, 0.2, 0.3, 2.0, 1.3), rtol=1e-14)


def test_fixed_point_symbolic_equals_numeric():
    fp = symbolic.derive_fixed_point()
    args = [fp.h0, fp.y0, *CONSTANTS]
    f = symbolic.to_jax([fp.A_low, fp.A_high, fp.h_inf], args)
    rng = np.random.default_rng(2)
    for _ in range(30):
        eta_h, eta_y = 10 ** rng.uniform(-3, 3, size=2)
        dx2, dy2 = rng.uniform(0.1, 2.0, size=2)
        h0, y0 = 10 ** rng.uniform(-3, 2), rng.uniform(0, 2)
        theory = EffectiveTheory(eta_h, eta_y, dx2, dy2)
        numeric = jnp.stack(theory.fixed_point(h0, y0))
        sym = jnp.stack(f(h0, y0, eta_h, eta_y, dx2, dy2))
        # The numeric root avoids cancellation; the symbolic form loses up to
        # |A_high|/h_inf digits, so compare at 1e-9 relative.
        np.testing.assert_allclose(numeric, sym, rtol=1e-9)
    # h_inf lies on the zero-loss set with the initial Q.
    q = symbolic.derive_conserved_quantity()
    residual = q.subs({S.h: fp.h_inf, S.y: S.dy2}) - fp.A_high
    values = {fp.h0: sp.Rational(3, 10), fp.y0: sp.Rational(1, 5), S.eta_h: 2, S.eta_y: 3, S.dx2: 1, S.dy2: sp.Rational(1, 2)}
    assert abs(sp.N(residual.subs(values), 30)) < 1e-25


def test_stability_eigenvalues_match_numeric_jacobian():
    stab = symbolic.derive_stability()
    assert stab.eigenvalues[0] == 0
    f = symbolic.to_jax(list(stab.eigenvalues[1:]), [stab.h_star, *CONSTANTS])
    rng = np.random.default_rng(3)
    for _ in range(10):
        consts = (*(10 ** rng.uniform(-2, 2, size=2)), *rng.uniform(0.1, 2.0, size=2))
        theory = EffectiveTheory(*consts)
        h_star = float(rng.uniform(0.1, 3.0))
        point = jnp.array([h_star, consts[3], 0.0])
        jac = jax.jacfwd(lambda s: theory.vector_field(0.0, s))(point)
        numeric = np.sort(np.linalg.eigvals(np.asarray(jac)).real)
        sym = np.sort(np.array([0.0, *[float(v) for v in f(h_star, *consts)]]))
        np.testing.assert_allclose(numeric, sym, rtol=1e-10, atol=1e-12)
        rates = np.sort(np.array([float(r) for r in theory.convergence_rates(h_star)]))
        np.testing.assert_allclose(np.sort(-sym[:2]), rates, rtol=1e-10)
