"""Shared by the paper's many-point reproductions (xor.py, mnist.py, orthogonal.py): a resumable CSV
store, the rates carried over from the two-point fits, the in-sample pairwise fit, the theory's
pairwise prediction and the similarity scores."""

import csv
import os
import pathlib

import jax
import numpy as np

import flowsolve as fs

RESTART_ABOVE = 0.3  # worst error of h, y, w above which a pair's fit is restarted
FITS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "results" / "paper" / "fits.csv"
"""The committed two-point fits (examples/paper.py): the source of the carried-over rates."""


class Store:
    """Rows of a CSV file, appended one run at a time and read back on the next start (resume).

    `key` names the columns that identify a run. A line cut short by a kill is dropped on reading;
    `prune(marker)` drops the rows of runs that a run's last-written file (`marker`) does not hold, so
    that a run killed between its files is redone whole, never stored twice.
    """

    def __init__(self, path: pathlib.Path, key: tuple[str, ...]):
        self.path, self.key = pathlib.Path(path), key
        self.rows, self.fields = [], None
        if self.path.is_file():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                self.fields = reader.fieldnames
            self.rows = [r for r in rows if None not in r and None not in r.values()]
            if len(self.rows) != len(rows):
                self._rewrite()

    def prune(self, marker: "Store") -> None:
        done = {tuple(r[k] for k in marker.key) for r in marker.rows}
        kept = [r for r in self.rows if tuple(r[k] for k in marker.key) in done]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._rewrite()

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(self.rows)

    def has(self, **key) -> bool:
        return any(all(str(r[k]) == str(v) for k, v in key.items()) for r in self.rows)

    def add(self, rows: list[dict]) -> None:
        rows = [{k: _cell(v) for k, v in r.items()} for r in rows]
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self.fields = self.fields or list(rows[0])
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            if new:
                writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        self.rows += [{k: str(v) for k, v in r.items()} for r in rows]


def chosen(parser, text: str, known) -> list[str]:
    """The comma-separated names of `text`, each one of `known` (else the parser's error)."""
    names = [n for n in text.split(",") if n]
    for n in names:
        if n not in known:
            parser.error(f"unknown setting {n!r}; choose from {', '.join(known)}")
    return names


def _cell(v):
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return v


def carried_rates(row: str = "default", protocol: str = "lr/2", fits: pathlib.Path = FITS) -> tuple[float, float, int]:
    """The mean η_h and mean η_y of the committed two-point fits of `row` (as the authors carry the
    default row's mean rates over to XOR); and how many fits went into them."""
    if not pathlib.Path(fits).is_file():
        raise SystemExit(f"error: {fits} not found: run examples/paper.py first (or pass --fits).")
    rows = [r for r in csv.DictReader(pathlib.Path(fits).open())
            if r["row"] == row and r["protocol"] == protocol and r["converged"] == "True" and r["verdict"] != "plateau"]
    if not rows:
        raise SystemExit(f"error: no converged {row!r} fits of protocol {protocol!r} in {fits}.")
    return (float(np.mean([float(r["eta_h"]) for r in rows])), float(np.mean([float(r["eta_y"]) for r in rows])),
            len(rows))


def distances(p) -> np.ndarray:
    """Euclidean distance matrix of the rows of `p` (points × features)."""
    p = np.asarray(p, np.float64).reshape(len(p), -1)
    sq = np.sum(p**2, axis=1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * p @ p.T, 0.0)) * (1 - np.eye(len(p)))


def similarity(a, b) -> float:
    """Pearson correlation of the off-diagonal entries of two distance matrices."""
    i, j = np.triu_indices(len(a), k=1)
    a, b = np.asarray(a)[i, j], np.asarray(b)[i, j]
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def relative_error(theory, network) -> float:
    """Median over pairs of |theory − network| / network (off-diagonal distances)."""
    i, j = np.triu_indices(len(network), k=1)
    t, n = np.asarray(theory)[i, j], np.asarray(network)[i, j]
    ok = n > 0
    return float(np.median(np.abs(t[ok] - n[ok]) / n[ok])) if ok.any() else float("nan")


def predicted_distances(x, y, hidden0, out0, eta_h: float, eta_y: float) -> np.ndarray:
    """The theory's final distance matrix ‖h_i(∞) − h_j(∞)‖ (THEORY.md §4), every pair on its own."""
    if not (np.isfinite(eta_h) and np.isfinite(eta_y)):
        return np.full((len(x), len(x)), np.nan)
    h = np.asarray(fs.predict_distances(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                        np.asarray(hidden0, np.float64), np.asarray(out0, np.float64), eta_h, eta_y))
    return np.sqrt(np.maximum(h, 0.0))


