"""Every path a run records is where the file lands, after each command of the README's
sequence rank -> derive-teacher -> distill -> report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _recorded_paths(value, found: list[str]) -> list[str]:
    """Every string under a ``path`` or ``*_file`` key of a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and (key in ("path", "run", "file") or key.endswith("_file")):
                found.append(item)
            else:
                _recorded_paths(item, found)
    elif isinstance(value, list):
        for item in value:
            _recorded_paths(item, found)
    return found


def _check_run(run: Path, documents: list) -> int:
    """Each recorded path exists (relative ones from the run directory) and is no staging
    folder's; returns how many were checked."""
    paths = [p for doc in documents for p in _recorded_paths(doc, [])]
    for path in paths:
        assert ".stage" not in path, path
        assert (Path(path) if Path(path).is_absolute() else run / path).exists(), path
    return len(paths)


@pytest.mark.slow
def test_recorded_paths_are_where_the_files_land(cli, gaussian_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("cmkd-out")
    fast = ["--hidden", "0"]
    inputs = [gaussian_dir / f for f in ("feats_a.npy", "feats_b.npy", "labels.npy")]
    assert cli("rank", *inputs, *fast, "-M", "3", "--restarts", "1", "-q").code == 0
    _check_run(run, [json.loads((run / "rank.json").read_text())])
    made = cli("derive-teacher", "--mode", "general", "--ratio", "0.5", *fast, "--json")
    assert made.code == 0, made.err
    sidecars = [json.loads(p.read_text()) for p in (run / "teachers").glob("*.json")]
    _check_run(run, [json.loads(made.out), *sidecars])
    # distill reuses the general teacher derive-teacher saved, and derives the others
    found = cli("distill", "--teacher", "all", *fast, "--seeds", "2", "--json")
    assert found.code == 0, found.err
    stored = json.loads((run / "distill.json").read_text())
    teacher_files = [r["teacher_file"] for r in stored["results"].values() if r["teacher_file"]]
    assert len(teacher_files) == 4  # regular and the three derived
    assert str((run / "teachers" / "general-r0.5.safetensors").resolve()) in [
        str(Path(p).resolve()) for p in teacher_files]
    assert _check_run(run, [stored, json.loads(found.out)]) >= 4
    report = cli("report", "--format", "json")
    assert report.code == 0, report.err
    assert _check_run(run, [json.loads(report.out)]) >= 4
    assert ".stage" not in cli("report").out
