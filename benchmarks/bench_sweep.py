"""Sweeps: throughput against batch size, and a vmapped network sweep against a Python loop.

1. Theory sweeps: `flowsolve.sweep` over N random starts (h0 log-uniform in [0.01, 10], small aligned
   outputs; η_h = η_y = 1, dx2 = 1, dy2 = 0.5; t1 = 200, rtol 1e-8), N = 1 … 10 000, one chunk each:
   µs per solve (compilation excluded) and the steps of the slowest and the mean member — the
   lockstep cost. `solve_theory_batch` (stiffness buckets) at the largest N for comparison.
2. Small networks (MLP width 100, depth 4, tanh, two points, t1 = 5, rtol 1e-6): 64 seeds as one
   vmapped sweep and as ensemble flows (`batched=True`, chunks of 8 and 64) against a Python loop over
   64 calls of one jitted flow (the same function), same run.
3. The default network's gradient (width 500, depth 20, float32): achieved bytes/s against this
   machine's copy bandwidth measured in the same run (numpy's copy, and XLA's own in-place streaming),
   for one jitted gradient call and for a GD step inside a compiled loop (how flows run it); the same
   with the loss applying the model to each point separately instead of vmapping it.

    python benchmarks/bench_sweep.py                    # a few minutes on a laptop CPU
    python benchmarks/bench_sweep.py --bandwidth-only   # part 3 only
"""

import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
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

    def ensemble_chunk(p):
        nets = eqx.filter_vmap(
            lambda s: models.MLP(1, 1, 100, 4, activation="tanh", gain=1.0, key=jax.random.key(s)))(p["seed"])
        sol = fs.ensemble_flow(nets, inputs, targets, 5.0, ts=ts, layer=2, rtol=1e-6, throw=False)
        return {"h": sol.observed["h"]}

    seeds = np.arange(64)
    sweep_s, ds = timed(lambda: fs.sweep(flow_point, {"seed": seeds}, dims={"h": ["time"]}, progress=False))
    single = jax.jit(flow_point)
    loop_s, outs = timed(lambda: jax.block_until_ready([single({"seed": jnp.asarray(s)}) for s in seeds]))
    diff = np.max(np.abs(np.stack([np.asarray(o["h"]) for o in outs]) - ds.h.values))
    print("| 64 seeds, MLP 100×4 tanh | wall s | flows/s | × loop |")
    print("|---|---:|---:|---:|")
    print(f"| Python loop of one jitted flow | {loop_s:.2f} | {64 / loop_s:.1f} | 1.0 |")
    print(f"| one vmapped sweep | {sweep_s:.2f} | {64 / sweep_s:.1f} | {loop_s / sweep_s:.2f} |")
    for chunk in (8, 64):
        ens_s, ens = timed(lambda: fs.sweep(ensemble_chunk, {"seed": seeds}, batched=True, chunk_size=chunk,
                                            dims={"h": ["time"]}, progress=False))
        print(f"| ensemble sweep, chunks of {chunk} | {ens_s:.2f} | {64 / ens_s:.1f} | {loop_s / ens_s:.2f} |")
    rel = np.max(np.abs(ens.h.values - ds.h.values) / np.abs(ds.h.values))
    print(f"\nsteps per flow: max {ds.steps.values.max()}, mean {ds.steps.values.mean():.0f}; "
          f"largest |Δh| sweep vs loop {diff:.1e}; ensemble vs loop, relative {rel:.1e}\n")

    bandwidth()


