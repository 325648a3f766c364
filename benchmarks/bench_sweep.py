"""Sweeps: throughput against batch size, and a vmapped network sweep against a Python loop.

1. Theory sweeps: `flowsolve.sweep` over N random starts (h0 log-uniform in [0.01, 10], small aligned
   outputs; η_h = η_y = 1, dx2 = 1, dy2 = 0.5; t1 = 200, rtol 1e-8), N = 1 … 10 000, one chunk each:
   µs per solve (compilation excluded) and the steps of the slowest and the mean member — the
   lockstep cost. `solve_theory_batch` (stiffness buckets) at the largest N for comparison.
2. Small networks (MLP width 100, depth 4, tanh, two points, t1 = 5, rtol 1e-6): 64 seeds as one
   vmapped sweep against a Python loop over 64 calls of one jitted flow (the same function), same run.

    python benchmarks/bench_sweep.py         # a few minutes on a laptop CPU
"""

import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402
import models  # noqa: E402

THEORY = fs.EffectiveTheory(1.0, 1.0, 1.0, 0.5)
T1 = 200.0


def theory_point(p):
    y0 = 1e-3 * p["h0"]
    state0 = jnp.stack([p["h0"], y0, y0 - jnp.sqrt(0.5 * y0)])
    sol = fs.solve_theory(THEORY, state0, T1, ts=jnp.array([0.0, T1]), throw=False)
    return {"h_end": sol.h[-1], "steps": sol.stats["num_steps"], "ok": sol.result == fs.RESULTS.successful}


def timed(f):
    f()  # compile
    start = time.perf_counter()
    out = f()
    return time.perf_counter() - start, out


def main():
    print(f"{jax.devices()[0].platform}, {os.cpu_count()} cores, jax {jax.__version__}\n")
    rng = np.random.default_rng(0)
    h0_all = 10 ** rng.uniform(-2, 1, 10_000)
    print("| N | µs per solve | steps max / mean | all ok |")
    print("|---:|---:|---:|---|")
    for n in (1, 10, 100, 1_000, 10_000):
        seconds, ds = timed(lambda: fs.sweep(theory_point, {"h0": h0_all[:n]}, chunk_size=n, progress=False))
        steps = ds.steps.values
        print(f"| {n} | {1e6 * seconds / n:.1f} | {steps.max()} / {steps.mean():.0f} | {bool(ds.ok.all())} |")
    n = 10_000
    y0 = 1e-3 * h0_all
    states = np.stack([h0_all, y0, y0 - np.sqrt(0.5 * y0)], axis=1)
    seconds, _ = timed(lambda: jax.block_until_ready(
        fs.solve_theory_batch(THEORY, states, T1, ts=np.array([0.0, T1]))))
    print(f"| {n} (solve_theory_batch, 16 buckets) | {1e6 * seconds / n:.1f} | | |\n")

    inputs, targets = fs.experiments.two_point_data(x0=-0.5)
    ts = jnp.linspace(0.0, 5.0, 11)

    def flow_point(p):
        net = models.MLP(1, 1, 100, 4, activation="tanh", gain=1.0, key=jax.random.key(p["seed"]))
        sol = fs.gradient_flow(net, inputs, targets, 5.0, ts=ts, layer=2, rtol=1e-6, throw=False)
        return {"h": sol.observed["h"], "steps": sol.stats["num_steps"]}

    seeds = np.arange(64)
    sweep_s, ds = timed(lambda: fs.sweep(flow_point, {"seed": seeds}, dims={"h": ["time"]}, progress=False))
    single = jax.jit(flow_point)
    loop_s, outs = timed(lambda: jax.block_until_ready([single({"seed": jnp.asarray(s)}) for s in seeds]))
    diff = np.max(np.abs(np.stack([np.asarray(o["h"]) for o in outs]) - ds.h.values))
    print("| 64 seeds, MLP 100×4 tanh | wall s | flows/s | × loop |")
    print("|---|---:|---:|---:|")
    print(f"| Python loop of one jitted flow | {loop_s:.2f} | {64 / loop_s:.1f} | 1.0 |")
    print(f"| one vmapped sweep | {sweep_s:.2f} | {64 / sweep_s:.1f} | {loop_s / sweep_s:.2f} |")
    print(f"\nsteps per flow: max {ds.steps.values.max()}, mean {ds.steps.values.mean():.0f}; "
          f"largest |Δh| sweep vs loop {diff:.1e}")


if __name__ == "__main__":
    main()
