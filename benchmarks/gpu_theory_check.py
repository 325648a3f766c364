"""GPU check for the effective-theory solver: correctness against the CPU, then the timing table.

Run on a machine with a GPU (`PYTHONPATH=. python3 benchmarks/gpu_theory_check.py`). It
1. solves a set of random starts (including colliding and stiff ones) in float64 on the GPU and
   on the host CPU backend of the same process and compares the trajectories, and the final
   states with the closed-form fixed point;
2. prints the bench_theory table on the GPU for N = 1 000 … 100 000 (plain vmap and bucketed),
   against the scipy + numba reference timed on the same machine's CPU.
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402

from bench_theory import RTOL, ATOL, SETTING, T1, random_starts, reference  # noqa: E402


def correctness(n=256):
    rng = np.random.default_rng(1)
    dy2 = SETTING["dy2"]
    h0 = 10 ** rng.uniform(-2, 1, size=n)
    norm = rng.uniform(0, 1, size=n)
    angle = rng.uniform(0, np.pi, size=n)  # includes anti-aligned (colliding) starts
    par, perp = norm * np.cos(angle), norm * np.sin(angle)
    y0 = par**2 + perp**2
    states = np.stack([h0, y0, y0 - np.sqrt(dy2) * par], axis=1)
    theory = fs.EffectiveTheory(**SETTING)
    ts = jnp.linspace(0.0, T1, 51)

    def run(device):
        with jax.default_device(device):
            solve = jax.jit(jax.vmap(lambda s: fs.solve_theory(theory, s, T1, ts=ts, solver=diffrax.Tsit5(),
                                                               max_steps=65536, throw=False)))
            return jax.device_get(solve(jnp.asarray(states)))

    gpu, cpu = run(jax.devices()[0]), run(jax.devices("cpu")[0])
    ok = np.asarray(gpu.result == fs.RESULTS.successful) & np.asarray(cpu.result == fs.RESULTS.successful)
    diff = max(float(np.max(np.abs(getattr(gpu, k)[ok] - getattr(cpu, k)[ok]))) for k in ("h", "y", "w"))
    _, _, h_inf = theory.fixed_point(states[:, 0], states[:, 1])
    rel = np.abs(gpu.h[:, -1] - np.asarray(h_inf)) / np.asarray(h_inf)
    # Only members with 40 slow time constants inside [0, T1] are expected at the fixed point.
    converged = np.asarray(jnp.minimum(*theory.convergence_rates(h_inf))) * T1 > 40
    print(f"correctness on {jax.devices()[0].device_kind}: {n} starts, {int(ok.sum())} solved on both, "
          f"{int(np.asarray(gpu.collided).sum())} collisions; max |GPU − CPU| over (h, y, w) = {diff:.1e}; "
          f"max rel. |h(T1) − h_inf| on GPU = {np.max(rel[ok & converged]):.1e} over the {int((ok & converged).sum())} "
          "members with ≥ 40 slow time constants before T1")


def table(sizes, ref_samples):
    ref_solve = reference()
    theory = fs.EffectiveTheory(**SETTING)

    @jax.jit
    def plain(states):
        return jax.vmap(lambda s: fs.solve_theory(theory, s, T1, ts=jnp.array([T1]), rtol=RTOL, atol=ATOL,
                                                  solver=diffrax.Tsit5(), throw=False))(states)

    variants = {
        "vmap, one call": lambda s: plain(jnp.asarray(s)),
        "solve_theory_batch, 4 buckets": lambda s: fs.solve_theory_batch(theory, s, T1, ts=np.array([T1]), rtol=RTOL, atol=ATOL, buckets=4),
        "solve_theory_batch, 16 buckets": lambda s: fs.solve_theory_batch(theory, s, T1, ts=np.array([T1]), rtol=RTOL, atol=ATOL, buckets=16),
    }
    print("\n| N | variant | first call s | µs/traj | steps max / mean | reference µs/traj (CPU) | speed-up | max |Δ| | failed |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        states = random_starts(n)
        k = min(n, ref_samples)
        start = time.perf_counter()
        ref = np.stack([ref_solve(s)[0] for s in states[:k]])
        ref_per = (time.perf_counter() - start) / k
        for name, run in variants.items():
            start = time.perf_counter()
            jax.block_until_ready(run(states))
            first = time.perf_counter() - start
            best = np.inf
            for _ in range(2):
                start = time.perf_counter()
                sol = jax.block_until_ready(run(states))
                best = min(best, time.perf_counter() - start)
            final = np.asarray(sol.state[:, -1])
            steps = np.asarray(sol.stats["num_steps"])
            failed = int((~np.asarray(sol.result == fs.RESULTS.successful)).sum())
            per = best / n
            print(f"| {n} | {name} | {first:.1f} | {per * 1e6:.2f} | {steps.max()} / {steps.mean():.0f} | "
                  f"{ref_per * 1e6:.0f} | {ref_per / per:.0f}× | {np.max(np.abs(final[:k] - ref)):.1e} | {failed} |",
                  flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--ref-samples", type=int, default=100)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, devices: {jax.devices()}")
    correctness()
    table(args.sizes, args.ref_samples)
