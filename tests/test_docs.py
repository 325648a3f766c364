"""The documentation site builds strictly (mkdocs-material + mkdocstrings)."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")  # installed with the test extras; CI always has it
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").stat().st_size > 50_000
    shutil.rmtree(tmp_path / "site")


def test_docs_benchmarks_page_is_the_benchmarks_readme():
    page = (ROOT / "docs" / "benchmarks.md").read_text().split("\n", 4)[4]
    readme = (ROOT / "benchmarks" / "README.md").read_text().split("\n", 1)[1]
    assert page == readme, "docs/benchmarks.md is stale: copy benchmarks/README.md over it (see its header)"
