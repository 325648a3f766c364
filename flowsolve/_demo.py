"""The README's main job: what gradient descent makes a deep network learn, and the two-constant
theory of van Rossem & Saxe (ICML 2024) that describes it.

`flowsolve demo` (also `python -m flowsolve` with no arguments) trains two networks of the paper's two-point task (THEORY.md §5)
and fits the reduced theory to each:

- A: the paper's default row as the authors ran it for their figures: MLP, 20 hidden layers of 500,
  leaky ReLU, gain 1, observed layer 10, full-batch gradient descent at lr 0.005 for 6000 epochs (half
  the settings file's lr, twice its epochs, as their notebooks do), float32.
- B: the exact gradient flow (diffrax, float64) of the tanh row — a smooth network, whose flow is well
  defined (the leaky-ReLU flow is not smooth at the paper's inputs: docs/flow.md) — at width 100
  instead of 500, so that the whole job stays within a minute on a laptop CPU.

For each: the fitted effective learning rates η_h, η_y (± standard error), the fit's errors, the
closed-form A_low, A_high and final ‖dh‖² from the sympy-derived expressions with the fitted rates,
against the network's own final ‖dh‖²; a figure of network (solid) and fitted theory (dashed).
`flowsolve demo theory` runs the effective-theory demo instead.
"""

import pathlib
import time

import jax


def _fit_and_predict(ts, observed, fixed_point):
    """The theory fitted to one trajectory, and the closed-form fixed point with the fitted rates."""
    import numpy as np

    from ._fit import fit_effective_rates
    from .experiments import DX2, DY2

    data = {k: np.asarray(observed[k], np.float64) for k in ("h", "y", "w", "m")}
    fit = fit_effective_rates(np.asarray(ts, np.float64), data["h"], data["y"], data["w"], DX2, DY2,
                              m=np.maximum(data["m"], 0.0))
    a_low, a_high, h_inf = (float(v) for v in fixed_point(float(fit.eta_h), float(fit.eta_y), DX2, DY2,
                                                          float(data["h"][0]), float(data["y"][0])))
    theory = fit.predict(np.asarray(ts, np.float64), throw=False)
    return fit, theory, (a_low, a_high, h_inf)


def run_network(width: int | None, rtol: float, seed: int, out: pathlib.Path) -> None:
    import jax.numpy as jnp

    from . import experiments, symbolic
    from ._flow import gradient_descent, gradient_flow

    total = time.perf_counter()
    print("flowsolve — what gradient descent makes a deep network learn, and the two-constant reduced theory\n"
          "of van Rossem & Saxe (ICML 2024) fitted to it. Two inputs −1, 0 (dx2 = 1), targets 0.6, 1.307 (dy2 = 0.5).")
    # The fixed point from the sympy derivation (THEORY.md §3), compiled to a JAX function.
    S = symbolic.symbols()
    fp = symbolic.derive_fixed_point()
    fixed_point = symbolic.to_jax([fp.A_low, fp.A_high, fp.h_inf], [S.eta_h, S.eta_y, S.dx2, S.dy2, fp.h0, fp.y0])

    a = experiments.two_points("default", key=jax.random.key(seed), width=width, dtype=jnp.float32)
    # The authors' trajectory figures halve the settings file's lr and double its epochs.
    lr, epochs = a.lr / 2, 2 * a.epochs
    every = max(1, epochs // 300)
    start = time.perf_counter()
    gd = gradient_descent(a.model, a.inputs, a.targets, lr, epochs, layer=a.layer, every=every)
    gd_s = time.perf_counter() - start

    b = experiments.two_points("tanh", key=jax.random.key(seed), width=width or 100)
    ts = jnp.linspace(0.0, b.t1, 301)
    start = time.perf_counter()
    flow = gradient_flow(b.model, b.inputs, b.targets, b.t1, ts=ts, layer=b.layer, rtol=rtol, atol=1e-3 * rtol)
    flow_s = time.perf_counter() - start

    start = time.perf_counter()
    results = {"A": (a, gd, *_fit_and_predict(gd.ts, gd.observed, fixed_point)),
               "B": (b, flow, *_fit_and_predict(flow.ts, flow.observed, fixed_point))}
    fit_s = time.perf_counter() - start

    ra, rb = a.setting, b.setting
    print(f"\nA  default row, as in the paper: MLP {ra.depth} × {ra.width}, {ra.activation}, gain {ra.gain}, "
          f"layer {a.layer};\n   full-batch gradient descent, lr {lr:g} × {epochs} epochs (the authors' figures: "
          f"half the settings' lr {a.lr:g}, twice its epochs), float32 ({gd_s:.1f} s)")
    st = flow.stats
    print(f"B  tanh row, exact gradient flow: MLP {rb.depth} × {rb.width}{' (paper: 500)' if rb.width != 500 else ''}, "
          f"gain {rb.gain}, layer {b.layer};\n   diffrax Tsit5, rtol {rtol:g}, to t = lr·epochs = {b.t1:g}, "
          f"float64 ({int(st['num_steps'])} steps, {flow_s:.1f} s)")
    print("Time is gradient-flow time t = lr · epoch for both; the rates are per unit of it.\n")

    def row(label, fn):
        print(f"{label:<36}" + "".join(f"{fn(*results[k]):>22}" for k in ("A", "B")))

    print(f"{'':<36}{'A: GD, default':>22}{'B: flow, tanh':>22}")
    row("fitted η_h (± s.e.)", lambda e, s, f, t, c: f"{float(f.eta_h):.4g} ± {float(f.eta_h_se):.1g}")
    row("fitted η_y (± s.e.)", lambda e, s, f, t, c: f"{float(f.eta_y):.4g} ± {float(f.eta_y_se):.1g}")
    row("fitted η̄ (the mean's rate)", lambda e, s, f, t, c: f"{float(f.eta_mean):.4g}")
    row("fit error h / y / w (RMSE/range)",
        lambda e, s, f, t, c: " / ".join(f"{float(f.errors[k]):.1%}" for k in ("h", "y", "w")))
    row("fit error of the loss", lambda e, s, f, t, c: f"{float(f.errors['loss']):.1%}")
    row("A_high = Q(0) (closed form)", lambda e, s, f, t, c: f"{c[1]:.4g}")
    row("A_low = √(η_h/η_y·dx2·dy2)", lambda e, s, f, t, c: f"{c[0]:.4g}")
    row("predicted final ‖dh‖² = h(∞)", lambda e, s, f, t, c: f"{c[2]:.4g}")
    row("network's final ‖dh‖²", lambda e, s, f, t, c: f"{float(s.observed['h'][-1]):.4g}")
    row("prediction − network (relative)",
        lambda e, s, f, t, c: f"{c[2] / float(s.observed['h'][-1]) - 1:+.1%}")
    row("initial ‖dh‖² (the lazy answer)", lambda e, s, f, t, c: f"{float(s.observed['h'][0]):.4g}")
    row("regime (A_high vs A_low)", lambda e, s, f, t, c: _regime(c[1], c[0]))
    row("verdict (worst error of h, y, w, loss)", lambda e, s, f, t, c: _verdict(f))
    print("\nA_high ≫ A_low: lazy (the representation keeps its initial geometry); A_high ≪ A_low: rich (it takes\n"
          "the task's, h(∞) → A_low ∝ ‖dx‖·‖dy*‖). Verdict: tracks ≤ 5 %, rough ≤ 15 %, fails above.")
    print("The paper's inputs put every leaky-ReLU unit on its kink at t = 0: its exact flow is not smooth\n"
          "(docs/flow.md). The paper's every row at width 500, over seeds and step sizes: docs/reproduction.md.")
    _plot(results, out)
    table = out.with_suffix(".csv")
    _write_table(results, table)
    print(f"\nfits {fit_s:.1f} s; total {time.perf_counter() - total:.1f} s; wrote {out}, {table}")


def _write_table(results, path):
    """Both networks' curves and their fitted theories, one row per (network, time)."""
    import csv

    import numpy as np

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["network", "t", "h", "y", "w", "loss", "theory_h", "theory_y", "theory_w", "theory_loss"])
        for key, (exp, sol, fit, theory, _) in results.items():
            columns = [np.asarray(sol.ts, np.float64)]
            columns += [np.asarray(sol.observed[k], np.float64) for k in ("h", "y", "w", "loss")]
            columns += [np.asarray(getattr(theory, k), np.float64) for k in ("h", "y", "w", "loss")]
            label = f"{key}: {exp.name}"
            for row in zip(*columns):
                writer.writerow([label, *(f"{v:.8g}" for v in row)])


