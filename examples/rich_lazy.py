"""The rich-to-lazy transition: a gain sweep of the default network against the theory's curve.

THEORY.md §3: the final squared hidden distance is h(∞) = ½·A_high + sqrt(¼·A_high² + A_low²), so
h(∞)/A_low is one curve of r = A_high/A_low: → 1 for small initial weights (rich: the representation
takes the task's structure, h(∞) = A_low) and → r for large ones (lazy: it keeps its initial
geometry, h(∞) ≈ h(0)). For every gain (0.5 … 2.5) and seed, the network (leaky-ReLU MLP as the
default row, paper's two points) is trained by its exact gradient flow in one `flowsolve.sweep`
(stored, resumable); its η_h/η_y is fitted to its trajectory; A_high = h0 − (η_h/η_y)·dx2·y0/h0 and
A_low = sqrt(η_h/η_y·dx2·dy2) place it on the plot, next to the theory's curve. The rates
*predicted* from the tangent kernels at initialisation (`predict_effective_rates`) place it a
second time, without any fitting.

Depth: 4 by default, not the default row's 20. The flow's time scale goes as gain^(−2·depth): over
gains 0.5 … 2.5 that is a factor 5^40 ≈ 1e28 at depth 20 (no solver spans it; the paper's gain
series stops at 1.6), 5^8 ≈ 4e5 at depth 4. Each run goes to t1 = 15·gain^(−2·depth)·max(1, gain)²
(an empirical choice; the largest final loss is reported: at width 50 most runs end below 1e-7, the
largest gains' by 1e-3). On the lazy side h hardly moves, so the fitted ratio η_h/η_y is weakly
determined there (and some fits do not converge: left out, counted in the summary).

    python examples/rich_lazy.py                     # width 50, 7 gains × 3 seeds: ~8 min on 2 CPU cores
    python examples/rich_lazy.py --width 500 --seeds 8

Writes `rich_lazy.png`, `rich_lazy.csv` and `rich_lazy.md` into `--out`; the store is `--out/sweep`.
"""

import argparse
import csv
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import flowsolve as fs  # noqa: E402
import models  # noqa: E402

DX2, DY2 = fs.experiments.DX2, fs.experiments.DY2
GAINS = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5]
N_TIMES = 121


def final_time(gain, depth):
    return 15.0 * gain ** (-2.0 * depth) * jnp.maximum(1.0, gain) ** 2


