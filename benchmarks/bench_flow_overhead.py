"""Where a flow's time per gradient evaluation goes, against one GD step (tanh network, float64).

For widths 50 and 150 (depth 20; the state is 0.4 MB and 3.6 MB), each row times one compiled call of
N constant steps and divides by the gradient evaluations:

- GD: `flowsolve.gradient_descent` (one gradient and one update per step).
- diffrax Euler: `diffeqsolve` with `Euler()`: the same arithmetic as GD inside diffrax's loop.
- diffrax Bosh3 / Tsit5: `diffeqsolve` with constant steps (no controller, no saving).
- flowsolve RKC: `diffeqsolve` with `flowsolve.RKC()` at the same constant steps (its stage count
  per step follows from h·ρ; its power iterations are counted as evaluations too).
- Tsit5 stages written out: the same tableau as straight-line JAX in a `fori_loop` (each stage one
  fused combination of the previous ones, an error estimate, no controller): the arithmetic floor
  of a seven-stage method, *not* a solver flowsolve offers.

Pin it to one core
for steadier numbers: `taskset -c 0 python benchmarks/bench_flow_overhead.py`.
"""

import platform
import time

import diffrax
import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402

N = 100
DT = 1e-3


def best_of(f, n=3):
    jax.block_until_ready(f())
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        jax.block_until_ready(f())
        best = min(best, time.perf_counter() - start)
    return best


def written_out_tsit5(vector_field):
    tableau = diffrax.Tsit5().tableau
    rows = [np.asarray(a) for a in tableau.a_lower]
    b_error = np.asarray(tableau.b_error)

    def combine(y0, ks, coeffs):
        return jax.tree_util.tree_map(
            lambda y, *k: y + DT * sum(float(c) * kk for c, kk in zip(coeffs, k) if c != 0), y0, *ks
        )

    def step(_, carry):
        y, f0 = carry
        ks = [f0]
        for row in rows:
            ks.append(vector_field(combine(y, ks, row)))
        error = combine(jax.tree_util.tree_map(jnp.zeros_like, y), ks, b_error)
        norm = jnp.sqrt(sum(jnp.mean(e**2) for e in jax.tree_util.tree_leaves(error)))
        y1 = combine(y, ks[:-1], rows[-1])  # Tsit5's last stage is the solution (FSAL)
        y1 = jax.tree_util.tree_map(lambda a, b: jnp.where(norm < 1e30, a, b), y1, y)
        return y1, ks[-1]

    return jax.jit(lambda y0: jax.lax.fori_loop(0, N, step, (y0, vector_field(y0))))


def main():
    print(f"# bench_flow_overhead — {time.strftime('%Y-%m-%d')}, {platform.machine()}, jax {jax.__version__}, "
          f"float64, {N} constant steps\n")
    print("| width | state MB | GD step ms | per gradient evaluation: diffrax Euler | diffrax Bosh3 | diffrax Tsit5 "
          "| flowsolve RKC | Tsit5 stages written out |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for width in (50, 150):
        exp = fs.experiments.two_points("tanh", key=jax.random.key(0), width=width, depth=20)
        params, static = eqx.partition(exp.model, eqx.is_inexact_array)
        state_mb = sum(x.nbytes for x in jax.tree_util.tree_leaves(params)) / 1e6

        def vector_field(p, static=static, exp=exp):
            grads = jax.grad(lambda q: fs.mse_loss(eqx.combine(q, static), exp.inputs, exp.targets))(p)
            return jax.tree_util.tree_map(jnp.negative, grads)

        steps = 10 * N
        gd = best_of(lambda exp=exp, steps=steps: fs.gradient_descent(
            exp.model, exp.inputs, exp.targets, exp.lr, steps, layer=exp.layer, every=steps).ts) / steps
        cells = []
        for solver, evals in ((diffrax.Euler(), 1), (diffrax.Bosh3(), 3), (diffrax.Tsit5(), 6)):
            run = jax.jit(lambda y0, solver=solver, vector_field=vector_field: diffrax.diffeqsolve(
                diffrax.ODETerm(lambda t, y, args: vector_field(y)), solver, 0.0, N * DT, DT, y0,
                saveat=diffrax.SaveAt(t1=True), max_steps=N + 2).ys)
            per_eval = best_of(lambda run=run, params=params: run(params)) / (N * evals)
            cells.append(f"{per_eval * 1e3:.3f} ms ({per_eval / gd:.2f}×)")
        rkc = jax.jit(lambda y0, vector_field=vector_field: diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: vector_field(y)), fs.RKC(), 0.0, N * DT, DT, y0,
            saveat=diffrax.SaveAt(t1=True, solver_state=True), max_steps=N + 2))
        state = rkc(params).solver_state
        per_eval = best_of(lambda rkc=rkc, params=params: rkc(params).ys) / int(state.evaluations)
        cells.append(f"{per_eval * 1e3:.3f} ms ({per_eval / gd:.2f}×; {float(state.mean_stages()):.1f} stages)")
        floor = best_of(lambda f=written_out_tsit5(vector_field), params=params: f(params)) / (N * 6)
        cells.append(f"{floor * 1e3:.3f} ms ({floor / gd:.2f}×)")
        print(f"| {width} | {state_mb:.1f} | {gd * 1e3:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
