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


def test_docs_benchmarks_page_includes_the_benchmarks_readme():
    """One text, two places: the docs page includes `benchmarks/README.md` (pymdownx.snippets), no copy."""
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    assert '--8<-- "benchmarks/README.md:2:"' in page and len(page.splitlines()) < 10


def test_no_history_in_code_or_docs():
    """Code and docs say what the project does, not how it came about."""
    import re

    pattern = re.compile(r"\bsessions?\b|\bissue #?\d+|\(issue\)", re.IGNORECASE)
    found = []
    for folder in ("flowsolve", "models", "examples", "benchmarks", "docs", "tests"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".sh", ".toml") and "results" not in path.parts and path != pathlib.Path(__file__):
                found += [f"{path.relative_to(ROOT)}:{i + 1}" for i, line in enumerate(path.read_text().splitlines())
                          if pattern.search(line)]
    assert not found, found