def bandwidth():
    """3. bytes/s of the default network's gradient against the copy bandwidth, and its parts."""
    exp = fs.experiments.two_points("default", key=jax.random.key(0))
    params, static = eqx.partition(exp.model, eqx.is_inexact_array)
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), params)
    x32, y32 = exp.inputs.astype(jnp.float32), exp.targets.astype(jnp.float32)
    loss = lambda p: fs.mse_loss(eqx.combine(p, static), x32, y32)  # noqa: E731
    grad = jax.jit(jax.grad(loss))
    forward = jax.jit(loss)
    weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))
    grad_s = best_of(lambda: grad(params), 50)
    forward_s = best_of(lambda: forward(params), 50)
    # The weight gradients alone: one (500 × 2)·(2 × 500) product per hidden layer after the first,
    # as autodiff of the vmapped loss writes them (a dot contracting the two points).
    hidden = [layer.weight for layer in params.layers[1:]]
    deltas = jnp.ones((2, hidden[0].shape[0]), jnp.float32)
    outer = jax.jit(lambda d, ws: [(d * (i + 1)).T @ d for i, _ in enumerate(ws)])
    outer_s = best_of(lambda: outer(deltas, hidden), 50)
    outer_bytes = sum(w.nbytes for w in hidden)
    # As flows and GD run it: one GD step per iteration of a compiled loop (buffers reused, no
    # allocation per call), 50 steps.
    steps = 50

    def gd_step_s(loss):
        descent = jax.jit(lambda p: jax.lax.fori_loop(
            0, steps, lambda i, q: jax.tree_util.tree_map(lambda a, g: a - 1e-6 * g, q, jax.grad(loss)(q)), p))
        return best_of(lambda: descent(params), 5) / steps

    step_s = gd_step_s(loss)
    # The same loss with the model applied to each point separately (a Python loop, not vmap): every
    # layer a matrix-vector product and the weight gradient a fused sum of outer products, which XLA's
    # CPU backend streams faster than its two-column matrix products; not flowsolve's default (it
    # costs about 1 s more compilation per gradient traced, and a flow traces several).
    def per_point_loss(p):
        model = eqx.combine(p, static)
        return 0.5 * sum(jnp.sum((model(x)[0] - y) ** 2) for x, y in zip(x32, y32)) / x32.shape[0]

    per_point_grad = jax.jit(jax.grad(per_point_loss))
    per_point_s = best_of(lambda: per_point_grad(params), 50)
    per_point_step_s = gd_step_s(per_point_loss)
    big = np.ones(weight_bytes // 4 * 8, np.float32)  # 8× the weights, past the caches
    out = np.empty_like(big)
    copy_s = best_of(lambda: np.copyto(out, big), 10)
    copy_bw = 2 * big.nbytes / copy_s  # read + write
    # The same streaming done by XLA (every core it uses), in place in a compiled loop: the stricter bar.
    big_x = jnp.asarray(big)
    scale = jax.jit(lambda x: jax.lax.fori_loop(0, 10, lambda i, y: y * 1.0000001, x))
    xla_bw = 2 * big.nbytes / (best_of(lambda: scale(big_x), 5) / 10)
    moved = 3 * weight_bytes  # weights read forward and backward, gradient written
    print("| default network gradient (float32) | value |")
    print("|---|---:|")
    print(f"| weights | {weight_bytes / 1e6:.1f} MB |")
    print(f"| one gradient (best of 50) | {grad_s * 1e3:.2f} ms |")
    print(f"| bytes moved per gradient (≥ 3 × weights) / time | {moved / grad_s / 1e9:.1f} GB/s |")
    print(f"| copy bandwidth (numpy copy of {big.nbytes / 1e6:.0f} MB, read + write) | {copy_bw / 1e9:.1f} GB/s |")
    print(f"| achieved / copy bandwidth | {moved / grad_s / copy_bw:.0%} |")
    print(f"| one GD step inside a compiled loop ({steps} steps; ≥ 3 × weights moved) | {step_s * 1e3:.2f} ms, "
          f"{moved / step_s / 1e9:.1f} GB/s |")
    print(f"| XLA's own streaming (in-place scaling of {big.nbytes / 1e6:.0f} MB in a compiled loop) | "
          f"{xla_bw / 1e9:.1f} GB/s |")
    print(f"| GD step in the loop / the larger of the two bandwidths | {moved / step_s / max(copy_bw, xla_bw):.0%} |")
    print(f"| one gradient, model applied point by point (best of 50) | {per_point_s * 1e3:.2f} ms, "
          f"{moved / per_point_s / 1e9:.1f} GB/s, {moved / per_point_s / copy_bw:.0%} of the copy bandwidth |")
    print(f"| GD step in the loop, point by point | {per_point_step_s * 1e3:.2f} ms, "
          f"{moved / per_point_step_s / max(copy_bw, xla_bw):.0%} of the larger bandwidth |")
    print(f"| the forward pass alone (weights read once) | {forward_s * 1e3:.2f} ms, "
          f"{weight_bytes / forward_s / 1e9:.1f} GB/s |")
    print(f"| the {len(hidden)} weight-gradient products alone ((500 × 2)·(2 × 500) dots, written once) | "
          f"{outer_s * 1e3:.2f} ms, {outer_bytes / outer_s / 1e9:.1f} GB/s |")


def best_of(f, n):
    jax.block_until_ready(f())
    times = []
    for _ in range(n):
        start = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - start)
    return min(times)


if __name__ == "__main__":
    import sys

    bandwidth() if "--bandwidth-only" in sys.argv[1:] else main()
