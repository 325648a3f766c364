"""Examples run end to end in a fast mode and produce their figures."""

import pathlib
import subprocess
import sys

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