def make_point(width: int, depth: int, rtol: float):
    inputs, targets = fs.experiments.two_point_data()

    def point(p):
        net = models.MLP(1, 1, width, depth, activation="leaky_relu", gain=p["gain"], key=jax.random.key(p["seed"]))
        t1 = final_time(p["gain"], depth)
        sol = fs.gradient_flow(net, inputs, targets, t1, ts=jnp.linspace(0.0, t1, N_TIMES), layer=depth // 2,
                               rtol=rtol, atol=1e-3 * rtol, max_steps=200_000, throw=False)
        pred = fs.predict_effective_rates(net, inputs, targets, depth // 2)
        return {**{k: sol.observed[k] for k in ("h", "y", "w", "loss")}, "t1": t1,
                "ok": sol.result == fs.RESULTS.successful, "steps": sol.stats["num_steps"],
                "pred_ratio": pred.eta_h / pred.eta_y}

    return point


def curve(r):
    return 0.5 * r + np.sqrt(0.25 * r**2 + 1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--gains", default=",".join(map(str, GAINS)))
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--chunk", type=int, default=1, help="points per compiled call (1 is fastest on a CPU)")
    parser.add_argument("--out", default="rich_lazy")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gains = [float(g) for g in args.gains.split(",")]

    ds = fs.sweep(make_point(args.width, args.depth, args.rtol), {"gain": gains, "seed": np.arange(args.seeds)},
                  chunk_size=args.chunk, dims={k: ["sample"] for k in ("h", "y", "w", "loss")},
                  store=out / "sweep", name="rich_lazy",
                  config={"width": args.width, "depth": args.depth, "rtol": args.rtol})
    h, y, w, loss = (ds[k].values for k in ("h", "y", "w", "loss"))
    ok = ds.ok.values & ds.finite.values
    ts = np.linspace(0.0, 1.0, N_TIMES) * ds.t1.values[..., None]

    fit = fs.fit_effective_rates(ts[ok], h[ok], y[ok], w[ok], DX2, DY2)
    fitted_ratio = np.full(ok.shape, np.nan)
    fitted_ratio[ok] = np.asarray(fit.eta_h) / np.asarray(fit.eta_y)
    converged = np.zeros(ok.shape, bool)
    converged[ok] = np.asarray(fit.converged)

    def place(ratio):
        a_low = np.sqrt(ratio * DX2 * DY2)
        a_high = h[..., 0] - ratio * DX2 * y[..., 0] / h[..., 0]
        return a_high / a_low, h[..., -1] / a_low

    fx, fy = place(fitted_ratio)
    px, py = place(ds.pred_ratio.values)
    good = ok & converged
    dev_fit = np.abs(fy[good] / curve(fx[good]) - 1)
    dev_pred = np.abs(py[ok] / curve(px[ok]) - 1)
    lines = [
        f"# Rich to lazy: h(∞)/A_low against A_high/A_low (width {args.width}, depth {args.depth}, "
        f"{args.seeds} seeds, rtol {args.rtol})",
        "",
        f"{int(ok.sum())}/{ok.size} flows succeeded, {int(good.sum())} fits converged; largest final loss "
        f"{float(np.nanmax(loss[..., -1])):.1e}.",
        "",
        "| gain | h(0) | h(t1)/h(0) | A_high/A_low (fitted) | h(∞)/A_low network | theory curve | "
        "η_h/η_y fitted | η_h/η_y predicted |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, g in enumerate(gains):
        row = good[i]
        if not row.any():
            lines.append(f"| {g} | failed | | | | | | |")
            continue
        lines.append(
            f"| {g} | {np.mean(h[i, row, 0]):.3g} | {np.mean(h[i, row, -1] / h[i, row, 0]):.3g} | "
            f"{np.mean(fx[i, row]):.3g} | {np.mean(fy[i, row]):.3g} | {np.mean(curve(fx[i, row])):.3g} | "
            f"{np.mean(fitted_ratio[i, row]):.3g} | {np.mean(ds.pred_ratio.values[i, row]):.3g} |"
        )
    lines += [
        "",
        f"Distance from the curve, |network / curve − 1|: fitted rates median {np.median(dev_fit):.1%}, "
        f"largest {np.max(dev_fit):.1%}; predicted rates median {np.median(dev_pred):.1%}, "
        f"largest {np.max(dev_pred):.1%}. (Means over seeds in the table.)",
    ]
    text = "\n".join(lines) + "\n"
    (out / "rich_lazy.md").write_text(text)
    print(text)

    with open(out / "rich_lazy.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["gain", "seed", "ok", "fit_converged", "steps", "t1", "final_loss", "h0", "y0", "h_final",
                         "ratio_fitted", "ratio_predicted", "A_high_over_A_low", "h_final_over_A_low"])
        for i, g in enumerate(gains):
            for s in range(args.seeds):
                writer.writerow([g, s, bool(ok[i, s]), bool(converged[i, s]), int(ds.steps.values[i, s]),
                                 float(ds.t1.values[i, s]), loss[i, s, -1], h[i, s, 0], y[i, s, 0], h[i, s, -1],
                                 fitted_ratio[i, s], float(ds.pred_ratio.values[i, s]), fx[i, s], fy[i, s]])

    fig, ax = plt.subplots(figsize=(6, 4.5))
    finite_x = np.concatenate([fx[good], px[ok]])
    finite_x = finite_x[np.isfinite(finite_x)]
    r = np.linspace(min(-2.0, finite_x.min() * 1.1), max(4.0, finite_x.max() * 1.1), 400)
    ax.plot(r, curve(r), "k-", lw=1.5, label="theory: ½r + sqrt(¼r² + 1)")
    sc = ax.scatter(fx[good], fy[good], c=np.broadcast_to(np.asarray(gains)[:, None], ok.shape)[good],
                    cmap="coolwarm", label="networks, fitted η_h/η_y", zorder=3)
    ax.scatter(px[ok], py[ok], facecolors="none", edgecolors="gray", label="networks, predicted η_h/η_y")
    fig.colorbar(sc, ax=ax, label="gain")
    ax.axhline(1.0, color="k", ls=":", lw=0.8)
    ax.set(xlabel="A_high / A_low", ylabel="h(∞) / A_low", xscale="symlog", yscale="log",
           title=f"rich (left) to lazy (right): MLP {args.width}×{args.depth}, leaky ReLU")
    ax.legend(fontsize=8)
    fig.savefig(out / "rich_lazy.png", dpi=120, bbox_inches="tight")
    print(f"wrote {out / 'rich_lazy.png'}, {out / 'rich_lazy.csv'}, {out / 'rich_lazy.md'}")


if __name__ == "__main__":
    main()
