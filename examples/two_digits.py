"""Two handwritten digits alone: the exact gradient flow of a network trained on two images only.

Not the paper's MNIST experiment (that is `mnist.py`: the whole training set, two images tracked
during minibatch SGD). Here the network is trained on the two images and nothing else, so the
two-point theory applies exactly as stated (THEORY.md §1). Two images of different classes from scikit-learn's bundled digits data set (8×8 pixels, no
download; pixel values scaled to [0, 1]) with one-hot targets (dy2 = 2), and an MLP as the paper's
MNIST setting (THEORY.md §5: 4 hidden layers of 200, gain 0.5, leaky ReLU). The exact gradient
flow, (η_h, η_y) fitted to its (h, y, w) trajectory, and the theory drawn over the network.

With the real MNIST files (`--mnist-images train-images-idx3-ubyte[.gz] --mnist-labels
train-labels-idx1-ubyte[.gz]`, read by `flowsolve.experiments.load_idx`) the two images come from
MNIST instead (28×28).

    python examples/two_digits.py            # a minute or two on 2 CPU cores
    python examples/two_digits.py --fast     # width 16

Writes `digits.png` (the two images and the trajectories) and `digits.md` into `--out`.
"""

import argparse
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


def two_images(classes, images=None, labels=None):
    """The first image of each of the two classes, flattened, in [0, 1]; and their side length."""
    if images is None:
        from sklearn.datasets import load_digits

        data = load_digits()
        images, labels, scale = data.images, data.target, 16.0
    else:
        scale = 255.0
    picked = []
    for c in classes:
        idx = np.flatnonzero(np.asarray(labels) == c)
        if idx.size == 0:
            raise ValueError(f"no image of class {c}")
        picked.append(np.asarray(images[idx[0]], float) / scale)
    return np.stack([p.reshape(-1) for p in picked]), picked[0].shape[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", default="3,8", help="two digit classes")
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--gain", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--t1", type=float, default=150.0)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--mnist-images", default=None)
    parser.add_argument("--mnist-labels", default=None)
    parser.add_argument("--fast", action="store_true", help="width 16")
    parser.add_argument("--out", default="digits")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes = [int(c) for c in args.classes.split(",")]
    if (args.mnist_images is None) != (args.mnist_labels is None):
        parser.error("give both --mnist-images and --mnist-labels, or neither")
    if args.mnist_images:
        images = fs.experiments.load_idx(args.mnist_images)
        labels = fs.experiments.load_idx(args.mnist_labels)
        source = "MNIST"
    else:
        images = labels = None
        source = "scikit-learn digits"
    x, side = two_images(classes, images, labels)
    x = jnp.asarray(x)
    y = jnp.eye(10)[jnp.asarray(classes)]
    width = 16 if args.fast else args.width
    net = models.MLP(x.shape[1], 10, width, args.depth, activation="leaky_relu", gain=args.gain,
                     key=jax.random.key(args.seed))
    layer = args.depth // 2
    t1 = args.t1
    ts = np.linspace(0.0, t1, 201)
    result = fs.fit_network(net, x, y, t1, layer=layer, ts=ts,
                            flow_options={"rtol": args.rtol, "atol": 1e-3 * args.rtol, "max_steps": 400_000})
    fit, flow = result.fit, result.flow
    dx2, dy2 = fs.pair_distances(x, y)
    lines = [f"# Digits {classes[0]} and {classes[1]} ({source}, {side}×{side}): MLP {width}×{args.depth}, "
             f"leaky ReLU, gain {args.gain}, layer {layer}, seed {args.seed}", "",
             f"dx2 = {float(dx2):.4g}, dy2 = {float(dy2):.4g}; flow to t1 = {t1:.4g}: "
             f"{int(flow.stats['num_steps'])} steps, loss {float(flow.observed['loss'][0]):.3e} → "
             f"{float(flow.observed['loss'][-1]):.3e}",
             f"fitted η_h = {float(fit.eta_h):.4g} ± {float(fit.eta_h_se):.2g}, "
             f"η_y = {float(fit.eta_y):.4g} ± {float(fit.eta_y_se):.2g} (converged: {bool(fit.converged)})",
             "normalised errors (RMSE / range): " + ", ".join(f"{k} {float(v):.3f}" for k, v in fit.errors.items())]
    text = "\n".join(lines) + "\n"
    (out / "digits.md").write_text(text)
    print(text)
    fig = fs.plot.trajectories(ts, flow.observed, result.theory,
                               title=f"digits {classes[0]} vs {classes[1]}: network (solid), theory (dashed)")
    fig.savefig(out / "digits.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(4, 2))
    for ax, img, c in zip(axes, np.asarray(x), classes):
        ax.imshow(img.reshape(side, side), cmap="gray_r")
        ax.set(title=f"class {c}", xticks=[], yticks=[])
    fig.savefig(out / "digits_images.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out / 'digits.md'}, {out / 'digits.png'}, {out / 'digits_images.png'}")


if __name__ == "__main__":
    main()
