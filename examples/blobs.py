"""The orthogonal blob task: learned structure at high, low and very low initial scale.

Four classes of five points each in 20-d input space, drawn around random class centres; targets
the classes' one-hot (mutually orthogonal) vectors. A tanh MLP (THEORY.md §5: 4 layers of 100,
gains 2.0 / 0.5 / 0.275) is trained by its exact gradient flow (smooth activation: the flow
converges under tolerance refinement). For each gain: the final matrix of squared hidden distances,
its similarity (correlation of off-diagonal entries) with the inputs' and the targets' matrices, and
the theory's pairwise prediction (THEORY.md §4, rates fitted to the pairs' trajectories).

High gain keeps the inputs' geometry (lazy); low gain takes the targets' block structure (rich).

    python examples/blobs.py          # width 100: a few minutes on 2 CPU cores
    python examples/blobs.py --fast   # width 16, 2 points per class: seconds

Writes `blobs.md` and `blobs_<gain>.png` into `--out`.
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

GAINS = [2.0, 0.5, 0.275]


def blob_data(classes: int, per_class: int, dim: int, spread: float, key):
    k1, k2 = jax.random.split(key)
    centres = jax.random.normal(k1, (classes, dim)) / jnp.sqrt(dim)
    x = jnp.repeat(centres, per_class, axis=0) + spread * jax.random.normal(k2, (classes * per_class, dim)) / jnp.sqrt(dim)
    y = jnp.repeat(jnp.eye(classes), per_class, axis=0)
    return x, y


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--gains", default=",".join(map(str, GAINS)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--t1", type=float, default=None, help="default 20·max(1, gain^(−2·depth)), at most 2e4")
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--fast", action="store_true", help="width 16, 2 points per class, gains 2.0 and 0.5")
    parser.add_argument("--out", default="blobs")
    args = parser.parse_args()
    width, per_class = (16, 2) if args.fast else (args.width, args.per_class)
    gains = [float(g) for g in args.gains.split(",")]
    gains = gains[:2] if args.fast else gains
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = blob_data(4, per_class, 20, 0.5, jax.random.key(100 + args.seed))
    layer = args.depth // 2
    lines = [f"# Orthogonal blobs: final squared hidden distances (tanh MLP {width}×{args.depth}, layer {layer}, "
             f"4 classes × {per_class} points, seed {args.seed})", "",
             "| gain | loss 0 → t1 | steps | η_h, η_y (pairs' median) | theory vs network | network vs targets | "
             "network vs inputs |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for gain in gains:
        net = models.MLP(20, 4, width, args.depth, activation="tanh", gain=gain, key=jax.random.key(args.seed))
        t1 = args.t1 or min(2e4, 20.0 * max(1.0, gain ** (-2 * args.depth)))
        r = run(net, x, y, t1, layer, args.rtol)
        lines.append(
            f"| {gain} | {r['loss0']:.2e} → {r['loss1']:.1e} | {r['steps']} | {r['eta_h']:.3g}, {r['eta_y']:.3g} "
            f"({r['fits_converged']}/{r['pairs']} fits) | {similarity(r['theory'], r['network']):.3f} | "
            f"{similarity(r['network'], r['targets']):.3f} | {similarity(r['network'], r['inputs']):.3f} |")
        print(lines[-1], flush=True)
        fig = fs.plot.distance_matrices({"inputs": r["inputs"], "targets": r["targets"], "network final": r["network"],
                                         "theory final": r["theory"]}, title=f"blobs, gain {gain}")
        fig.savefig(out / f"blobs_{gain}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    text = "\n".join(lines) + "\n"
    (out / "blobs.md").write_text(text)
    print(text)
    print(f"wrote {out / 'blobs.md'} and {len(gains)} figures")


if __name__ == "__main__":
    main()
