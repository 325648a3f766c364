"""Benchmark: many effective-theory solves, flowsolve against the paper's method.

flowsolve: one jitted, vmapped `solve_theory` call over N initial conditions (float64).
Reference ("the paper's way"): scipy `solve_ivp` (RK45) on the (h, y, w) system in a Python loop,
with a numba-compiled right-hand side, at the same tolerances (rtol 1e-8, atol 1e-10).

Both solve to t1 = 200 (gradient-flow time with η = 1: e^-40 or less of every transient remains),
from random admissible starts with the output difference not anti-aligned with the target
difference (the reference cannot pass a collision). The reference is timed on a subsample of
`--ref-samples` starts per N (its cost per trajectory does not depend on N) and the agreement is
the largest absolute difference of the final (h, y, w) over that subsample.

    python benchmarks/bench_theory.py            # N = 1, 100, 1 000, 10 000
    python benchmarks/bench_theory.py --sizes 100 1000 --ref-samples 100
"""

import argparse
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402

SETTING = dict(eta_h=1.0, eta_y=1.0, dx2=1.0, dy2=0.5)
T1 = 200.0
RTOL, ATOL = 1e-8, 1e-10


def random_starts(n: int, seed: int = 0) -> np.ndarray:
    """Admissible [h0, y0, w0], log-uniform h0 in [0.01, 10], dŷ at an angle ≤ 90° to dy*."""
    rng = np.random.default_rng(seed)
    h0 = 10 ** rng.uniform(-2, 1, size=n)
    norm = rng.uniform(0.0, 1.0, size=n)
    angle = rng.uniform(0.0, 0.5 * np.pi, size=n)
    par, perp = norm * np.cos(angle), norm * np.sin(angle)
    y0 = par**2 + perp**2
    w0 = y0 - np.sqrt(SETTING["dy2"]) * par
    return np.stack([h0, y0, w0], axis=1)


def plain_vmap(states):
    """One jitted, vmapped call: every member steps until the slowest finishes."""
    return _plain_vmap(jnp.asarray(states))


@jax.jit
def _plain_vmap(states):
    theory = fs.EffectiveTheory(**SETTING)

    def one(state):
        return fs.solve_theory(theory, state, T1, ts=jnp.array([T1]), rtol=RTOL, atol=ATOL, solver=diffrax.Tsit5(), throw=False)

    return jax.vmap(one)(states)


def bucketed(states, buckets=None):
    """`solve_theory_batch`: members sorted by stiffness into equal chunks (default: batch // 64 in [1, 16])."""
    theory = fs.EffectiveTheory(**SETTING)
    return fs.solve_theory_batch(theory, states, T1, ts=np.array([T1]), rtol=RTOL, atol=ATOL, buckets=buckets)


def reference():
    import numba
    from scipy.integrate import solve_ivp

    eh, ey, dx2, dy2 = (SETTING[k] for k in ("eta_h", "eta_y", "dx2", "dy2"))

    @numba.njit(cache=False)
    def rhs(t, s):
        h, y, w = s[0], s[1], s[2]
        out = np.empty(3)
        out[0] = -eh * dx2 * w
        out[1] = -w * (ey * h + eh * dx2 * y / h)
        out[2] = -0.5 * ey * (3 * w - y + dy2) * h - 0.5 * eh * dx2 * (y + w) * w / h
        return out

    rhs(0.0, np.ones(3))  # compile

    def solve(state):
        sol = solve_ivp(rhs, (0.0, T1), state, method="RK45", rtol=RTOL, atol=ATOL)
        return sol.y[:, -1], sol.success

    return solve


def timed(fn, *args, repeats=3):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1_000, 10_000])
    parser.add_argument("--ref-samples", type=int, default=200)
    args = parser.parse_args()

    ref_solve = reference()
    variants = {"vmap, one call": plain_vmap, "solve_theory_batch, default buckets": bucketed,
                "solve_theory_batch, 16 buckets": lambda s: bucketed(s, 16),
                "solve_theory_batch, 64 buckets": lambda s: bucketed(s, 64)}
    print(f"# bench_theory — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, jax {jax.__version__} on {jax.devices()[0].platform}, float64, "
          f"rtol={RTOL}, atol={ATOL}, t1={T1}")
    print()
    print("| N | variant | compile s | flowsolve µs/traj | steps max / mean | reference µs/traj | speed-up | max |Δ| vs reference | failed |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        states = random_starts(n)
        k = min(n, args.ref_samples)
        start = time.perf_counter()
        ref = [ref_solve(s) for s in states[:k]]
        ref_per = (time.perf_counter() - start) / k
        ref_final = np.stack([r[0] for r in ref])
        assert all(r[1] for r in ref)
        for name, run in variants.items():
            if n < 1000 and ("64" in name or "16" in name):
                continue
            start = time.perf_counter()
            jax.block_until_ready(run(states))
            first = time.perf_counter() - start
            elapsed, sol = timed(run, states)
            final = np.asarray(sol.state[:, -1])
            ok = np.asarray(sol.result == fs.RESULTS.successful)
            steps = np.asarray(sol.stats["num_steps"])
            per = elapsed / n
            diff = np.max(np.abs(final[:k] - ref_final))
            compile_s = first - elapsed
            print(f"| {n} | {name} | {compile_s:.1f} | {per * 1e6:.1f} | {steps.max()} / {steps.mean():.0f} | "
                  f"{ref_per * 1e6:.0f} | {ref_per / per:.0f}× | {diff:.1e} | {int((~ok).sum())} |", flush=True)


if __name__ == "__main__":
    main()
