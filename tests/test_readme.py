"""The README's promises that a script can check."""

from __future__ import annotations

from pathlib import Path

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
