"""Shared by the many-point examples (xor.py, blobs.py): a flow observed at every point, the theory's
pairwise prediction of the final distance matrix, and similarity scores."""

import jax
import jax.numpy as jnp
import numpy as np

import flowsolve as fs


def similarity(a, b) -> float:
    """Pearson correlation of the off-diagonal entries of two distance matrices."""
    i, j = np.triu_indices(len(a), k=1)
    return float(np.corrcoef(np.asarray(a)[i, j], np.asarray(b)[i, j])[0, 1])


def run(net, x, y, t1: float, layer: int, rtol: float, n_times: int = 101, lr: float | None = None,
        max_fit_pairs: int = 12) -> dict:
    """The exact flow (or, with `lr`, full-batch gradient descent on the flow's clock t = lr·step)
    observing every point's hidden representation and output; the pairwise fit of
    (η_h, η_y) (one fit per pair, at most `max_fit_pairs` pairs spread evenly over all of them, the
    median of the converged fits); the predicted and the actual final matrices of squared hidden
    distances. (Fitting every pair of 20 points is 190 fits, minutes of fitting on lazy pairs whose
    stiff, weakly determined fits run to their step limits.)"""
    observe = {
        "hidden": lambda m, xs, ys: jax.vmap(m)(xs)[1][layer].reshape(xs.shape[0], -1),
        "out": lambda m, xs, ys: jax.vmap(m)(xs)[0].reshape(xs.shape[0], -1),
        "loss": fs.mse_loss,
    }
    if lr is None:
        ts = jnp.linspace(0.0, t1, n_times)
        sol = fs.gradient_flow(net, x, y, t1, ts=ts, observe=observe, rtol=rtol, atol=1e-3 * rtol,
                               max_steps=400_000)
    else:
        every = max(1, round(t1 / lr / (n_times - 1)))
        sol = fs.gradient_descent(net, x, y, lr, every * (n_times - 1), observe=observe, every=every)
        ts = sol.ts
    hidden, out = np.asarray(sol.observed["hidden"]), np.asarray(sol.observed["out"])
    pw = fs.pairwise_observables(x, y, hidden, out)
    moving = np.asarray(pw.dx2) > 0
    if moving.sum() > max_fit_pairs:
        keep = np.flatnonzero(moving)[np.linspace(0, moving.sum() - 1, max_fit_pairs).round().astype(int)]
        moving = np.zeros_like(moving)
        moving[keep] = True
    fit = fs.fit_effective_rates(np.broadcast_to(np.asarray(ts), pw.h.shape)[moving], np.asarray(pw.h)[moving],
                                 np.asarray(pw.y)[moving], np.asarray(pw.w)[moving], np.asarray(pw.dx2)[moving],
                                 np.asarray(pw.dy2)[moving])
    good = np.asarray(fit.converged)
    eta_h = float(np.median(np.asarray(fit.eta_h)[good])) if good.any() else float("nan")
    eta_y = float(np.median(np.asarray(fit.eta_y)[good])) if good.any() else float("nan")
    predicted = np.asarray(fs.predict_distances(x, y, hidden[0], out[0], eta_h, eta_y))
    sq = lambda p: np.sum((p[:, None, :] - p[None, :, :]) ** 2, axis=-1)  # noqa: E731
    flat = lambda a: np.asarray(a).reshape(len(a), -1)  # noqa: E731
    return {
        "network": sq(hidden[-1]), "theory": predicted, "initial": sq(hidden[0]), "inputs": sq(flat(x)),
        "targets": sq(flat(y)), "eta_h": eta_h, "eta_y": eta_y, "fits_converged": int(good.sum()),
        "pairs": int(moving.sum()), "loss0": float(sol.observed["loss"][0]), "loss1": float(sol.observed["loss"][-1]),
        "steps": int(sol.stats.get("num_steps", sol.stats.get("steps"))),
    }
