"""A sweep on 4 host CPU devices with one slow point: each device running its own shard to the end
(`flowsolve.sweep`'s chunk program, `jax.shard_map`) against one vmapped program over the sharded
chunk (its loops step in lockstep across the devices), same run, same inputs.

The points: the theory from h0 = 1, small aligned outputs, dx2 = 1, dy2 = 0.5, to t1 = 200 without the
steady-state stop (Tsit5, rtol 1e-8): η_h = η_y = 1 takes 124 steps; the slow point, η = 100, takes
6 342. 64 points, one chunk (16 per device). Seconds are medians of 9 (compilation excluded).

    python benchmarks/bench_sweep_devices.py      # about a minute
"""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import time  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402
from flowsolve._sweep._chunking import _programs, global_batch, point_sharding  # noqa: E402

N = 64


def point(p):
    theory = fs.EffectiveTheory(p["eta"], p["eta"], 1.0, 0.5)
    y0 = 1e-3
    state0 = jnp.stack([jnp.ones_like(p["eta"]), y0 + 0 * p["eta"], y0 - jnp.sqrt(0.5 * y0) + 0 * p["eta"]])
    sol = fs.solve_theory(theory, state0, 200.0, ts=jnp.array([0.0, 200.0]), stop_at_steady_state=False,
                          max_steps=20_000, throw=False)
    return {"h_end": sol.h[-1], "steps": sol.stats["num_steps"]}


SLOW = np.where(np.arange(N) == 5, 100.0, 1.0)


def indexed_point(p):
    return point({"eta": jnp.asarray(SLOW)[p["i"]]})


def median_seconds(f, repeats=9):
    jax.block_until_ready(f())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    devices = jax.devices()
    print(f"{len(devices)} {devices[0].platform} devices, {os.cpu_count()} cores, jax {jax.__version__}\n")
    sharding = point_sharding(devices)
    per_device, lockstep = _programs(point, (), False, sharding, None)
    print("| points | per device (s) | lockstep (s) | lockstep / per device | steps max / mean | same values |")
    print("|---|---:|---:|---:|---:|---|")
    for label, eta in [("all fast", np.ones(N)), ("one slow", np.where(np.arange(N) == 5, 100.0, 1.0))]:
        inputs = {"eta": global_batch(eta, sharding)}
        own = median_seconds(lambda: per_device(inputs))
        together = median_seconds(lambda: lockstep(inputs))
        a, b = jax.device_get(per_device(inputs)), jax.device_get(lockstep(inputs))
        same = bool(np.allclose(a["h_end"], b["h_end"], rtol=1e-12, atol=0))
        steps = a["steps"]
        print(f"| {label} | {own:.3f} | {together:.3f} | {together / own:.2f} | {steps.max()} / {steps.mean():.0f} "
              f"| {same} |")
    whole = median_seconds(lambda: fs.sweep(indexed_point, {"i": np.arange(N)}, chunk_size=N, progress=False),
                           repeats=3)
    print(f"\nThe one-slow case as a whole `flowsolve.sweep` call (grid, chunk, gather, dataset): {whole:.3f} s")

if __name__ == "__main__":
    main()
