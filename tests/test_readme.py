"""The README's promises that a script can check."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _command(path: Path) -> str:
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return [ln for ln in lines if "pytest" in ln][-1].strip()


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = _command(ROOT / ".ci" / "run")
    assert command in readme
    # and it is among the first commands a newcomer sees
    assert readme.index(command) < readme.index("## What it does")


def test_readme_documents_every_rank_option():
    from test_cli import RANK_OPTIONS

    readme = (ROOT / "README.md").read_text()
    for option in RANK_OPTIONS:
        assert f"`{option}" in readme or f"/{option}`" in readme, option


@pytest.mark.slow
def test_the_readme_python_block_runs(tmp_path):
    """The "From Python" block, exactly as printed, on a small Gaussian example."""
    import subprocess
    import sys

    from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### From Python"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    write_gaussian(make_gaussian(GaussianSpec()), tmp_path)  # the built-in example
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env={**__import__("os").environ,
                                                       "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "cmkd-out" / "distill.json").is_file()
