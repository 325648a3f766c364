"""The orthogonal blob task as van Rossem & Saxe ran it: what structure the hidden layer learns.

The authors' setting (`model_settings/orthogonal.txt` and `orthogonal.ipynb` of
`loekvanrossem/universality`): a Gaussian blob on a 5 × 5 pixel grid, centred at each of 30 × 30
positions, each image with two context bits appended (1 800 inputs of 27 values); the scalar
target is the blob's x position in the first context and its y position in the second
(`flowsolve.experiments.orthogonal_blobs`). A tanh MLP of 4 hidden layers of 100, Xavier-normal
weights, zero biases, observed at hidden layer 2; minibatch SGD (batch 64, shuffled) on
½ · mean (ŷ − y)², float32; three rows: high_init (gain 2.0, lr 0.0015, 750 epochs), low_init
(0.5, 0.015, 1 500) and vlow_init (0.275, 0.05, 2 000). They show 3-d MDS embeddings of the trained
hidden representations coloured by context and by each feature: the small initial scales find the
task's structure, the large one keeps the inputs'. The paper shows no theory for this task.

Here, the same task, network, optimiser, loss and settings; and, beside the network's embedding,
the theory's: every pair's final distance predicted from its own start (THEORY.md §4) with
- the rates **carried over** from the two-point fits of the tanh row (mean of the committed fits in
  docs/results/paper/fits.csv) — the authors' method for XOR, applied here; and
- the rates **fitted in-sample** to 24 pairs of 40 tracked points (median of the pairs' fits).
The table gives the Pearson correlation of the 1 800 × 1 800 distance matrices (off-diagonal
entries): theory vs network, and the network's against the targets', the inputs' and its own at
initialisation. MDS (`sklearn.manifold.MDS`, 3 components, metric, precomputed distances) embeds
every fourth point (450), for time.

    python examples/orthogonal.py --out docs/results/orthogonal      # 3 rows × 3 seeds, resumable
    python examples/orthogonal.py --out docs/results/orthogonal --report-only
    python examples/orthogonal.py --fast                             # 6 × 6 positions, width 16, 40 epochs

Writes `orthogonal.csv` (one line per run), `orthogonal_mds.csv` (the embeddings),
`orthogonal.md` and `orthogonal.png` into `--out`.
"""

import argparse
import pathlib
import time

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)  # the fits in float64; the network trains in float32

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import flowsolve as fs  # noqa: E402
import models  # noqa: E402
from _many_points import Store, carried_rates, chosen, distances, fit_pairs, predicted_distances, relative_error, similarity  # noqa: E402

SAMPLES = 101  # observations per run
TRACKED = 40  # points whose trajectories are observed (for the in-sample fit)
MDS_EVERY = 4  # embed every 4th point