def _regime(a_high: float, a_low: float) -> str:
    ratio = a_high / a_low
    return "rich" if ratio < 0.3 else "lazy" if ratio > 3 else "between"


def _verdict(fit) -> str:
    worst = max(float(fit.errors[k]) for k in ("h", "y", "w", "loss"))
    return ("tracks" if worst <= 0.05 else "rough" if worst <= 0.15 else "fails") + f" ({worst:.1%})"


def _plot(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    titles = {"A": "A: gradient descent, default row (leaky ReLU, width {w})",
              "B": "B: exact gradient flow, tanh row (width {w})"}
    for i, key in enumerate(("A", "B")):
        exp, sol, fit, theory, (a_low, a_high, h_inf) = results[key]
        ax, lx = axes[2 * i], axes[2 * i + 1]
        ts = np.asarray(sol.ts)
        for k, color, label in (("h", "C0", "h = ‖dh‖²"), ("y", "C1", "y = ‖dŷ‖²"), ("w", "C2", "w")):
            ax.plot(ts, np.asarray(sol.observed[k]), color=color, label=f"{label}, network")
            ax.plot(ts, np.asarray(getattr(theory, k)), color=color, ls="--", label=f"{label}, fitted theory")
        ax.axhline(h_inf, color="C0", ls=":", lw=1, label=f"closed-form h(∞) = {h_inf:.3g}")
        ax.set_title(titles[key].format(w=exp.setting.width), fontsize=9)
        ax.set_xlabel("gradient-flow time t = lr · epoch")
        ax.legend(fontsize=6.5, loc="center right")
        loss = np.maximum(np.asarray(sol.observed["loss"], np.float64), 1e-30)
        lx.semilogy(ts, loss, color="k", label="network")
        lx.semilogy(ts, np.maximum(np.asarray(theory.loss), 1e-30), color="k", ls="--", label="fitted theory")
        lx.set_title(f"{key}: loss (η_h = {float(fit.eta_h):.3g}, η_y = {float(fit.eta_y):.3g})", fontsize=9)
        lx.set_xlabel("gradient-flow time t = lr · epoch")
        lx.set_ylim(max(float(loss.min()), 1e-12), 1.0)
        lx.legend(fontsize=7)
    fig.suptitle("Two-point task of van Rossem & Saxe (2024): network (solid) vs the reduced theory with two "
                 "fitted rates (dashed)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)