def fit_pairs(ts, x, y, hidden, out, pairs: list[tuple[int, int]] | None = None, max_pairs: int = 12) -> dict:
    """Fit (η_h, η_y) to the trajectories of pairs of points (each pair its own two-point problem),
    at most `max_pairs` of them spread evenly over all pairs of distinct inputs (or the given
    `pairs`); the median rates of the fits that converged, and each fit's worst normalised error."""
    pw = fs.pairwise_observables(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                 np.asarray(hidden, np.float64), np.asarray(out, np.float64))
    index = {tuple(map(int, p)): k for k, p in enumerate(np.asarray(pw.pairs))}
    moving = np.flatnonzero(np.asarray(pw.dx2) > 0)
    if pairs is not None:
        chosen = np.array([index[tuple(sorted(p))] for p in pairs])
    else:
        chosen = moving[np.linspace(0, len(moving) - 1, min(max_pairs, len(moving))).round().astype(int)]
    ts = np.broadcast_to(np.asarray(ts, np.float64), np.asarray(pw.h).shape)
    data = [ts[chosen], *(np.asarray(getattr(pw, k))[chosen] for k in ("h", "y", "w", "dx2", "dy2"))]
    fit = fs.fit_effective_rates(*data)
    worst = np.max(np.stack([np.asarray(fit.errors[k]) for k in ("h", "y", "w")]), axis=0)
    good = np.asarray(fit.converged)
    if good.any() and not (good & (worst <= RESTART_ABOVE)).all():
        # A failed or poor fit: restart it from rates around the good fits' median, as the two-point
        # reproduction restarts from a grid (examples/paper.py); keep the converged fit of least residual.
        scale_h = float(np.median(np.asarray(fit.eta_h)[good]))
        scale_y = float(np.median(np.asarray(fit.eta_y)[good]))
        members = [fit[k] for k in range(len(chosen))]
        for k in np.flatnonzero(~good | (worst > RESTART_ABOVE)):
            for fh, fy in ((1.0, 1.0), (0.1, 1.0), (1.0, 0.1), (10.0, 1.0), (1.0, 10.0)):
                g = fs.fit_effective_rates(*(d[k] for d in data), init=(scale_h * fh, scale_y * fy))
                usable = bool(g.converged) and float(g.eta_h) > 0 and float(g.eta_y) > 0
                if usable and (not bool(members[k].converged) or float(g.residual) < float(members[k].residual)):
                    members[k] = g
        fit = jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *members)
        worst = np.max(np.stack([np.asarray(fit.errors[k]) for k in ("h", "y", "w")]), axis=0)
        good = np.asarray(fit.converged)
    eta_h = float(np.median(np.asarray(fit.eta_h)[good])) if good.any() else float("nan")
    eta_y = float(np.median(np.asarray(fit.eta_y)[good])) if good.any() else float("nan")
    return {"eta_h": eta_h, "eta_y": eta_y, "converged": int(good.sum()), "pairs": len(chosen),
            "worst": worst, "fit": fit, "chosen": np.asarray(pw.pairs)[chosen], "pw": pw, "index": chosen}


def theory_distances_at(t: float, x, y, hidden0, out0, eta_h: float, eta_y: float) -> np.ndarray:
    """The theory's distance matrix ‖h_i(t) − h_j(t)‖ at time `t`: every pair of distinct inputs
    integrated from its own start (h, y, w at t = 0) with the given rates (one batched solve)."""
    n = len(x)
    pw = fs.pairwise_observables(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                 np.asarray(hidden0, np.float64), np.asarray(out0, np.float64))
    out = np.zeros((n, n))
    moving = np.asarray(pw.dx2) > 0
    if not (np.isfinite(eta_h) and np.isfinite(eta_y)):
        return np.full((n, n), np.nan)
    theory = fs.EffectiveTheory(eta_h, eta_y, np.asarray(pw.dx2)[moving], np.asarray(pw.dy2)[moving])
    states0 = np.stack([np.asarray(pw.h), np.asarray(pw.y), np.asarray(pw.w)], axis=-1)[moving]
    sol = fs.solve_theory_batch(theory, states0, float(t), buckets=1, ts=np.array([0.0, float(t)]))
    h = np.where(np.asarray(sol.result == fs.RESULTS.successful), np.asarray(sol.h)[:, -1], np.nan)
    for (i, j), v in zip(np.asarray(pw.pairs)[moving], h):
        out[i, j] = out[j, i] = np.sqrt(max(v, 0.0)) if np.isfinite(v) else np.nan
    return out