def run(name: str, seed: int, positions: int, width: int | None, epochs: int | None, carried) -> tuple[dict, list]:
    row = fs.experiments.ORTHOGONAL_SETTINGS[name]
    width, epochs = width or row.width, epochs or row.epochs
    x, y, context = fs.experiments.orthogonal_blobs(positions, 5, jnp.float32)
    net = models.MLP(x.shape[1], 1, width, row.depth, activation=row.activation, gain=row.gain,
                     key=jax.random.key(seed))
    net = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, net)
    layer = row.layer
    tracked = jnp.asarray(np.linspace(0, len(x) - 1, TRACKED).round().astype(int))
    observe = {"hidden": lambda m, xs, ys: jax.vmap(m)(xs[tracked])[1][layer],
               "out": lambda m, xs, ys: jax.vmap(m)(xs[tracked])[0], "loss": fs.mse_loss}
    every = max(1, epochs // (SAMPLES - 1))
    start = time.perf_counter()
    sol = fs.gradient_descent(net, x, y, row.lr, epochs, observe=observe, every=every, throw=False,
                              batches=fs.Minibatches(row.batch_size, jax.random.key(1000 + seed)))
    seconds = time.perf_counter() - start
    hidden_all = lambda m: np.asarray(jax.vmap(m)(x)[1][layer], np.float64)  # noqa: E731
    h0, h1 = hidden_all(net), hidden_all(sol.model)
    out0 = np.asarray(jax.vmap(net)(x)[0], np.float64)
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    tr = np.asarray(tracked)
    fitted = fit_pairs(np.asarray(sol.ts), xs[tr], ys[tr], np.asarray(sol.observed["hidden"], np.float64),
                       np.asarray(sol.observed["out"], np.float64), max_pairs=24)
    net_d, init_d = distances(h1), distances(h0)
    theory_c = predicted_distances(xs, ys, h0, out0, *carried)
    theory_f = predicted_distances(xs, ys, h0, out0, fitted["eta_h"], fitted["eta_y"])
    line = {"setting": name, "seed": seed, "positions": positions, "points": len(x), "width": width,
            "gain": row.gain, "lr": row.lr, "epochs": epochs, "updates": int(sol.stats["updates"]),
            "ok": bool(sol.result == fs.RESULTS.successful), "loss0": float(sol.observed["loss"][0]),
            "loss_final": float(sol.observed["loss"][-1]), "eta_h_carried": carried[0], "eta_y_carried": carried[1],
            "eta_h_fit": fitted["eta_h"], "eta_y_fit": fitted["eta_y"], "fits_converged": fitted["converged"],
            "fit_pairs": fitted["pairs"], "fit_worst_median": float(np.median(fitted["worst"])),
            "corr_carried": similarity(theory_c, net_d), "corr_fit": similarity(theory_f, net_d),
            "relerr_carried": relative_error(theory_c, net_d), "relerr_fit": relative_error(theory_f, net_d),
            "corr_targets": similarity(net_d, distances(ys)), "corr_inputs": similarity(net_d, distances(xs)),
            "corr_initial": similarity(net_d, init_d), "seconds": seconds}
    keep = np.arange(0, len(x), MDS_EVERY)
    rows = []
    for kind, d in (("network", net_d), ("theory_carried", theory_c), ("theory_fit", theory_f)):
        if not np.all(np.isfinite(d[np.ix_(keep, keep)])):
            continue
        emb = mds(d[np.ix_(keep, keep)], seed)
        rows += [{"setting": name, "seed": seed, "kind": kind, "point": int(k), "context": int(context[k]),
                  "x_position": float(x_pos), "y_position": float(y_pos), "d1": e[0], "d2": e[1], "d3": e[2]}
                 for k, x_pos, y_pos, e in zip(keep, _features(positions)[0][keep], _features(positions)[1][keep], emb)]
    return line, rows


def mds(d: np.ndarray, seed: int) -> np.ndarray:
    """Metric MDS (SMACOF, 3 components) of a precomputed distance matrix, with scikit-learn's
    spelling of its version (`metric="precomputed"` from 1.8, `dissimilarity=` before)."""
    import inspect

    from sklearn.manifold import MDS

    params = inspect.signature(MDS).parameters
    if "metric_mds" in params:
        how = {"metric": "precomputed", "metric_mds": True, "init": "random"}
    else:
        how = {"dissimilarity": "precomputed", "metric": True}
    return MDS(n_components=3, n_init=1, random_state=seed, **how).fit_transform(d)


def _features(positions: int) -> tuple[np.ndarray, np.ndarray]:
    """Each input's blob x and y position (the two features), in the order of `orthogonal_blobs`."""
    centres = np.linspace(-1.0, 1.0, positions)
    mu_x, mu_y = (a.ravel() for a in np.meshgrid(centres, centres, indexing="ij"))
    return np.concatenate([mu_x, mu_x]), np.concatenate([mu_y, mu_y])


def report(out: pathlib.Path, names: list[str]) -> str:
    runs = Store(out / "orthogonal.csv", ("setting", "seed")).rows
    mds = Store(out / "orthogonal_mds.csv", ("setting", "seed")).rows
    f = lambda rows, k: np.array([float(r[k]) for r in rows])  # noqa: E731
    ms = lambda v: f"{np.nanmean(v):.3g} ± {np.nanstd(v):.2g}" if len(v) > 1 else f"{v[0]:.3g}"  # noqa: E731
    lines = ["Distances ‖h_i − h_j‖ between all inputs at hidden layer 2 after training; *corr*: Pearson correlation "
             "of the off-diagonal entries; *rel. err.*: median over pairs of |theory − network| / network. Carried "
             "rates: the two-point tanh row's mean fits; in-sample: fitted to pairs of 40 tracked points.", "",
             "| setting | gain | runs | loss 0 → final | theory vs network, carried: corr · rel. err. | "
             "in-sample: corr · rel. err. | in-sample fits: worst error (median) | network vs targets | "
             "vs inputs | vs initial |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        rows = [r for r in runs if r["setting"] == name]
        if not rows:
            continue
        lines.append(
            f"| {name} | {rows[0]['gain']} | {len(rows)} | {np.mean(f(rows, 'loss0')):.3g} → "
            f"{np.mean(f(rows, 'loss_final')):.2g} | {ms(f(rows, 'corr_carried'))} · {ms(f(rows, 'relerr_carried'))} | "
            f"{ms(f(rows, 'corr_fit'))} · {ms(f(rows, 'relerr_fit'))} | {ms(f(rows, 'fit_worst_median'))} | "
            f"{ms(f(rows, 'corr_targets'))} | {ms(f(rows, 'corr_inputs'))} | {ms(f(rows, 'corr_initial'))} |")
    if runs:
        lines += ["", f"Carried rates (tanh row): η_h = {float(runs[0]['eta_h_carried']):.4g}, "
                  f"η_y = {float(runs[0]['eta_y_carried']):.4g}."]
    text = "\n".join(lines) + "\n"
    (out / "orthogonal.md").write_text(text)
    shown = [n for n in names if any(r["setting"] == n and r["seed"] == "0" for r in mds)]
    if shown:
        panels = [(kind, colour) for kind in ("network", "theory_carried") for colour in
                  ("context", "x_position", "y_position")]
        fig, axes = plt.subplots(len(shown), len(panels), figsize=(2.3 * len(panels), 2.3 * len(shown)), squeeze=False)
        for r, name in enumerate(shown):
            for c, (kind, colour) in enumerate(panels):
                ax = axes[r, c]
                rows = [m for m in mds if m["setting"] == name and m["seed"] == "0" and m["kind"] == kind]
                ax.set_xticks([])
                ax.set_yticks([])
                if not rows:
                    continue
                ax.scatter(f(rows, "d1"), f(rows, "d2"), c=f(rows, colour), s=3,
                           cmap="coolwarm" if colour == "context" else "viridis")
                if r == 0:
                    ax.set_title(f"{kind.replace('_carried', ' (carried rates)')}\ncoloured by {colour.replace('_', ' ')}",
                                 fontsize=8)
                if c == 0:
                    ax.set_ylabel(f"{name}\nMDS 2")
                ax.set_xlabel("MDS 1", fontsize=7)
        fig.suptitle("Orthogonal blobs: MDS of the hidden layer after training (seed 0; every 4th input)", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "orthogonal.png", dpi=110)
        plt.close(fig)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default=",".join(fs.experiments.ORTHOGONAL_SETTINGS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--positions", type=int, default=30, help="blob positions per axis (authors: 30)")
    parser.add_argument("--width", type=int, default=None, help="override the rows' width (100)")
    parser.add_argument("--epochs", type=int, default=None, help="override the rows' epochs")
    parser.add_argument("--report-only", action="store_true", help="tables and figure from the CSVs")
    parser.add_argument("--fast", action="store_true", help="6 × 6 positions, width 16, 40 epochs, 1 seed")
    parser.add_argument("--out", default="orthogonal")
    args = parser.parse_args()
    names = chosen(parser, args.settings, fs.experiments.ORTHOGONAL_SETTINGS)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        positions, width, epochs, seeds = args.positions, args.width, args.epochs, args.seeds
        if args.fast:
            positions, width, epochs, seeds = 6, 16, 40, 1
        carried = carried_rates("tanh")[:2]
        runs = Store(out / "orthogonal.csv", ("setting", "seed"))
        mds = Store(out / "orthogonal_mds.csv", ("setting", "seed"))
        mds.prune(runs)  # a run killed between its two files is redone whole
        for name in names:
            for seed in range(seeds):
                if runs.has(setting=name, seed=seed):
                    continue
                line, rows = run(name, seed, positions, width, epochs, carried)
                if rows:
                    mds.add(rows)
                runs.add([line])
                print(f"{name} seed {seed}: loss {line['loss0']:.3g} → {line['loss_final']:.2g}; theory vs network "
                      f"corr {line['corr_carried']:.3f} (carried), {line['corr_fit']:.3f} (in-sample); network vs "
                      f"targets {line['corr_targets']:.3f}, inputs {line['corr_inputs']:.3f}; {line['seconds']:.0f} s",
                      flush=True)
    print(report(out, names))
    print(f"wrote {out / 'orthogonal.csv'}, {out / 'orthogonal_mds.csv'}, {out / 'orthogonal.md'}, "
          f"{out / 'orthogonal.png'}")


if __name__ == "__main__":
    main()
