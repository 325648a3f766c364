"""Figures of flowsolve results (matplotlib): trajectories, theory against network, distance
matrices, the rich-to-lazy curve. Each function draws on a given `ax` (or a new figure) and returns
the figure.

!!! example

    ```python
    sol = flowsolve.gradient_flow(exp.model, exp.inputs, exp.targets, exp.t1, layer=exp.layer)
    fit = flowsolve.fit_effective_rates(sol.ts, sol.observed["h"], sol.observed["y"],
                                        sol.observed["w"], 1.0, 0.5)
    fig = flowsolve.plot.trajectories(sol.ts, sol.observed, fit.predict(sol.ts))
    fig.savefig("trajectories.png")
    ```
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["distance_matrices", "rich_lazy", "sweep_final", "theory_vs_network", "trajectories"]

LABELS = {"h": "h = ‖dh‖²", "y": "y = ‖dŷ‖²", "w": "w", "loss": "loss", "m": "m"}


def _figure(ax, ncols=1, size=(4.5, 3.5)):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, axes = plt.subplots(1, ncols, figsize=(size[0] * ncols, size[1]), squeeze=False)
    return fig, axes[0] if ncols > 1 else axes[0, 0]


def _get(source: Any, key: str):
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)


def trajectories(
    ts: Any,
    network: Mapping[str, Any] | Any,
    theory: Mapping[str, Any] | Any | None = None,
    *,
    theory_ts: Any | None = None,
    keys: Sequence[str] = ("h", "y", "w", "loss"),
    title: str | None = None,
):
    """h, y, w and the loss over time: the network solid, the theory dashed.

    **Arguments:**

    - `ts`: the network's observation times.
    - `network`: a dict name → values (e.g. `FlowSolution.observed`) or an object with those
      attributes.
    - `theory`: the same for the theory (e.g. a `TheorySolution`, or `FitResult.predict(ts)`), or None.
    - `theory_ts`: the theory's times, if not `ts` (a `TheorySolution`'s own `ts` is used when present).
    - `keys`: which variables, one panel each (loss on a log scale).

    **Returns:** the matplotlib figure.
    """
    keys = [k for k in keys if _get(network, k) is not None or _get(theory, k) is not None]
    if not keys:
        raise ValueError("None of the requested keys is in `network` or `theory`.")
    fig, axes = _figure(None, ncols=len(keys))
    axes = np.atleast_1d(axes)
    if theory_ts is None:
        theory_ts = _get(theory, "ts") if _get(theory, "ts") is not None else ts
    for ax, key in zip(axes, keys):
        net = _get(network, key)
        if net is not None:
            ax.plot(np.asarray(ts), np.asarray(net), "C0-", label="network")
        th = _get(theory, key)
        if th is not None:
            ax.plot(np.asarray(theory_ts), np.asarray(th), "C1--", label="theory")
        if key == "loss":
            ax.set_yscale("log")
        ax.set(xlabel="t (gradient-flow time)", title=LABELS.get(key, key))
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def theory_vs_network(network: Any, theory: Any, *, ax=None, label: str = "", color: Any = None):
    """A scatter of theory values against network values with the line y = x and the correlation.

    **Returns:** the matplotlib figure.
    """
    net, th = np.ravel(np.asarray(network, float)), np.ravel(np.asarray(theory, float))
    if net.shape != th.shape:
        raise ValueError(f"`network` and `theory` must have the same number of values, got {net.size} and {th.size}.")
    good = np.isfinite(net) & np.isfinite(th)
    fig, ax = _figure(ax)
    ax.scatter(net[good], th[good], c=color, label=label or None)
    lo = min(net[good].min(), th[good].min(), 0.0)
    hi = max(net[good].max(), th[good].max())
    ax.plot([lo, hi], [lo, hi], "k:", lw=1)
    r = np.corrcoef(net[good], th[good])[0, 1] if good.sum() > 1 else np.nan
    ax.set(xlabel="network", ylabel="theory", title=f"r = {r:.3f}")
    if label:
        ax.legend(fontsize=8)
    return fig


def distance_matrices(
    matrices: Mapping[str, Any],
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    normalise: bool = True,
):
    """Matrices of squared representational distances side by side.

    **Arguments:**

    - `matrices`: panel title → `(N, N)` matrix (e.g. `{"network": ..., "theory": ...}`).
    - `labels`: names of the N points, for the ticks.
    - `normalise`: divide each matrix by its largest entry (compare structure; the maxima go in the
      titles), else one colour scale for all.

    **Returns:** the matplotlib figure.
    """
    if not matrices:
        raise ValueError("`matrices` must hold at least one matrix.")
    mats = {k: np.asarray(v, float) for k, v in matrices.items()}
    for k, m in mats.items():
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"matrix {k!r} must be square, got shape {m.shape}.")
    vmax = max(float(np.nanmax(m)) for m in mats.values())
    fig, axes = _figure(None, ncols=len(mats), size=(3.6, 3.2))
    axes = np.atleast_1d(axes)
    for ax, (name, m) in zip(axes, mats.items()):
        top = float(np.nanmax(m))
        if normalise:
            im = ax.imshow(m / (top if top > 0 else 1.0), vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"{name}\n(max {top:.3g})", fontsize=9)
        else:
            im = ax.imshow(m, vmin=0, vmax=vmax, cmap="viridis")
            ax.set_title(name)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=90)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
    fig.colorbar(im, ax=list(axes), shrink=0.8,
                 label="squared distance / panel's max" if normalise else "squared distance")
    if title:
        fig.suptitle(title)
    return fig


def rich_lazy(a_ratio: Any = None, h_ratio: Any = None, *, ax=None, label: str = "networks", color: Any = None):
    """The theory's rich-to-lazy curve `h(∞)/A_low = ½r + sqrt(¼r² + 1)` of `r = A_high/A_low`
    (THEORY.md §3), with measured points `(a_ratio, h_ratio)` on it if given.

    **Returns:** the matplotlib figure.
    """
    fig, ax = _figure(ax)
    xs = np.asarray([] if a_ratio is None else a_ratio, float).ravel()
    lo = min(-3.0, 1.1 * np.nanmin(xs)) if xs.size else -3.0
    hi = max(5.0, 1.1 * np.nanmax(xs)) if xs.size else 5.0
    r = np.linspace(lo, hi, 400)
    ax.plot(r, 0.5 * r + np.sqrt(0.25 * r**2 + 1.0), "k-", label="theory")
    if a_ratio is not None:
        ax.scatter(xs, np.asarray(h_ratio, float).ravel(), c=color, label=label, zorder=3)
    ax.set(xlabel="A_high / A_low", ylabel="h(∞) / A_low", xscale="symlog", yscale="log",
           title="rich (left) to lazy (right)")
    ax.legend(fontsize=8)
    return fig


def sweep_final(ds: Any, axes: Sequence[str] | None = None):
    """A sweep's final `h` (the dataset of `flowsolve.sweep` with an `h` over `time`, an `ok` and
    `finite`, as `flowsolve sweep` writes it) against the first of `axes` (default: the dataset's
    axes in order), one labelled line per combination of the others (at most 12); failed points (not
    ok, or not finite) marked with a red cross at their last finite value."""
    import itertools

    import matplotlib.pyplot as plt

    axes = list(axes) if axes is not None else [d for d in ds.h.dims if d != "time"]
    first, rest = axes[0], axes[1:]
    order = (first, *rest)
    final = ds.h.isel(time=-1).transpose(*order).values.reshape(len(ds[first]), -1)
    failed = ~(ds.ok.values & ds.finite.values)
    failed = np.transpose(failed, [axes.index(k) for k in order]).reshape(final.shape)
    labels = [", ".join(f"{k}={v}" for k, v in zip(rest, combo))
              for combo in itertools.product(*[ds[k].values.tolist() for k in rest])] or [None]
    shown = min(final.shape[1], 12)
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    x = ds[first].values
    for j in range(shown):
        ax.plot(x, final[:, j], "o-", ms=3, label=labels[j])
    bad_x, bad_h = np.nonzero(failed[:, :shown])
    if bad_x.size:
        last = np.array([_last_finite(ds.h, order, i, j) for i, j in zip(bad_x, bad_h)])
        ax.plot(x[bad_x], last, "x", color="red", ms=7, mew=2, label=f"failed ({int(failed.sum())} points)")
    title = f"{ds.attrs.get('name', 'sweep')}"
    if rest and shown < final.shape[1]:
        title += f" (first {shown} of {final.shape[1]} lines)"
    ax.set(xlabel=first, ylabel="final h = ‖dh‖²", title=title)
    if rest or bad_x.size:
        ax.legend(fontsize=7, ncol=2 if shown > 6 else 1)
    if np.issubdtype(np.asarray(x).dtype, np.number) and np.all(np.asarray(x) > 0) and x.max() / x.min() > 50:
        ax.set_xscale("log")
    return fig


def _last_finite(h, order, i: int, j: int) -> float:
    """The last finite value of the trajectory h at (first axis i, flattened other axes j); nan if none."""
    traj = h.transpose(*order, "time").values.reshape(h.sizes[order[0]], -1, h.sizes["time"])[i, j]
    ok = np.isfinite(traj)
    return float(traj[ok][-1]) if ok.any() else float("nan")
