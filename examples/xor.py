"""XOR: the final representational distance matrix, theory against network, rich and lazy.

Four points (±1, ±1) with XOR targets (0, 1, 1, 0), a ReLU MLP (THEORY.md §5: "rich" gain 0.85,
"lazy" gain 2.0), trained by full-batch gradient descent at a small learning rate, observed on the
gradient-flow clock t = lr·step. (Not the exact flow: from ±1 inputs ReLU units reach their kink
and the flow slides along it — a Filippov sliding mode where an adaptive solver crawls: rtol 1e-6
ran out of 400 000 steps by t = 12 at width 16. `--flow` tries it anyway.) The theory's prediction treats every pair of
points as its own two-point problem (THEORY.md §4, a heuristic for N > 2) with (η_h, η_y) fitted to
the pairs' trajectories (`pairwise_observables` → `fit_effective_rates`, the median over pairs),
and gives the final matrix of squared hidden distances from the initial one. Reported: the
similarity (correlation of the off-diagonal entries) of the predicted and actual final matrices,
and of the network's final matrix with the inputs' and the targets' (rich: like the targets).

    python examples/xor.py            # width 100, depth 4: ~2 min on 2 CPU cores
    python examples/xor.py --fast     # width 16: seconds

Writes `xor.png` (distance matrices: inputs, targets, network at t = 0, network final, theory)
and `xor.md` into `--out`.
"""

import argparse
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import flowsolve as fs  # noqa: E402
import models  # noqa: E402
from _many_points import run, similarity  # noqa: E402

X = jnp.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
Y = jnp.array([[0.0], [1.0], [1.0], [0.0]])
LABELS = ["(−1,−1)", "(−1,+1)", "(+1,−1)", "(+1,+1)"]
REGIMES = {"rich": 0.85, "lazy": 2.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--t1", type=float, default=None, help="default 40 / gain^(2·depth)")
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--lr", type=float, default=0.002, help="gradient descent's learning rate")
    parser.add_argument("--flow", action="store_true", help="the exact flow instead of gradient descent")
    parser.add_argument("--fast", action="store_true", help="width 16")
    parser.add_argument("--out", default="xor")
    args = parser.parse_args()
    width = 16 if args.fast else args.width
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    layer = args.depth // 2
    how = "exact flow" if args.flow else f"GD at lr {args.lr}"
    lines = [f"# XOR: final squared hidden distances (ReLU MLP {width}×{args.depth}, layer {layer}, "
             f"seed {args.seed}, {how})", "",
             "| regime | gain | loss 0 → t1 | η_h, η_y (pairs' median) | theory vs network | "
             "network vs targets | network vs inputs |", "|---|---:|---:|---:|---:|---:|---:|"]
    figures = {}
    for name, gain in REGIMES.items():
        net = models.MLP(2, 1, width, args.depth, activation="relu", gain=gain, key=jax.random.key(args.seed))
        t1 = args.t1 or 40.0 / gain ** (2 * args.depth)
        r = run(net, X, Y, t1, layer, args.rtol, lr=None if args.flow else args.lr)
        lines.append(
            f"| {name} | {gain} | {r['loss0']:.2e} → {r['loss1']:.1e} | {r['eta_h']:.3g}, {r['eta_y']:.3g} "
            f"({r['fits_converged']}/{r['pairs']} fits) | {similarity(r['theory'], r['network']):.3f} | "
            f"{similarity(r['network'], r['targets']):.3f} | {similarity(r['network'], r['inputs']):.3f} |")
        figures[name] = r
    text = "\n".join(lines) + "\n"
    (out / "xor.md").write_text(text)
    print(text)
    for name, r in figures.items():
        fig = fs.plot.distance_matrices({"inputs": r["inputs"], "targets": r["targets"], "network t=0": r["initial"],
                                         "network final": r["network"], "theory final": r["theory"]},
                                        labels=LABELS, title=f"XOR, {name} (gain {REGIMES[name]})")
        fig.savefig(out / f"xor_{name}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    print(f"wrote {out / 'xor.md'}, " + ", ".join(str(out / f"xor_{n}.png") for n in figures))


if __name__ == "__main__":
    main()
