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


def test_the_docs_document_every_rank_option():
    from test_cli import RANK_OPTIONS

    page = (ROOT / "docs" / "commands.md").read_text()
    for option in RANK_OPTIONS:
        assert f"`{option}" in page or f"/{option}`" in page, option


@pytest.mark.slow
def test_the_docs_python_block_runs(tmp_path):
    """The Python API page's "From Python" block, exactly as printed, on the built-in
    Gaussian example."""
    import subprocess
    import sys

    from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian

    page = (ROOT / "docs" / "python-api.md").read_text()
    section = page[page.index("## From Python"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    write_gaussian(make_gaussian(GaussianSpec()), tmp_path)  # the built-in example
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env={**__import__("os").environ,
                                                       "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "cmkd-out" / "distill.json").is_file()


def test_the_readme_is_short_and_links_every_docs_page():
    """The README says what the doctor is, how to install and run it and how to read its
    verdict; the reference lives in docs/, every page of which it links."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 300
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, page.name


def test_the_docs_site_builds_with_warnings_as_errors(tmp_path):
    """mkdocs (with mkdocstrings for the Python API) builds every page in strict mode: a
    broken link, an unknown anchor or a docstring it cannot read fails the build."""
    import subprocess
    import sys

    pytest.importorskip("mkdocs", reason="mkdocs comes with the test extra")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                            str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert (tmp_path / "site" / "python-api" / "index.html").is_file()
    assert "RankOptions" in (tmp_path / "site" / "python-api" / "index.html").read_text()


@pytest.mark.slow
def test_the_readme_three_commands_run_on_your_data(tmp_path):
    """"Your data in three commands", as printed, on arrays laid out as it says: the run,
    the HTML report and the exported teacher land where the commands say."""
    import os
    import subprocess
    import sys

    from cmkd_doctor.examples.gaussian import GaussianSpec, make_gaussian, write_gaussian

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Your data in three commands", 1)[1].split("\n## ", 1)[0]
    commands = [c.strip() for c in section.split("```bash\n", 1)[1].split("```", 1)[0]
                .splitlines() if c.strip()]
    assert [c.split()[:2] for c in commands] == [["cmkd-doctor", "diagnose"],
                                                 ["cmkd-doctor", "report"],
                                                 ["cmkd-doctor", "derive-teacher"]]
    write_gaussian(make_gaussian(GaussianSpec(n_train=600, n_test=200)), tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "2"}
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (command, done.stderr[-3000:])
    assert (tmp_path / "run" / "distill.json").is_file()
    assert (tmp_path / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert (tmp_path / "teacher.onnx").stat().st_size > 0
