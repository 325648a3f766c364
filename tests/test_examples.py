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
    proc = subprocess.run([sys.executable, "-m", "flowsolve", "theory"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("|dh(inf)|^2 integrated") == 3
    assert "collision of the two representations" in proc.stdout


def test_main_demo_network_small(tmp_path):
    out = tmp_path / "demo.png"
    proc = subprocess.run(
        [sys.executable, "-m", "flowsolve", "--width", "8", "--rtol", "1e-4", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "flow:" in proc.stdout and "GD:" in proc.stdout
    assert out.stat().st_size > 10_000


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
    row = [line for line in (tmp_path / "f.md").read_text().splitlines() if line.startswith("| two_layer")][0]
    ratios = [float(v) for v in row.strip("|").split("|")[1:]]
    assert len(ratios) == 6 and all(r > 1 for r in ratios)  # measured 6.8–43 at width 8
